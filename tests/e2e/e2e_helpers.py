"""Running launch.py on the embedded default in a subprocess (Megatron keeps process-global state), and reading
back what a run logged."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def launch(tmp_path: Path, *overrides: str) -> subprocess.CompletedProcess[str]:
    """`python launch.py` with outputs and the demo cache under tmp_path, no progress bars, then `overrides`."""
    args = [f"output_dir={tmp_path / 'out'}", f"demo.cache_dir={tmp_path / 'cache'}", "log.progress=false"]
    return subprocess.run(
        [sys.executable, str(ROOT / "launch.py"), *args, *overrides],
        cwd=tmp_path, capture_output=True, text=True, timeout=600,
    )  # fmt: skip


def records(tmp_path: Path, run_name: str, phase: str) -> list[dict]:
    """The metrics.jsonl records of one phase ("train", "warmup", ...) of the run `run_name`."""
    path = tmp_path / "out" / run_name / "metrics.jsonl"
    return [r for r in map(json.loads, path.read_text().splitlines()) if r["phase"] == phase]
