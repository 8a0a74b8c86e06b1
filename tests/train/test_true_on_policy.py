"""Golden train-inference consistency: in fp32 the engine's log-probs of its own samples are the trainer's.

The HF engine samples with a KV cache, one token at a time; the Megatron trainer scores the same sequences in
one forward, padded or packed, at TP 1 and TP 2. Both run fp32 on CPU, so they may differ by rounding only
(different summation orders). Measured when this test was written: max |difference| 4.8e-7, about 70 % of tokens
bit-identical (dense and MoE alike). The bound is 1e-6: a change that makes engine and trainer compute different
things (a temperature applied on one side only, a wrong position, a missing norm, another expert) moves it by
orders of magnitude, and this test fails.
"""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from train_helpers import init_layout, make_spec, make_tiny, spawn_world

from rlpipe.data.tiny_model import build_char_tokenizer
from rlpipe.rollout.engine import SamplingParams
from rlpipe.rollout.hf_engine import HFEngine
from rlpipe.train.trainer import MegatronTrainer

GOLDEN_BOUND = 1e-6
MODELS = {"dense": ("qwen3", {}), "moe": ("qwen3_moe", {"num_experts": 8, "num_experts_per_tok": 2})}
PROMPTS = [[1, 2, 3, 4, 5], [7, 3], [9, 8, 7, 6, 5, 4, 3], [11, 12, 13]]
TP2 = {
    "dense": {"tensor_parallel": 2},
    "moe": {"tensor_parallel": 2, "sequence_parallel": True, "expert_tensor_parallel": 2},  # Megatron's MoE rule
}


@pytest.fixture(scope="module")
def sampled(tmp_path_factory: pytest.TempPathFactory) -> dict[str, dict]:
    """Per model: its folder, and the engine's samples at temperature 0.7 with their log-probs."""
    out = {}
    for name, (model_type, extra) in MODELS.items():
        folder = make_tiny(tmp_path_factory.mktemp(name) / "hf", model_type, seed=3, **extra)
        build_char_tokenizer().save_pretrained(folder)
        engine = HFEngine(folder, seed=5)
        outs = [o for g in engine.generate(PROMPTS, SamplingParams(max_new_tokens=12, temperature=0.7, n=2)) for o in g]
        prompts = [p for p in PROMPTS for _ in range(2)]
        out[name] = {
            "folder": str(folder),
            "seqs": [p + o.output_ids for p, o in zip(prompts, outs, strict=True)],
            "starts": [len(p) for p in prompts],
            "engine": [torch.tensor(o.output_log_probs) for o in outs],
        }
    return out


def _trainer_log_probs(data: dict, **layout: object) -> list[torch.Tensor]:
    trainer = MegatronTrainer(make_spec(Path(data["folder"]), temperature=0.7, **layout))
    trainer.load_hf(Path(data["folder"]))
    return trainer.compute_log_probs(data["seqs"], data["starts"])


def _max_mismatch(trainer: list[torch.Tensor], engine: list[torch.Tensor]) -> float:
    return torch.cat([(t - e).abs() for t, e in zip(trainer, engine, strict=True)]).max().item()


@pytest.mark.parametrize("model", list(MODELS))
@pytest.mark.parametrize(
    "layout",
    [{"micro_batch_size": 1}, {"micro_batch_size": 4}, {"use_dynamic_batch_size": True, "max_tokens_per_gpu": 64}],
)
def test_trainer_scores_the_engines_samples_as_the_engine_did(world_of_one, sampled, model, layout) -> None:
    data = sampled[model]
    assert sum(len(e) for e in data["engine"]) > 40  # enough sampled tokens to mean something
    assert _max_mismatch(_trainer_log_probs(data, **layout), data["engine"]) <= GOLDEN_BOUND


def _tp2_worker(rank: int, init_file: str, sampled: dict, out_dir: str) -> None:
    from rlpipe.train.distributed import teardown

    torch.set_num_threads(1)
    init_layout(rank, init_file, 2, {"tensor_parallel": 2, "expert_tensor_parallel": 2})
    try:
        results = {name: _trainer_log_probs(data, **TP2[name]) for name, data in sampled.items()}
        torch.save(results, Path(out_dir) / f"rank{rank}.pt")
    finally:
        teardown()


def test_at_tensor_parallel_2_too(world_of_one, sampled, tmp_path) -> None:
    spawn_world(_tp2_worker, 2, tmp_path, sampled, str(tmp_path))
    for rank in range(2):
        results = torch.load(tmp_path / f"rank{rank}.pt", weights_only=False)
        for name, data in sampled.items():
            assert _max_mismatch(results[name], data["engine"]) <= GOLDEN_BOUND, (rank, name)


class _CountingEnv:
    """Answers every turn with a tool message; done after three turns."""

    async def reset(self, sample) -> None:
        self.turn = 0

    async def step(self, action: str):
        from rlpipe.rollout.env import StepResult

        self.turn += 1
        return StepResult(done=True) if self.turn == 3 else StepResult([{"role": "tool", "content": str(self.turn)}])


def test_multi_turn_episodes_are_scored_by_the_trainer_as_the_engine_sampled_them(world_of_one, sampled) -> None:
    """Token in, token out across turns: the trainer scores prompt + turns + observations in one forward, and its
    log-probs of the model's tokens equal the engine's, turn by turn (observations are masked out)."""
    from rlpipe.data.sample import Sample
    from rlpipe.rollout.generate import RolloutSource
    from rlpipe.rollout.multi_turn import EpisodeRunner, ObservationRenderer

    data = sampled["dense"]
    engine = HFEngine(data["folder"], seed=7)
    tok = engine.tokenizer
    runner = EpisodeRunner(_CountingEnv, "counting", ObservationRenderer(tok), max_turns=3)
    source = RolloutSource(None, engine, None, tok.decode, episodes=runner)  # type: ignore[arg-type]
    samples = [Sample(prompt="", prompt_tokens=p, loss_mask=[]) for p in PROMPTS]
    digits = tuple(tok.convert_tokens_to_ids(list("0123456789")))  # a turn ends at its first digit (or EOS)
    params = SamplingParams(max_new_tokens=48, temperature=0.7, stop_token_ids=digits)
    source.continue_samples(samples, params, rollout_id=0)
    assert sum(s.metadata["turns"] for s in samples) > len(samples)  # multi-turn episodes, not single turns
    trainer = MegatronTrainer(make_spec(Path(data["folder"]), temperature=0.7))
    trainer.load_hf(Path(data["folder"]))
    scored = trainer.compute_log_probs([s.tokens for s in samples], [len(s.prompt_tokens) for s in samples])
    for sample, log_probs in zip(samples, scored, strict=True):
        mask = torch.tensor(sample.loss_mask, dtype=torch.bool)
        assert (~mask).any() or sample.metadata["turns"] == 1
        engine_lp = torch.tensor(sample.rollout_log_probs)
        assert (log_probs[mask] - engine_lp[mask]).abs().max().item() <= GOLDEN_BOUND
