"""Bad input on the launch path: one clear message, exit code 2, nothing trained or written over."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from rlpipe.data.tiny_model import TinyModelSpec, build_tiny_checkpoint

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build_tiny_checkpoint(tmp_path_factory.mktemp("ckpt") / "tiny", TinyModelSpec())


def launch(tmp_path: Path, checkpoint: Path, data: Path, *extra: str) -> subprocess.CompletedProcess[str]:
    overrides = [
        "experiment=none", f"ckpt.hf_checkpoint={checkpoint}", f"rollout.prompt_data={data}",
        "rollout.rm_type=exact_match", "rollout.num_rollout=2", "rollout.apply_chat_template=true",
        f"output_dir={tmp_path / 'out'}", "model=auto", *extra,
    ]  # fmt: skip
    return subprocess.run(
        [sys.executable, str(ROOT / "launch.py"), *overrides], cwd=tmp_path, capture_output=True, text=True
    )


def test_malformed_line_names_the_file_and_line(tmp_path: Path, checkpoint: Path) -> None:
    data = tmp_path / "prompts.jsonl"
    good = json.dumps({"prompt": "r123", "label": "321"})
    data.write_text(f"{good}\n{good}\n{{not json\n")
    result = launch(tmp_path, checkpoint, data)
    assert result.returncode == 2, result.stderr[-2000:]
    assert f"{data}:3" in result.stderr and "Traceback" not in result.stderr


def test_missing_label_key_names_the_key_and_what_the_row_has(tmp_path: Path, checkpoint: Path) -> None:
    data = tmp_path / "prompts.jsonl"
    data.write_text(json.dumps({"prompt": "r123", "answer": "321"}) + "\n")
    result = launch(tmp_path, checkpoint, data)
    assert result.returncode == 2
    assert "'label'" in result.stderr and "answer" in result.stderr and f"{data}:1" in result.stderr


def test_checkpoint_without_tokenizer_is_a_config_error(tmp_path: Path, checkpoint: Path) -> None:
    bare = tmp_path / "bare"
    bare.mkdir()
    (bare / "config.json").write_text((checkpoint / "config.json").read_text())
    data = tmp_path / "prompts.jsonl"
    data.write_text(json.dumps({"prompt": "r123", "label": "321"}) + "\n")
    result = launch(tmp_path, bare, data)
    assert result.returncode == 2
    assert "ckpt.hf_checkpoint" in result.stderr and "tokenizer.json" in result.stderr
    assert not (tmp_path / "out").exists()  # failed before anything was written
