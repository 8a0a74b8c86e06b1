"""Dotted-path plug-ins are checked in a child process: a module that hangs, exits or raises on import becomes a
config problem naming its key, within the import timeout; a good one loads without being imported here."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

from rlpipe.cli import main
from rlpipe.config import load

FILTER = "rollout.dynamic_sampling_filter_path"


def _module(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, name: str, source: str) -> str:
    """Write `name.py` into tmp_path, put tmp_path on sys.path (undone after the test); returns `name.keep`."""
    (tmp_path / f"{name}.py").write_text(source + "\ndef keep(cfg, samples):\n    return True\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    return f"{name}.keep"


@pytest.mark.parametrize(
    ("name", "source", "words"),
    [
        ("exit", "import sys\nsys.exit(3)\n", "importing it called sys.exit(3)"),
        ("system_exit", "raise SystemExit('bye')\n", "importing it called sys.exit('bye')"),
        ("interrupt", "raise KeyboardInterrupt\n", "importing it raised KeyboardInterrupt"),
        ("raises", "raise RuntimeError('needs a GPU')\n", "importing it raised RuntimeError: needs a GPU"),
        ("os_exit", "import os\nos._exit(5)\n", "importing it ended the process (exit code 5)"),
    ],
)
def test_module_that_exits_or_raises_on_import(tmp_path, monkeypatch, recipe, problems, name, source, words) -> None:
    path = _module(tmp_path, monkeypatch, f"cfgtest_iso_{name}", source)
    (found,) = problems([*recipe, f"{FILTER}={path}"])
    assert (found.key, found.value) == (FILTER, path)
    assert words in found.message, found.render()


def test_module_that_blocks_on_import_is_a_problem_after_the_timeout(tmp_path, monkeypatch, recipe, problems) -> None:
    monkeypatch.setenv("RLPIPE_IMPORT_TIMEOUT_S", "3")  # the good module's check must fit in it on a busy machine
    hangs = _module(tmp_path, monkeypatch, "cfgtest_iso_hangs", "import time\ntime.sleep(3600)\n")
    good = _module(tmp_path, monkeypatch, "cfgtest_iso_fine", "")
    (found,) = problems([*recipe, f"{FILTER}={hangs}", f"rollout.custom_rm_path={good}"])  # the other passes
    assert found.key == FILTER
    assert "did not finish importing within 3 s" in found.message and "RLPIPE_IMPORT_TIMEOUT_S" in found.message


def test_exit_on_import_is_exit_code_2_from_the_launcher(tmp_path, monkeypatch, recipe, capsys) -> None:
    path = _module(tmp_path, monkeypatch, "cfgtest_iso_cli_exit", "import sys\nsys.exit(3)\n")
    assert main([*recipe, f"{FILTER}={path}", "--cfg", "job"]) == 2
    err = capsys.readouterr().err
    assert FILTER in err and "sys.exit(3)" in err


def test_good_module_loads_without_being_imported_here(tmp_path, monkeypatch, recipe) -> None:
    """What a plug-in imports (torch, say) stays out of the launcher; its prints do not upset the check."""
    (tmp_path / "cfgtest_iso_heavy_dep.py").write_text("LOADED = True\n")
    path = _module(tmp_path, monkeypatch, "cfgtest_iso_good", "import cfgtest_iso_heavy_dep\nprint('hello')\n")
    run = load([*recipe, f"{FILTER}={path}"])
    assert run.cfg.rollout.dynamic_sampling_filter_path == path
    assert "cfgtest_iso_good" not in sys.modules and "cfgtest_iso_heavy_dep" not in sys.modules


def test_in_process_import_turns_sys_exit_into_a_value_error(tmp_path, monkeypatch) -> None:
    """The rollout side imports plug-ins in its own process: sys.exit() there is an error, not the end of it."""
    from rlpipe.config.dotted import import_dotted

    path = _module(tmp_path, monkeypatch, "cfgtest_iso_exit_here", "import sys\nsys.exit(4)\n")
    with pytest.raises(ValueError, match=r"importing it called sys.exit\(4\)"):
        import_dotted(path)
