"""Pipeline (PP=2) and data (DP=2) parallelism over two gloo processes equal the single-process trainer.

Each case: log-probs, the loss, the grad norm and the weights after one SGD step, against the same step at
TP=1/PP=1/DP=1 in the test process. PP covers untied (qwen2, padded micro-batches), tied embeddings (qwen3,
packed micro-batches: the tied embedding's gradient comes from both stages) and a MoE model; DP runs the
distributed optimizer against the plain one.
"""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from train_helpers import SEQS, STARTS, make_spec, make_tiny, spawn_world, sum_log_prob_loss

from rlpipe.train.trainer import MegatronTrainer

CASES = {  # name -> (model_type, model overrides, spec overrides)
    "untied": ("qwen2", {}, {}),
    "tied_packed": ("qwen3", {"tie_word_embeddings": True}, {"use_dynamic_batch_size": True, "max_tokens_per_gpu": 12}),
    # MoE stages exchange variable-length activations: only the all-to-all token dispatcher allows that.
    "moe": ("qwen3_moe", {}, {}),
}
SGD = {"optimizer": "sgd", "lr": 0.5, "micro_batch_size": 2}
DP_SHARES = [[0, 1, 2], [3, 4]]  # sample indices each data-parallel rank trains on
# The distributed optimizer takes Adam only. A large eps keeps Adam's first step, lr * g / (|g| + eps),
# a smooth function of the gradient, so fp32 summation-order noise cannot flip the sign of a tiny component.
DP_ADAM = {"optimizer": "adam", "lr": 1e-2, "adam_eps": 1e-3, "use_distributed_optimizer": True}


def _one_step(trainer: MegatronTrainer, indices: list[int]) -> dict:
    seqs, starts = [SEQS[i] for i in indices], [STARTS[i] for i in indices]
    log_probs = trainer.compute_log_probs(seqs, starts)
    metrics = trainer.train_step(seqs, starts, sum_log_prob_loss(denominator=10.0))
    return {"log_probs": log_probs, "metrics": metrics, "weights": dict(trainer.hf_named_tensors())}


def _worker(rank: int, init_file: str, layout: str, folders: dict[str, str], out_dir: str) -> None:
    from rlpipe.train.distributed import init_distributed, teardown

    torch.set_num_threads(1)
    init_distributed(rank, 2, f"file://{init_file}", pipeline_parallel=2 if layout == "pp" else 1)
    try:
        results = {}
        for name, (_, _, spec_overrides) in CASES.items():
            if layout == "dp" and name != "untied":
                continue
            extra = {"pipeline_parallel": 2} if layout == "pp" else DP_ADAM
            trainer = MegatronTrainer(make_spec(Path(folders[name]), **{**SGD, **spec_overrides, **extra}))
            trainer.load_hf(Path(folders[name]))
            results[name] = _one_step(trainer, DP_SHARES[rank] if layout == "dp" else list(range(len(SEQS))))
        torch.save(results, Path(out_dir) / f"{layout}_rank{rank}.pt")
    finally:
        teardown()


def _spawn(tmp_path: Path, layout: str, folders: dict[str, str]) -> list[dict]:
    spawn_world(_worker, 2, tmp_path, layout, folders, str(tmp_path))
    return [torch.load(tmp_path / f"{layout}_rank{r}.pt", weights_only=False) for r in range(2)]


def _reference(folder: str, spec_overrides: dict) -> dict:
    trainer = MegatronTrainer(make_spec(Path(folder), **{**SGD, **spec_overrides}))
    trainer.load_hf(Path(folder))
    return _one_step(trainer, list(range(len(SEQS))))


def _max_weight_diff(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> float:
    assert a.keys() == b.keys()
    return max((a[k] - b[k]).abs().max().item() for k in a)


@pytest.fixture
def folders(tmp_path: Path) -> dict[str, str]:
    return {name: str(make_tiny(tmp_path / name, mt, **mo)) for name, (mt, mo, _) in CASES.items()}


def test_pp2_matches_single_process(world_of_one, tmp_path: Path, folders: dict[str, str]) -> None:
    ranks = _spawn(tmp_path, "pp", folders)
    for name, (_, _, spec_overrides) in CASES.items():
        ref = _reference(folders[name], spec_overrides)
        for out in (r[name] for r in ranks):  # both stages return everything
            for got, want in zip(out["log_probs"], ref["log_probs"], strict=True):
                torch.testing.assert_close(got, want, atol=1e-5, rtol=0)
            assert out["metrics"]["loss"] == pytest.approx(ref["metrics"]["loss"], abs=1e-5)
            assert out["metrics"]["grad_norm"] == pytest.approx(ref["metrics"]["grad_norm"], rel=1e-5)
            assert _max_weight_diff(out["weights"], ref["weights"]) < 1e-5, name
        assert _max_weight_diff(ref["weights"], _reference_initial(folders[name])) > 1e-3  # the step moved them


def _reference_initial(folder: str) -> dict[str, torch.Tensor]:
    from safetensors.torch import load_file

    return load_file(Path(folder) / "model.safetensors")


def test_dp2_matches_single_process(world_of_one, tmp_path: Path, folders: dict[str, str]) -> None:
    """Two data-parallel ranks, each on its share of the batch, take the step the whole batch takes at DP=1."""
    ranks = _spawn(tmp_path, "dp", folders)
    ref = _reference(folders["untied"], {**DP_ADAM, "use_distributed_optimizer": False})
    for rank, out in enumerate(ranks):
        shard_ref = [ref["log_probs"][i] for i in DP_SHARES[rank]]
        for got, want in zip(out["untied"]["log_probs"], shard_ref, strict=True):
            torch.testing.assert_close(got, want, atol=1e-5, rtol=0)
        assert out["untied"]["metrics"]["grad_norm"] == pytest.approx(ref["metrics"]["grad_norm"], rel=1e-5)
        assert _max_weight_diff(out["untied"]["weights"], ref["weights"]) < 1e-5
    total_loss = sum(out["untied"]["metrics"]["loss"] for out in ranks)  # each rank reports its own share
    assert total_loss == pytest.approx(ref["metrics"]["loss"], abs=1e-5)
