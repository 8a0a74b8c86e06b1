"""The plan's trainer memory against torch's memory profiler on a real step (bench/plan_vs_measured.py): optimizer
state and the step's peak within 15 % for a dense, a GQA, a MoE and a recomputing config."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "bench"))

import plan_vs_measured as bench

CONFIGS = ["dense MHA (Llama)", "dense GQA (Qwen2)", "MoE (Qwen3-MoE, 8 experts, top-2)", "dense GQA, full recompute"]


@pytest.mark.parametrize("name", CONFIGS)
def test_plan_is_within_15_percent_of_the_measured_step(world_of_one, tmp_path: Path, name: str) -> None:
    row = bench.measure(name, tmp_path)
    for term in ("optimizer", "step"):
        measured, planned = row[term]
        assert abs(planned / measured - 1) <= 0.15, (term, measured, planned)
