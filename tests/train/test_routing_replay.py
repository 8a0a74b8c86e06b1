"""MoE rollout routing replay (R3): the trainer's routers take the experts the engine chose, token for token.

The engine here is the HF engine over the trainer's own tiny Qwen3-MoE whose top-k breaks near-ties differently
(a small error in its selection scores, as another kernel or precision gives): without replay the trainer routes
some tokens to other experts and its log-probs drift from the engine's; with replay its expert choice is the
engine's everywhere and the log-probs agree to fp32 rounding. Replay must also give the same log-probs whatever
the micro-batch layout (padded rows, packed rows) and under tensor + sequence, expert and pipeline parallelism.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from megatron.core.transformer.moe.router import TopKRouter
from torch.nn import functional as F
from train_helpers import init_layout, make_spec, make_tiny, spawn_world

from rlpipe.data.tiny_model import build_char_tokenizer
from rlpipe.rollout.engine import SamplingParams
from rlpipe.rollout.hf_engine import HFEngine
from rlpipe.train.routing_replay import RouteError
from rlpipe.train.trainer import MegatronTrainer

MOE = {"num_experts": 8, "num_experts_per_tok": 2}
PROMPTS = [[1, 2, 3, 4, 5], [7, 3], [9, 8, 7, 6, 5, 4, 3], [11, 12, 13]]


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny Qwen3-MoE (8 experts, top-2), with a tokenizer for the engine."""
    folder = make_tiny(tmp_path_factory.mktemp("r3") / "moe", "qwen3_moe", seed=3, **MOE)
    build_char_tokenizer().save_pretrained(folder)
    return folder


def _break_ties_differently(router: torch.nn.Module, seed: int) -> None:
    """Give one HF router a top-k whose selection scores carry a small deterministic error (as a different
    kernel or precision would): the experts it picks near a tie change, the mixture weights of the experts it
    picks stay the exact softmax of the model's logits."""
    noise = torch.randn(router.weight.shape, generator=torch.Generator().manual_seed(seed)) * 0.002

    def forward(hidden_states: torch.Tensor):
        hidden_states = hidden_states.reshape(-1, router.hidden_dim)
        logits = F.linear(hidden_states, router.weight)
        probs = torch.softmax(logits, dtype=torch.float, dim=-1)
        _, indices = torch.topk(probs + F.linear(hidden_states, noise), router.top_k, dim=-1)
        top = probs.gather(1, indices)
        top = top / top.sum(dim=-1, keepdim=True)  # norm_topk_prob
        return logits, top.to(logits.dtype), indices

    router.forward = forward


def sample_with_tie_breaking_engine(checkpoint: Path, n: int, max_new_tokens: int) -> dict:
    """`n` sampled responses per prompt with the (tie-breaking) engine's log-probs and routed experts."""
    engine = HFEngine(checkpoint, seed=5)
    for k, layer in enumerate(engine.model.model.layers):
        _break_ties_differently(layer.mlp.gate, seed=k)
    params = SamplingParams(max_new_tokens=max_new_tokens, temperature=1.0, n=n, return_routed_experts=True)
    outs = [o for group in engine.generate(PROMPTS, params) for o in group]
    prompts = [p for p in PROMPTS for _ in range(n)]
    return {
        "seqs": [p + o.output_ids for p, o in zip(prompts, outs, strict=True)],
        "starts": [len(p) for p in prompts],
        "log_probs": [torch.tensor(o.output_log_probs) for o in outs],
        "routes": [o.routed_experts for o in outs],
    }


@pytest.fixture(scope="module")
def rollout(checkpoint) -> dict:
    return sample_with_tie_breaking_engine(checkpoint, n=2, max_new_tokens=12)


def _trainer_choices(trainer: MegatronTrainer, rollout: dict, replay: bool) -> tuple[list[torch.Tensor], list]:
    """Log-probs of one sample per micro-batch, and each router's chosen experts per token ([tokens, E] maps)."""
    maps: list[torch.Tensor] = []
    routers = [m for m in trainer.model.modules() if isinstance(m, TopKRouter)]
    hooks = [r.register_forward_hook(lambda _m, _i, out: maps.append(out[1].detach().clone())) for r in routers]
    try:
        routes = rollout["routes"] if replay else None
        log_probs = trainer.compute_log_probs(rollout["seqs"], rollout["starts"], routes=routes)
    finally:
        for hook in hooks:
            hook.remove()
    return log_probs, maps


def _disagreements(maps: list[torch.Tensor], rollout: dict, layers: int) -> int:
    """Tokens (of all layers) whose trainer experts differ from the engine's."""
    differing = 0
    for sample, routes in enumerate(rollout["routes"]):
        for layer in range(layers):
            chosen = maps[sample * layers + layer][: routes.shape[0]]  # [tokens, E]: the last token is not routed
            engine = torch.zeros_like(chosen).scatter(1, torch.from_numpy(routes[:, layer].astype(np.int64)), True)
            differing += int((chosen != engine).any(dim=1).sum())
    return differing


def _mismatch(trainer_lp: list[torch.Tensor], rollout: dict) -> float:
    return torch.cat([(t - e).abs() for t, e in zip(trainer_lp, rollout["log_probs"], strict=True)]).mean().item()


def test_routes_cover_every_token_the_engine_ran(rollout) -> None:
    for seq, routes in zip(rollout["seqs"], rollout["routes"], strict=True):
        assert routes.shape == (len(seq) - 1, 2, 2) and routes.dtype == np.int32
        assert ((routes >= 0) & (routes < 8)).all()
        assert (routes[..., 0] != routes[..., 1]).all()  # top-2: two distinct experts


def test_replay_makes_the_trainer_route_like_the_engine(world_of_one, checkpoint, rollout) -> None:
    trainer = MegatronTrainer(make_spec(checkpoint, micro_batch_size=1, routing_replay=True))
    trainer.load_hf(checkpoint)
    free_lp, free_maps = _trainer_choices(trainer, rollout, replay=False)
    replay_lp, replay_maps = _trainer_choices(trainer, rollout, replay=True)
    assert _disagreements(free_maps, rollout, layers=2) > 0  # the nudge moves some tokens to other experts
    assert _disagreements(replay_maps, rollout, layers=2) == 0
    free, replayed = _mismatch(free_lp, rollout), _mismatch(replay_lp, rollout)
    # same weights, same experts: only fp32 rounding (incremental decode vs one full forward) is left
    assert replayed < 1e-5 < free, (free, replayed)
    # after the replayed pass the routers route on their own again
    again, _ = _trainer_choices(trainer, rollout, replay=False)
    for a, b in zip(again, free_lp, strict=True):
        assert torch.equal(a, b)


@pytest.mark.parametrize(
    "layout", [{"micro_batch_size": 3}, {"use_dynamic_batch_size": True, "max_tokens_per_gpu": 40}]
)
def test_replay_is_the_same_in_every_micro_batch_layout(world_of_one, checkpoint, rollout, layout) -> None:
    one = MegatronTrainer(make_spec(checkpoint, micro_batch_size=1, routing_replay=True))
    one.load_hf(checkpoint)
    other = MegatronTrainer(make_spec(checkpoint, routing_replay=True, **layout))
    other.load_hf(checkpoint)
    want = one.compute_log_probs(rollout["seqs"], rollout["starts"], routes=rollout["routes"])
    got = other.compute_log_probs(rollout["seqs"], rollout["starts"], routes=rollout["routes"])
    for g, w in zip(got, want, strict=True):
        torch.testing.assert_close(g, w, atol=1e-5, rtol=0)


def test_routes_of_the_wrong_shape_are_refused(world_of_one, checkpoint, rollout) -> None:
    trainer = MegatronTrainer(make_spec(checkpoint, routing_replay=True))
    trainer.load_hf(checkpoint)
    short = [r[:-1] for r in rollout["routes"]]
    with pytest.raises(RouteError, match=r"sample 0: routed experts of shape"):
        trainer.compute_log_probs(rollout["seqs"], rollout["starts"], routes=short)


LAYOUTS = {  # name -> the spec's parallel sizes (2 processes)
    # sequence parallelism hands each TP rank a chunk of the sequence: its routers see only those tokens' routes
    "tp2_sp": {"tensor_parallel": 2, "sequence_parallel": True, "expert_tensor_parallel": 2},
    # expert parallelism dispatches tokens after routing: each rank routes its own (here: the same) tokens
    "ep2": {"expert_parallel": 2},
    # pipeline stages hold one MoE layer each: each replays its own layer's routes
    "pp2": {"pipeline_parallel": 2},
}


def _parallel_worker(rank: int, init_file: str, layout: str, folder: str, rollout: dict, out_dir: str) -> None:
    from rlpipe.train.distributed import teardown

    torch.set_num_threads(1)
    sizes = LAYOUTS[layout]
    init_layout(rank, init_file, 2, sizes)
    try:
        trainer = MegatronTrainer(make_spec(Path(folder), routing_replay=True, **sizes))
        trainer.load_hf(Path(folder))
        log_probs = trainer.compute_log_probs(rollout["seqs"], rollout["starts"], routes=rollout["routes"])
        torch.save(log_probs, Path(out_dir) / f"rank{rank}.pt")
    finally:
        teardown()


@pytest.mark.parametrize("layout", list(LAYOUTS))
def test_replay_under_model_parallelism(world_of_one, checkpoint, rollout, tmp_path, layout) -> None:
    one = MegatronTrainer(make_spec(checkpoint, routing_replay=True))
    one.load_hf(checkpoint)
    want = one.compute_log_probs(rollout["seqs"], rollout["starts"], routes=rollout["routes"])
    spawn_world(_parallel_worker, 2, tmp_path, layout, str(checkpoint), rollout, str(tmp_path))
    for rank in range(2):
        got = torch.load(tmp_path / f"rank{rank}.pt", weights_only=False)
        for g, w in zip(got, want, strict=True):
            torch.testing.assert_close(g, w, atol=1e-5, rtol=0)
