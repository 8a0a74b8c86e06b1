"""Procedural tasks from reasoning-gym (`pip install 'rlpipe[envs]'`) as a prompt file, scored by their own
verifiers (`rollout.rm_type=reasoning_gym`).

    python -m rlpipe.data.reasoning_gym basic_arithmetic --size 2000 --seed 1 --out data/arith.jsonl \\
        --config max_terms=3 --config max_digits=3
    python launch.py experiment=none rollout.prompt_data=data/arith.jsonl rollout.rm_type=reasoning_gym ...

Each row: `prompt` = reasoning-gym's system prompt (its answer format, `<answer>...</answer>`) and the question as
chat messages, `label` = the reference answer, `metadata.reasoning_gym` = the whole entry (question, answer, its
metadata), which the reward hands to the dataset's own `score_answer`. Everything is generated offline from the
seed: the same arguments write the same file.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

from rlpipe.data.rows import write_jsonl_atomic

ENTRY_KEY = "reasoning_gym"


def reasoning_gym_rows(
    name: str, size: int, seed: int, system_prompt: str = "default", **config: Any
) -> list[dict[str, Any]]:
    """Rows of `size` problems of the reasoning-gym dataset `name` (its config fields as keyword arguments)."""
    import reasoning_gym
    from reasoning_gym.utils import SYSTEM_PROMPTS

    dataset = reasoning_gym.create_dataset(name, size=size, seed=seed, **config)
    system = SYSTEM_PROMPTS[system_prompt]
    rows = []
    for entry in dataset:
        entry = json.loads(json.dumps(entry, default=str))  # plain JSON (tuples become lists), as the file holds it
        prompt = [{"role": "system", "content": system}, {"role": "user", "content": entry["question"]}]
        rows.append({"prompt": prompt, "label": entry["answer"], "metadata": {ENTRY_KEY: entry}})
    return rows


def write_reasoning_gym(path: str | Path, name: str, size: int, seed: int, **options: Any) -> Path:
    """Write `reasoning_gym_rows(...)` as jsonl at `path`, atomically (a temporary file renamed into place)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    write_jsonl_atomic(path, reasoning_gym_rows(name, size, seed, **options))
    return path


def _config_value(text: str) -> tuple[str, Any]:
    key, sep, value = text.partition("=")
    if not sep:
        raise argparse.ArgumentTypeError(f"--config wants key=value, got {text!r}")
    try:
        return key, json.loads(value)
    except json.JSONDecodeError:
        return key, value


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m rlpipe.data.reasoning_gym", description=__doc__.split("\n")[0])
    parser.add_argument("name", help="reasoning-gym dataset, e.g. basic_arithmetic, chain_sum, leg_counting")
    parser.add_argument("--size", type=int, required=True, help="problems to write")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", required=True, help="the .jsonl file to write")
    parser.add_argument("--system-prompt", default="default", help="a key of reasoning_gym.utils.SYSTEM_PROMPTS")
    parser.add_argument("--config", type=_config_value, action="append", default=[], help="dataset field=value")
    args = parser.parse_args(argv)
    path = write_reasoning_gym(
        args.out, args.name, args.size, args.seed, system_prompt=args.system_prompt, **dict(args.config)
    )
    print(f"wrote {args.size} {args.name} problems to {path}")


if __name__ == "__main__":
    main()
