"""Synthetic task datasets: labels checked independently, disjoint deterministic splits, caching, vocabulary."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from rlpipe.data.tasks import TASKS, problem_count, sft_pairs, write_task_dataset
from rlpipe.data.tiny_model import CHARACTERS


def _rows(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines()]


def _expected_answer(task: str, text: str) -> str:
    """An independent solver for each task's prompt text."""
    if task == "reverse":
        assert text[0] == "r"
        return "".join(reversed(text[1:]))
    if task == "copy":
        assert text[0] == "c"
        return text[1:]
    left, right = text.removesuffix("=").split("+")
    return str(int(left) + int(right))


@pytest.mark.parametrize("task", TASKS)
def test_labels_are_correct_and_splits_disjoint(tmp_path: Path, task: str) -> None:
    train, evaluation = write_task_dataset(tmp_path, task, n_train=300, n_eval=50, seed=1)
    train_rows, eval_rows = _rows(train), _rows(evaluation)
    assert (len(train_rows), len(eval_rows)) == (300, 50)
    for row in train_rows + eval_rows:
        (message,) = row["prompt"]
        assert message["role"] == "user"
        assert row["label"] == _expected_answer(task, message["content"])
        assert row["metadata"] == {"task": task}
        assert set(message["content"]) <= set(CHARACTERS)
        assert set(row["label"]) <= set("0123456789")
    train_prompts = {r["prompt"][0]["content"] for r in train_rows}
    eval_prompts = {r["prompt"][0]["content"] for r in eval_rows}
    assert len(train_prompts) == 300 and len(eval_prompts) == 50
    assert not train_prompts & eval_prompts


def test_reverse_default_is_three_digits(tmp_path: Path) -> None:
    train, _ = write_task_dataset(tmp_path, n_train=20, n_eval=5)
    for row in _rows(train):
        text = row["prompt"][0]["content"]
        assert len(text) == 4 and text[1:].isdigit()
    assert problem_count("reverse", 3) == 1000
    assert problem_count("add", 2) == 10_000


def test_deterministic_per_seed_and_eval_independent_of_n_train(tmp_path: Path) -> None:
    a_train, a_eval = write_task_dataset(tmp_path / "a", "add", n_train=40, n_eval=10, seed=7)
    b_train, b_eval = write_task_dataset(tmp_path / "b", "add", n_train=40, n_eval=10, seed=7)
    assert a_train.read_bytes() == b_train.read_bytes() and a_eval.read_bytes() == b_eval.read_bytes()
    _, c_eval = write_task_dataset(tmp_path / "c", "add", n_train=80, n_eval=10, seed=7)
    assert c_eval.read_bytes() == a_eval.read_bytes()
    d_train, _ = write_task_dataset(tmp_path / "d", "add", n_train=40, n_eval=10, seed=8)
    assert d_train.read_bytes() != a_train.read_bytes()


def test_cached_and_atomic(tmp_path: Path) -> None:
    train, evaluation = write_task_dataset(tmp_path, "copy", n_train=30, n_eval=5)
    stamps = train.stat().st_mtime_ns, evaluation.stat().st_mtime_ns
    assert write_task_dataset(tmp_path, "copy", n_train=30, n_eval=5) == (train, evaluation)
    assert (train.stat().st_mtime_ns, evaluation.stat().st_mtime_ns) == stamps
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted([train.name, evaluation.name])  # no temp files


def test_string_prompts_and_sft_pairs(tmp_path: Path) -> None:
    train, _ = write_task_dataset(tmp_path, "reverse", n_train=12, n_eval=3, as_messages=False)
    rows = _rows(train)
    assert all(isinstance(r["prompt"], str) for r in rows)
    pairs = list(sft_pairs(train))
    assert pairs == [(r["prompt"], r["label"]) for r in rows]
    assert all(answer == prompt[1:][::-1] for prompt, answer in pairs)


def test_rejects_bad_requests(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="1000 distinct problems"):
        write_task_dataset(tmp_path, "reverse", n_train=990, n_eval=20)
    with pytest.raises(ValueError, match="unknown task 'sort'"):
        write_task_dataset(tmp_path, "sort", n_train=1, n_eval=1)  # type: ignore[arg-type]
