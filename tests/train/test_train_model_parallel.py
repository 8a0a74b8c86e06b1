"""Tensor (with and without sequence), context, expert and pipeline x context parallelism over gloo processes
equal one process.

Each case takes one SGD step on the same batch at a 2-way (or 2 x 2) layout and in the test process without
parallelism, then compares the per-token outputs before and after the step, the loss, the grad norm and (policy
models) every gathered weight. The cases cover what the layouts treat specially: Qwen3's QK norm (one weight
shared by heads that TP splits over ranks), GLM4's post-sublayer norms and partial interleaved RoPE (which CP
slices per rank), a MoE layer (its router reads sequence-sharded input under SP; its experts split over
expert-tensor and expert-parallel ranks), the critic's replicated value head, tied embeddings, and odd lengths
that SP / CP pad to a multiple of 2 / 4 in padded and packed micro-batches. Where a layout leaves two
data-parallel ranks (EP=2 over two processes), each trains on its own share of the batch and the shares together
make the one-process batch.
"""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from train_helpers import SEQS, STARTS, init_layout, make_spec, make_tiny, spawn_world, sum_log_prob_loss

from rlpipe.train.critic import MegatronCritic
from rlpipe.train.trainer import MegatronTrainer

PACKED = {"use_dynamic_batch_size": True, "max_tokens_per_gpu": 13}
CASES = {  # name -> (model_type, model overrides, spec overrides)
    "padded": ("qwen2", {}, {}),
    "qk_norm_tied_packed": ("qwen3", {"tie_word_embeddings": True}, PACKED),
    "post_norms_partial_rope": ("glm4", {}, {}),
    "moe": ("qwen3_moe", {}, {}),
    "critic_packed": ("qwen2", {}, PACKED),
    "three_layers": ("qwen3", {"num_hidden_layers": 3}, {}),
}
LAYOUTS = {  # name -> (world size, the spec's and the process groups' parallel sizes)
    "tp2": (2, {"tensor_parallel": 2}),
    "tp2_sp": (2, {"tensor_parallel": 2, "sequence_parallel": True, "expert_tensor_parallel": 2}),
    "cp2": (2, {"context_parallel": 2}),
    "cp2_tp2_sp": (4, {"context_parallel": 2, "tensor_parallel": 2, "sequence_parallel": True}),
    "cp2_pp2": (4, {"context_parallel": 2, "pipeline_parallel": 2}),
    # Miles' uneven stages (--decoder-last-pipeline-num-layers): 1 layer on the first stage, 2 on the last
    "pp2_uneven": (2, {"pipeline_parallel": 2, "decoder_last_pipeline_num_layers": 2}),
    "ep2_dp2": (2, {"expert_parallel": 2}),
    "tp2_sp_ep2_etp1": (2, {"tensor_parallel": 2, "sequence_parallel": True, "expert_parallel": 2}),
}
ONLY = {  # layouts that run some cases: the four-process ones (twice the processes on the same cores) and the
    # expert layouts (a dense model has no experts to split)
    "cp2_tp2_sp": ("qk_norm_tied_packed", "critic_packed"),
    "cp2_pp2": ("qk_norm_tied_packed", "padded"),
    "ep2_dp2": ("moe",),
    "tp2_sp_ep2_etp1": ("moe",),
    "pp2_uneven": ("three_layers",),
}
# Megatron refuses to train a MoE layer at TP > 1 without SP (and so does the config layer).
PAIRS = [
    (layout, case)
    for layout in LAYOUTS
    for case in ONLY.get(layout, [c for c in CASES if c != "three_layers"])  # three_layers: uneven stages only
    if (layout, case) != ("tp2", "moe")
]
DP_SHARES = [[0, 1, 2], [3, 4]]  # sample indices each data-parallel rank trains on, when there are two
SGD = {"optimizer": "sgd", "lr": 0.5, "micro_batch_size": 2}


def _one_step(case: str, folder: str, share: list[int], **layout: object) -> dict:
    """Outputs before and after one SGD step of `case` on the samples `share`, its metrics and (policies) its
    HF weights."""
    _, _, spec_overrides = CASES[case]
    cls = MegatronCritic if case.startswith("critic") else MegatronTrainer
    trainer = cls(make_spec(Path(folder), **{**SGD, **spec_overrides, **layout}))
    trainer.load_hf(Path(folder))
    seqs, starts = [SEQS[i] for i in share], [STARTS[i] for i in share]
    before = trainer._forward_only(seqs, starts, with_entropy=False)[0]  # log-probs, or the critic's values
    metrics = trainer.train_step(seqs, starts, sum_log_prob_loss(denominator=10.0))
    after = trainer._forward_only(seqs, starts, with_entropy=False)[0]
    weights = {} if cls is MegatronCritic else dict(trainer.hf_named_tensors())
    return {"share": share, "before": before, "after": after, "metrics": metrics, "weights": weights}


def _worker(rank: int, init_file: str, layout: str, folders: dict[str, str], out_dir: str) -> None:
    from megatron.core import parallel_state

    from rlpipe.train.distributed import teardown

    torch.set_num_threads(1)
    world, sizes = LAYOUTS[layout]
    init_layout(rank, init_file, world, sizes)
    try:
        two = parallel_state.get_data_parallel_world_size() == 2
        share = DP_SHARES[parallel_state.get_data_parallel_rank()] if two else list(range(len(SEQS)))
        results = {case: _one_step(case, folders[case], share, **sizes) for lay, case in PAIRS if lay == layout}
        torch.save(results, Path(out_dir) / f"rank{rank}.pt")
    finally:
        teardown()


@pytest.fixture(scope="module")
def folders(tmp_path_factory: pytest.TempPathFactory) -> dict[str, str]:
    tmp_path = tmp_path_factory.mktemp("models")
    return {case: str(make_tiny(tmp_path / case, mt, **mo)) for case, (mt, mo, _) in CASES.items()}


@pytest.fixture(scope="module")
def layout_run(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory, folders) -> list[dict]:
    """Every rank's results of every case under the layout `request.param`: one spawn per layout."""
    out = tmp_path_factory.mktemp(request.param)
    world, _ = LAYOUTS[request.param]
    spawn_world(_worker, world, out, request.param, folders, str(out))
    return [torch.load(out / f"rank{r}.pt", weights_only=False) for r in range(world)]


def _assert_close(got: list[torch.Tensor], want: list[torch.Tensor]) -> None:
    """fp32 agreement: 1e-5 absolute, plus 1e-6 relative for the critic's values (tens after the step)."""
    for g, w in zip(got, want, strict=True):
        torch.testing.assert_close(g, w, atol=1e-5, rtol=1e-6)


@pytest.mark.parametrize(("layout_run", "case"), PAIRS, indirect=["layout_run"], ids=[f"{lay}-{c}" for lay, c in PAIRS])
def test_layout_step_equals_one_process(world_of_one, folders, layout_run: list[dict], case: str) -> None:
    everything = list(range(len(SEQS)))
    ref = _one_step(case, folders[case], everything)
    assert max((a - b).abs().max().item() for a, b in zip(ref["after"], ref["before"], strict=True)) > 1e-3
    # Each data-parallel share reports its own part of the loss; the distinct shares add up to the whole.
    losses = {tuple(rank[case]["share"]): rank[case]["metrics"]["loss"] for rank in layout_run}
    assert sorted(i for share in losses for i in share) == everything
    assert sum(losses.values()) == pytest.approx(ref["metrics"]["loss"], abs=1e-5)
    for out in (rank[case] for rank in layout_run):
        _assert_close(out["before"], [ref["before"][i] for i in out["share"]])
        assert out["weights"].keys() == ref["weights"].keys()
        for key, want in ref["weights"].items():
            torch.testing.assert_close(out["weights"][key], want, atol=1e-5, rtol=0, msg=lambda m, k=key: f"{k}: {m}")
        _assert_close(out["after"], [ref["after"][i] for i in out["share"]])
        assert out["metrics"]["grad_norm"] == pytest.approx(ref["metrics"]["grad_norm"], rel=1e-5)
