"""reasoning-gym as prompt data and reward: rows from its generator, scored by its own verifier from the model's
last turn; the written file loads as rlpipe prompt data."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

import pytest
from trl.chat_template_utils import qwen2_5_chat_template

from rlpipe.data.dataset import PromptDataset
from rlpipe.data.reasoning_gym import main, reasoning_gym_rows
from rlpipe.data.sample import TURN_START, Sample
from rlpipe.reward import RewardContext, RewardError, score_groups
from tests.rollout.multi_turn_helpers import char_tokenizer_with


def test_rows_are_the_generators_problems_with_its_answer_format(tmp_path: Path) -> None:
    import reasoning_gym

    rows = reasoning_gym_rows("basic_arithmetic", size=5, seed=3, max_terms=2)
    reference = list(reasoning_gym.create_dataset("basic_arithmetic", size=5, seed=3, max_terms=2))
    assert [r["label"] for r in rows] == [e["answer"] for e in reference]
    assert [r["prompt"][1]["content"] for r in rows] == [e["question"] for e in reference]
    assert "<answer>" in rows[0]["prompt"][0]["content"]  # the system prompt asks for the tag the reward reads
    out = tmp_path / "arith.jsonl"
    main(["basic_arithmetic", "--size", "5", "--seed", "3", "--out", str(out), "--config", "max_terms=2"])
    assert [json.loads(line) for line in out.read_text().splitlines()] == rows  # same arguments, same file


def score(tok, rows: list[dict], responses: list[str], policy: str = "fail", turn_start: int = 0) -> list[float]:
    samples = []
    for row, text in zip(rows, responses, strict=True):
        ids = tok.encode(text, add_special_tokens=False)
        samples.append(Sample(prompt=row["prompt"], label=row["label"], metadata={**row["metadata"]}))
        samples[-1].response_tokens, samples[-1].metadata[TURN_START] = ids, turn_start
    ctx = RewardContext(
        rm_type="reasoning_gym", eos_token_id=tok.eos_token_id, special_token_ids=frozenset(tok.all_special_ids),
        decode=tok.decode, reward_failure=policy,
    )  # fmt: skip
    asyncio.run(score_groups([[s] for s in samples], ctx))
    return [s.reward for s in samples]


def test_the_reward_is_the_datasets_own_verdict_on_the_answer_tag(tmp_path: Path) -> None:
    tok = char_tokenizer_with(qwen2_5_chat_template)
    rows = reasoning_gym_rows("basic_arithmetic", size=3, seed=3, max_terms=2)
    right, wrong = rows[0]["label"], str(int(rows[1]["label"]) + 1)
    responses = [f"so <answer>{right}</answer>", f"<answer>{wrong}</answer>", rows[2]["label"]]  # last: no tag
    assert score(tok, rows, responses) == [1.0, 0.0, 0.0]
    # multi-turn: only the last turn counts (an answer tag inside an earlier tool result does not)
    assert score(tok, rows[:1], [f"<answer>{right}</answer> then <answer>0</answer>"], turn_start=0) == [0.0]
    assert score(tok, rows[:1], [f"<answer>0</answer>|<answer>{right}</answer>"], turn_start=19) == [1.0]
    # the file loads as prompt data: chat messages templated, the entry kept for the reward
    path = tmp_path / "rg.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    loaded = PromptDataset(path, tok, shuffle=False).rows_as_samples()
    assert loaded[0].metadata["reasoning_gym"]["answer"] == right
    assert tok.decode(loaded[0].prompt_tokens).endswith("<|im_start|>assistant\n")


def test_a_row_without_its_entry_is_named() -> None:
    tok = char_tokenizer_with(qwen2_5_chat_template)
    with pytest.raises(RewardError, match=r"no metadata\.reasoning_gym entry"):
        score(tok, [{"prompt": "q", "label": "1", "metadata": {}}], ["<answer>1</answer>"])


def test_the_reward_without_its_package_is_refused_at_config_time(monkeypatch, tmp_path) -> None:
    import importlib.util

    from rlpipe.config import ConfigError, load

    real = importlib.util.find_spec
    monkeypatch.setattr(
        importlib.util, "find_spec", lambda name, *a: None if name == "reasoning_gym" else real(name, *a)
    )
    with pytest.raises(ConfigError) as info:
        load([f"demo.cache_dir={tmp_path}", "rollout.rm_type=reasoning_gym"])
    (problem,) = [p for p in info.value.problems if p.key == "rollout.rm_type"]
    assert "not installed" in problem.message and "rlpipe[envs]" in problem.fix
