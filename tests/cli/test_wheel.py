"""The wheel alone, without the checkout: built from the sources, installed into a fresh venv, run from an empty
folder. The configs come from the package data and `rlpipe` from the console-script entry point.

The fresh venv gets the wheel only (`--no-deps`); its dependencies come from the test venv through a .pth file, so
the test takes seconds instead of a multi-GB install. Only `rlpipe` itself is new, which is what is under test.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import sysconfig
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


def _check(command: list[str], cwd: Path) -> str:
    done = subprocess.run(command, cwd=cwd, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, f"{command}:\n{done.stdout[-2000:]}\n{done.stderr[-3000:]}"
    return done.stdout


@pytest.fixture(scope="module")
def installed(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A venv holding the built wheel; returns its bin folder."""
    tmp = tmp_path_factory.mktemp("wheel")
    src = tmp / "src"
    shutil.copytree(ROOT / "rlpipe", src / "rlpipe", ignore=shutil.ignore_patterns("__pycache__"))
    for name in ("pyproject.toml", "README.md"):
        shutil.copy(ROOT / name, src / name)
    _check([sys.executable, "-m", "build", "--wheel", "--outdir", str(tmp / "dist"), str(src)], tmp)
    (wheel,) = (tmp / "dist").glob("rlpipe-*.whl")
    venv = tmp / "venv"
    _check([sys.executable, "-m", "venv", "--without-pip", str(venv)], tmp)
    python = venv / "bin" / "python"
    _check([sys.executable, "-m", "pip", "--python", str(python), "install", "-q", "--no-deps", str(wheel)], tmp)
    purelib = _check([str(python), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"], tmp).strip()
    (Path(purelib) / "test_dependencies.pth").write_text(sysconfig.get_paths()["purelib"] + "\n")
    return venv / "bin"


@pytest.mark.slow
def test_wheel_runs_plan_and_the_demo_without_the_checkout(installed: Path, tmp_path: Path) -> None:
    where = _check([str(installed / "python"), "-c", "import rlpipe; print(rlpipe.__file__)"], tmp_path)
    assert where.startswith(str(installed.parent)), where  # the wheel's copy, not the checkout
    assert _check([str(installed / "rlpipe"), "--version"], tmp_path).startswith("rlpipe ")
    plan = _check(
        [str(installed / "rlpipe"), "plan", "+experiment=glm4-9b-dapo", "cluster.gpu=h100", "--json"], tmp_path
    )
    assert json.loads(plan)
    words = [
        "rollout.num_rollout=3", "warmup.steps=5", "log.progress=false", "run_name=wheel",
        f"output_dir={tmp_path / 'out'}", f"demo.cache_dir={tmp_path / 'cache'}",
    ]  # fmt: skip
    _check([str(installed / "rlpipe"), "train", *words], tmp_path)
    metrics = (tmp_path / "out" / "wheel" / "metrics.jsonl").read_text().splitlines()
    assert [r["rollout_id"] for r in map(json.loads, metrics) if r["phase"] == "train"] == [0, 1, 2]
    schemas = _check([str(installed / "rlpipe"), "schema", "--check"], tmp_path)  # shipped beside the configs
    assert "Traceback" not in schemas
    assert not (tmp_path / "conf").exists() and sorted(p.name for p in tmp_path.iterdir()) == ["cache", "out"]
