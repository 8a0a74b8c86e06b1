"""Tensor parallelism (TP=2 over two gloo processes), with and without sequence parallelism, equals TP=1.

Each case takes one SGD step on the same batch at TP=2 and in the test process at TP=1, then compares the
per-token outputs before and after the step, the loss, the grad norm and (policy models) every gathered
weight. The cases cover what TP treats specially: Qwen3's QK norm (one weight shared by heads that are split
over the TP ranks, so each rank sees only part of its gradient), GLM4's post-sublayer norms, a MoE layer (its
router reads sequence-sharded input under SP), the critic's replicated value head, and odd lengths that
sequence parallelism must pad to a multiple of the TP size, in padded and packed micro-batches.
"""

from __future__ import annotations

import tempfile
from pathlib import Path

import pytest
import torch
import torch.multiprocessing as mp
from train_helpers import SEQS, STARTS, make_spec, make_tiny, sum_log_prob_loss

from rlpipe.train.critic import MegatronCritic
from rlpipe.train.trainer import MegatronTrainer

PACKED = {"use_dynamic_batch_size": True, "max_tokens_per_gpu": 13}
CASES = {  # name -> (model_type, model overrides, spec overrides)
    "qk_norm_packed": ("qwen3", {"tie_word_embeddings": True}, PACKED),
    "qk_norm_sp_packed": ("qwen3", {"tie_word_embeddings": True}, {**PACKED, "sequence_parallel": True}),
    "post_norms_sp": ("glm4", {}, {"sequence_parallel": True}),
    "moe_sp": ("qwen3_moe", {}, {"sequence_parallel": True}),
    "critic_sp": ("qwen2", {}, {"sequence_parallel": True}),
}
SGD = {"optimizer": "sgd", "lr": 0.5, "micro_batch_size": 2}


def _one_step(name: str, folder: str, **layout: object) -> dict:
    """Outputs before and after one SGD step of case `name`, its metrics and (policies) its HF weights."""
    _, _, spec_overrides = CASES[name]
    cls = MegatronCritic if name.startswith("critic") else MegatronTrainer
    trainer = cls(make_spec(Path(folder), **{**SGD, **spec_overrides, **layout}))
    trainer.load_hf(Path(folder))
    before = trainer._forward_only(SEQS, STARTS, with_entropy=False)[0]  # log-probs, or the critic's values
    metrics = trainer.train_step(SEQS, STARTS, sum_log_prob_loss(denominator=10.0))
    after = trainer._forward_only(SEQS, STARTS, with_entropy=False)[0]
    weights = {} if cls is MegatronCritic else dict(trainer.hf_named_tensors())
    return {"before": before, "after": after, "metrics": metrics, "weights": weights}


def _worker(rank: int, init_file: str, folders: dict[str, str], out_dir: str) -> None:
    from rlpipe.train.distributed import init_distributed, teardown

    torch.set_num_threads(1)
    init_distributed(rank, 2, f"file://{init_file}", tensor_parallel=2)
    try:
        results = {name: _one_step(name, folders[name], tensor_parallel=2) for name in CASES}
        torch.save(results, Path(out_dir) / f"rank{rank}.pt")
    finally:
        teardown()


@pytest.fixture(scope="module")
def tp2_results(tmp_path_factory: pytest.TempPathFactory) -> tuple[dict[str, str], list[dict]]:
    tmp_path = tmp_path_factory.mktemp("tp2")
    folders = {name: str(make_tiny(tmp_path / name, mt, **mo)) for name, (mt, mo, _) in CASES.items()}
    with tempfile.NamedTemporaryFile(dir=tmp_path, delete=True) as f:
        init_file = f.name  # file:// rendezvous needs a path that does not exist yet
    mp.spawn(_worker, args=(init_file, folders, str(tmp_path)), nprocs=2, join=True)
    return folders, [torch.load(tmp_path / f"rank{r}.pt", weights_only=False) for r in range(2)]


def _max_diff(a: list[torch.Tensor], b: list[torch.Tensor]) -> float:
    assert [x.shape for x in a] == [y.shape for y in b]
    return max((x - y).abs().max().item() for x, y in zip(a, b, strict=True))


@pytest.mark.parametrize("name", list(CASES))
def test_tp2_step_equals_tp1(world_of_one, tp2_results, name: str) -> None:
    folders, ranks = tp2_results
    ref = _one_step(name, folders[name], sequence_parallel=False)
    assert _max_diff(ref["after"], ref["before"]) > 1e-3  # the step changed the outputs
    for out in (rank[name] for rank in ranks):
        assert _max_diff(out["before"], ref["before"]) < 1e-5
        assert out["metrics"]["loss"] == pytest.approx(ref["metrics"]["loss"], abs=1e-5)
        assert out["weights"].keys() == ref["weights"].keys()
        for key, want in ref["weights"].items():
            torch.testing.assert_close(
                out["weights"][key], want, atol=1e-5, rtol=0, msg=lambda m, key=key: f"{key}: {m}"
            )
        assert _max_diff(out["after"], ref["after"]) < 1e-5
        assert out["metrics"]["grad_norm"] == pytest.approx(ref["metrics"]["grad_norm"], rel=1e-5)
