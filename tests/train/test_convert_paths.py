"""The converter checks its paths before importing torch or Megatron: each bad path exits with code 2 and one
message naming the path, with no traceback and nothing written. What it writes is readable per the umask."""

from __future__ import annotations

import json
import os
import stat
import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from train_helpers import make_tiny

from rlpipe.config.files import TRACKER_FILE
from rlpipe.tools.convert import main as convert

REPO = Path(__file__).resolve().parents[2]


def _fake_hf(folder: Path, weights: bool = True, config: str | None = '{"model_type": "qwen2"}') -> Path:
    """An HF-looking folder (config.json, tokenizer.json, an empty *.safetensors): enough for the path checks."""
    folder.mkdir(parents=True)
    if config is not None:
        (folder / "config.json").write_text(config)
    (folder / "tokenizer.json").write_text("{}")
    if weights:
        (folder / "model.safetensors").write_bytes(b"")
    return folder


def _fake_dist(folder: Path, tracker: str = "3", metadata: bool = True) -> Path:
    """A torch_dist-looking folder: tracker file and iter_0000003 with metadata.json and .metadata."""
    iteration = folder / "iter_0000003"
    iteration.mkdir(parents=True)
    (folder / TRACKER_FILE).write_text(tracker)
    if metadata:
        (iteration / "metadata.json").write_text("{}")
        (iteration / ".metadata").write_bytes(b"")
    return folder


def _snapshot(root: Path) -> list[str]:
    return sorted(str(p.relative_to(root)) for p in root.rglob("*"))


# Each case: build the paths under tmp, return (argv, the path the message must name).
Case = Callable[[Path], tuple[list[str], Path]]


def _missing_hf(tmp: Path) -> tuple[list[str], Path]:
    return ["hf-to-torch-dist", "--hf", str(tmp / "nope"), "--out", str(tmp / "out")], tmp / "nope"


def _hf_is_file(tmp: Path) -> tuple[list[str], Path]:
    (tmp / "model.bin").write_bytes(b"x")
    return ["hf-to-torch-dist", "--hf", str(tmp / "model.bin"), "--out", str(tmp / "out")], tmp / "model.bin"


def _hf_without_config(tmp: Path) -> tuple[list[str], Path]:
    hf = _fake_hf(tmp / "hf", config=None)
    return ["hf-to-torch-dist", "--hf", str(hf), "--out", str(tmp / "out")], hf


def _hf_bad_config(tmp: Path) -> tuple[list[str], Path]:
    hf = _fake_hf(tmp / "hf", config="{not json")
    return ["hf-to-torch-dist", "--hf", str(hf), "--out", str(tmp / "out")], hf / "config.json"


def _hf_without_weights(tmp: Path) -> tuple[list[str], Path]:
    hf = _fake_hf(tmp / "hf", weights=False)
    return ["hf-to-torch-dist", "--hf", str(hf), "--out", str(tmp / "out")], hf


def _out_is_file(tmp: Path) -> tuple[list[str], Path]:
    hf = _fake_hf(tmp / "hf")
    (tmp / "out").write_text("mine")
    return ["hf-to-torch-dist", "--hf", str(hf), "--out", str(tmp / "out")], tmp / "out"


def _out_non_empty(tmp: Path) -> tuple[list[str], Path]:
    hf = _fake_hf(tmp / "hf")
    (tmp / "out").mkdir()
    (tmp / "out" / "keep.txt").write_text("mine")
    return ["hf-to-torch-dist", "--hf", str(hf), "--out", str(tmp / "out")], tmp / "out"


def _out_inside_input(tmp: Path) -> tuple[list[str], Path]:
    hf = _fake_hf(tmp / "hf")
    return ["hf-to-torch-dist", "--hf", str(hf), "--out", str(hf / "dist")], hf / "dist"


def _out_holds_input(tmp: Path) -> tuple[list[str], Path]:
    hf = _fake_hf(tmp / "models" / "hf")
    return ["hf-to-torch-dist", "--hf", str(hf), "--out", str(tmp / "models"), "--overwrite"], tmp / "models"


def _out_under_a_file(tmp: Path) -> tuple[list[str], Path]:
    hf = _fake_hf(tmp / "hf")
    (tmp / "plain").write_text("x")
    return ["hf-to-torch-dist", "--hf", str(hf), "--out", str(tmp / "plain" / "out")], tmp / "plain" / "out"


def _missing_ckpt(tmp: Path) -> tuple[list[str], Path]:
    hf = _fake_hf(tmp / "hf")
    argv = ["torch-dist-to-hf", "--ckpt", str(tmp / "nope"), "--hf-config", str(hf), "--out", str(tmp / "out")]
    return argv, tmp / "nope"


def _ckpt_not_torch_dist(tmp: Path) -> tuple[list[str], Path]:
    hf = _fake_hf(tmp / "hf")
    argv = ["torch-dist-to-hf", "--ckpt", str(hf), "--hf-config", str(hf), "--out", str(tmp / "out")]
    return argv, hf


def _ckpt_bad_tracker(tmp: Path) -> tuple[list[str], Path]:
    dist, hf = _fake_dist(tmp / "dist", tracker="latest"), _fake_hf(tmp / "hf")
    argv = ["torch-dist-to-hf", "--ckpt", str(dist), "--hf-config", str(hf), "--out", str(tmp / "out")]
    return argv, dist / TRACKER_FILE


def _ckpt_incomplete(tmp: Path) -> tuple[list[str], Path]:
    dist, hf = _fake_dist(tmp / "dist", metadata=False), _fake_hf(tmp / "hf")
    argv = ["torch-dist-to-hf", "--ckpt", str(dist), "--hf-config", str(hf), "--out", str(tmp / "out")]
    return argv, dist / "iter_0000003"


def _missing_hf_config(tmp: Path) -> tuple[list[str], Path]:
    dist = _fake_dist(tmp / "dist")
    argv = ["torch-dist-to-hf", "--ckpt", str(dist), "--hf-config", str(tmp / "nope"), "--out", str(tmp / "out")]
    return argv, tmp / "nope"


def _back_out_inside_ckpt(tmp: Path) -> tuple[list[str], Path]:
    dist, hf = _fake_dist(tmp / "dist"), _fake_hf(tmp / "hf")
    argv = ["torch-dist-to-hf", "--ckpt", str(dist), "--hf-config", str(hf), "--out", str(dist / "hf")]
    return argv, dist / "hf"


def _back_out_non_empty(tmp: Path) -> tuple[list[str], Path]:
    dist, hf = _fake_dist(tmp / "dist"), _fake_hf(tmp / "hf")
    _fake_hf(tmp / "out")
    argv = ["torch-dist-to-hf", "--ckpt", str(dist), "--hf-config", str(hf), "--out", str(tmp / "out")]
    return argv, tmp / "out"


CASES: list[Case] = [
    _missing_hf,
    _hf_is_file,
    _hf_without_config,
    _hf_bad_config,
    _hf_without_weights,
    _out_is_file,
    _out_non_empty,
    _out_inside_input,
    _out_holds_input,
    _out_under_a_file,
    _missing_ckpt,
    _ckpt_not_torch_dist,
    _ckpt_bad_tracker,
    _ckpt_incomplete,
    _missing_hf_config,
    _back_out_inside_ckpt,
    _back_out_non_empty,
]


@pytest.mark.parametrize("case", CASES, ids=lambda case: case.__name__.strip("_"))
def test_bad_path_exits_2_naming_it_and_writes_nothing(
    tmp_path: Path, case: Case, capsys: pytest.CaptureFixture[str]
) -> None:
    argv, named = case(tmp_path)
    before = _snapshot(tmp_path)
    with pytest.raises(SystemExit) as exited:
        convert(argv)
    assert exited.value.code == 2
    err = capsys.readouterr().err
    assert err.startswith("rlpipe convert: 1 problem with the paths") and str(named) in err, err
    assert "Traceback" not in err
    assert _snapshot(tmp_path) == before


def test_every_problem_in_one_message(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    (tmp_path / "out").write_text("mine")
    argv = ["torch-dist-to-hf", "--ckpt", str(tmp_path / "a"), "--hf-config", str(tmp_path / "b")]
    with pytest.raises(SystemExit) as exited:
        convert([*argv, "--out", str(tmp_path / "out")])
    assert exited.value.code == 2
    err = capsys.readouterr().err
    assert err.startswith("rlpipe convert: 3 problems with the paths")
    assert all(f"{flag} {tmp_path / name}:" in err for flag, name in [("--ckpt", "a"), ("--hf-config", "b")])
    assert f"--out {tmp_path / 'out'}: is an existing file" in err


def test_bad_paths_fail_before_torch_or_megatron_is_imported(tmp_path: Path) -> None:
    probe = (
        "import sys\n"
        "from rlpipe.tools.convert import main\n"
        "try:\n"
        f"    main(['hf-to-torch-dist', '--hf', {str(tmp_path / 'nope')!r}, '--out', {str(tmp_path / 'out')!r}])\n"
        "finally:\n"
        "    print(sorted(m for m in ('torch', 'megatron', 'transformers', 'safetensors') if m in sys.modules))\n"
    )
    done = subprocess.run([sys.executable, "-c", probe], cwd=REPO, capture_output=True, text=True, timeout=60)
    assert done.returncode == 2, done.stderr
    assert done.stdout.strip() == "[]"
    assert "Traceback" not in done.stderr and str(tmp_path / "nope") in done.stderr
    assert list(tmp_path.iterdir()) == []


@pytest.fixture
def umask_022() -> Iterator[None]:
    previous = os.umask(0o022)
    yield
    os.umask(previous)


def _modes(root: Path) -> dict[str, int]:
    return {str(p.relative_to(root.parent)): stat.S_IMODE(p.stat().st_mode) for p in [root, *root.rglob("*")]}


def test_written_checkpoints_are_readable_per_umask_and_replace_atomically(tmp_path: Path, umask_022: None) -> None:
    """Folders 0755 and files 0644 under umask 022, both directions; --overwrite swaps the old output for the new
    whole, and no temporary sibling is left behind."""
    hf_dir = make_tiny(tmp_path / "hf", "qwen2")
    (hf_dir / "tokenizer.json").write_text("{}")
    (hf_dir / "tokenizer.json").chmod(0o600)  # a private source file: its copy still gets the umask's mode
    (tmp_path / "dist").mkdir()
    (tmp_path / "dist" / "stale.txt").write_text("old")
    convert(["hf-to-torch-dist", "--hf", str(hf_dir), "--out", str(tmp_path / "dist"), "--overwrite"])
    convert(
        [
            "torch-dist-to-hf",
            "--ckpt",
            str(tmp_path / "dist"),
            "--hf-config",
            str(hf_dir),
            "--out",
            str(tmp_path / "back"),
        ]
    )
    assert not (tmp_path / "dist" / "stale.txt").exists()
    assert json.loads((tmp_path / "back" / "tokenizer.json").read_text()) == {}
    for out in (tmp_path / "dist", tmp_path / "back"):
        modes = _modes(out)
        wrong = {p: oct(m) for p, m in modes.items() if m != (0o755 if (tmp_path / p).is_dir() else 0o644)}
        assert wrong == {}, wrong
    assert sorted(p.name for p in tmp_path.iterdir()) == ["back", "dist", "hf"]
