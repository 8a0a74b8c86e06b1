"""Synthetic tasks with verifiable answers, written as prompt datasets for the offline demo.

    reverse   "r123"      -> "321"   (default; the digit string may start with zeros)
    copy      "c123"      -> "123"
    add       "12+345="   -> "357"   (operands below 10**digits, written without leading zeros; the tiny demo
                                      model learns it at 2 digits: conf/experiment/tiny-add.yaml)

Every prompt character is in the tiny model's vocabulary (`rlpipe.data.tiny_model.CHARACTERS`). Rows are
`{"prompt": [{"role": "user", "content": ...}] | str, "label": answer, "metadata": {"task": ...}}`.
Splits come from one seeded sample of distinct problems: the first `n_eval` are the eval split and the next
`n_train` the train split, so they are disjoint and the eval split does not change with `n_train`.
With `tools`, add problems also carry a solved calculator episode (`metadata.trace`) for the supervised warm-up
of the tool demo (conf/experiment/tool-cpu.yaml). With `conversations` (the SFT job, conf/experiment/sft-cpu.yaml)
each row is `{"messages": [user, assistant answer], "label": answer, ...}`, and with `tools` the messages are the
solved episode itself: user, the assistant's calculator call, the tool's result, the assistant's answer.
"""

from __future__ import annotations

import random
from collections.abc import Iterator
from pathlib import Path
from typing import Any, Literal

from rlpipe.data.rows import read_rows, write_jsonl_atomic
from rlpipe.rollout.tool_calls import calculator, tool_call_text

Task = Literal["reverse", "copy", "add"]
TASKS: tuple[str, ...] = ("reverse", "copy", "add")


def problem_count(task: Task, digits: int) -> int:
    """How many distinct problems `task` has at this digit count."""
    _check_task(task, digits)
    return 10 ** (2 * digits) if task == "add" else 10**digits


def make_problem(task: Task, index: int, digits: int) -> tuple[str, str]:
    """(prompt text, answer) of problem number `index` in [0, problem_count(task, digits))."""
    if task == "add":
        a, b = divmod(index, 10**digits)
        return f"{a}+{b}=", str(a + b)
    s = f"{index:0{digits}d}"
    return ("r" + s, s[::-1]) if task == "reverse" else ("c" + s, s)


def write_task_dataset(
    folder: str | Path,
    task: Task = "reverse",
    n_train: int = 512,
    n_eval: int = 64,
    seed: int = 0,
    digits: int = 3,
    as_messages: bool = True,
    tools: bool = False,
    conversations: bool = False,
) -> tuple[Path, Path]:
    """Write (or reuse) `<task>...train.jsonl` and `...eval.jsonl` in `folder`; returns (train_path, eval_path).

    The file names carry every argument, so an existing pair is the same data and is reused. Each file is
    written to a temporary name and renamed into place (atomic). With `tools` (add only) each row's metadata
    also holds `trace`: the assistant turns of a solved calculator episode, for the supervised warm-up.
    """
    _check_task(task, digits)
    if tools and task != "add":
        raise ValueError(f"only the add task has a tool (the calculator); task {task!r} has none")
    train_path, eval_path = task_dataset_paths(
        folder, task, n_train, n_eval, seed, digits, as_messages, tools, conversations
    )
    space = problem_count(task, digits)
    if n_train < 1 or n_eval < 0 or n_train + n_eval > space:
        raise ValueError(
            f"task {task!r} with digits={digits} has {space} distinct problems; "
            f"n_train={n_train} + n_eval={n_eval} must be between 1 and {space}"
        )
    train_path.parent.mkdir(parents=True, exist_ok=True)
    if train_path.is_file() and eval_path.is_file():
        return train_path, eval_path
    indices = random.Random(seed).sample(range(space), n_eval + n_train)
    rows = [_row(task, i, digits, as_messages, tools, conversations) for i in indices]
    write_jsonl_atomic(eval_path, rows[:n_eval])
    write_jsonl_atomic(train_path, rows[n_eval:])
    return train_path, eval_path


def task_dataset_paths(
    folder: str | Path,
    task: str,
    n_train: int,
    n_eval: int,
    seed: int,
    digits: int,
    as_messages: bool = True,
    tools: bool = False,
    conversations: bool = False,
) -> tuple[Path, Path]:
    """(train, eval) file paths `write_task_dataset` uses: the names carry every argument."""
    kind = ("chat" if as_messages else "text") + ("-tools" if tools else "") + ("-sft" if conversations else "")
    stem = f"{task}-d{digits}-s{seed}-{n_train}x{n_eval}-{kind}"
    return Path(folder) / f"{stem}.train.jsonl", Path(folder) / f"{stem}.eval.jsonl"


def sft_pairs(path: str | Path) -> Iterator[tuple[str | list[dict[str, str]], str]]:
    """(prompt, answer) pairs of a task dataset file, for the supervised warm-up (use the train split)."""
    for _, row in read_rows(path):
        yield row["prompt"], row["label"]


def _row(task: Task, index: int, digits: int, as_messages: bool, tools: bool, conversations: bool) -> dict[str, Any]:
    text, answer = make_problem(task, index, digits)
    prompt: str | list[dict[str, str]] = [{"role": "user", "content": text}] if as_messages else text
    metadata: dict[str, Any] = {"task": task}
    trace = [tool_call_text("calculator", {"expression": text.rstrip("=")}), answer] if tools else [answer]
    if conversations:
        if not as_messages:
            raise ValueError("a conversation is chat messages: as_messages must be on")
        messages: list[dict[str, str]] = [{"role": "user", "content": text}, {"role": "assistant", "content": trace[0]}]
        if tools:  # the calculator's reply, then the answer
            result = calculator(text.rstrip("="))
            messages += [
                {"role": "tool", "name": "calculator", "content": result},
                {"role": "assistant", "content": answer},
            ]
        return {"messages": messages, "label": answer, "metadata": metadata}
    if tools:  # call the calculator on the sum, then answer with its result
        metadata["trace"] = trace
    return {"prompt": prompt, "label": answer, "metadata": metadata}


def _check_task(task: str, digits: int) -> None:
    if task not in TASKS:
        raise ValueError(f"unknown task {task!r}; choose one of {', '.join(TASKS)}")
    if digits < 1:
        raise ValueError(f"digits must be >= 1, got {digits}")
