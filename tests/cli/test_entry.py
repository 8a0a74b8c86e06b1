"""The `rlpipe` command beside `python launch.py`: one implementation (identical resolved configs), the verbs,
`--help`, Hydra's flags answered the Hydra way or with the rlpipe way, and a project's own config folder."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from rlpipe import __version__
from rlpipe.cli import entry, main
from rlpipe.config.keys import field_info, group_fields
from rlpipe.config.load import CONF_DIR

ROOT = Path(__file__).resolve().parents[2]
GLM = ["+experiment=glm4-9b-dapo", "cluster.gpu=h100"]


def _run(*words: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, *words], cwd=cwd, capture_output=True, text=True, timeout=300)


def test_entry_point_and_launch_py_resolve_the_same_config(tmp_path: Path) -> None:
    words = [*GLM, "rollout.n_samples=4", "rollout.global_batch_size=null", "optim.lr=2e-6", "--cfg", "job"]
    by_script = _run(str(ROOT / "launch.py"), *words, cwd=tmp_path)
    by_module = _run("-m", "rlpipe", "train", *words, cwd=tmp_path)
    assert by_script.returncode == by_module.returncode == 0, by_script.stderr + by_module.stderr
    assert by_script.stdout == by_module.stdout
    assert "n_samples: 4" in by_module.stdout and "lr: 2.0e-06" in by_module.stdout


def test_verbs_are_the_training_views(capsys: pytest.CaptureFixture[str]) -> None:
    assert main([*GLM, "--plan"]) == 0
    plan = capsys.readouterr().out
    assert entry(["plan", *GLM]) == 0
    assert capsys.readouterr().out == plan and "GPU" in plan
    assert entry(["plan", *GLM, "--json"]) == 0
    assert capsys.readouterr().out.lstrip().startswith("{")
    assert main([*GLM, "--miles"]) == 0
    miles = capsys.readouterr().out
    assert entry(["export", *GLM]) == 0
    assert capsys.readouterr().out == miles and "--rollout-batch-size" in miles
    assert entry([*GLM, "--cfg", "job"]) == 0  # Hydra style: overrides straight after the command mean train
    assert "glm" in capsys.readouterr().out.lower()


def test_version_usage_and_unknown_verb(capsys: pytest.CaptureFixture[str]) -> None:
    assert entry(["--version"]) == 0 and capsys.readouterr().out == f"rlpipe {__version__}\n"
    assert main(["--version"]) == 0 and capsys.readouterr().out == f"rlpipe {__version__}\n"
    assert entry([]) == 0
    usage = capsys.readouterr().out
    assert all(verb in usage for verb in ("train", "plan", "import", "export", "convert", "launcher", "completion"))
    assert entry(["trian"]) == 2
    assert "did you mean `rlpipe train`" in capsys.readouterr().err


def test_help_lists_groups_options_main_keys_and_pointers(capsys: pytest.CaptureFixture[str]) -> None:
    assert entry(["train", "--help"]) == 0
    text = capsys.readouterr().out
    assert text.startswith("usage: rlpipe train")
    for group in ("model", "algo", "experiment", "perf"):
        options = sorted(p.stem for p in (CONF_DIR / group).glob("*.yaml"))
        line = next(line for line in text.splitlines() if line.strip().startswith(group + " "))
        assert all(o in line or o in text for o in options), (group, options)
    description = field_info("rollout.n_samples").description.split(". ")[0]  # type: ignore[union-attr]
    n_samples = next(line for line in text.splitlines() if line.strip().startswith("rollout.n_samples"))
    assert description.split()[0] in n_samples
    for pointer in ("--cfg job", "--plan", "--miles", "docs/config.md", "--info", "-m"):
        assert pointer in text, pointer


def test_help_of_a_group_lists_every_key(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["--help", "rollout"]) == 0
    text = capsys.readouterr().out
    keys = [key for key, _ in group_fields("rollout")]
    assert len(keys) > 20 and all(f"  {key}" in text for key in keys)
    assert main(["--help", "rolout"]) == 2
    assert "no such group" in capsys.readouterr().err


@pytest.mark.parametrize(
    ("words", "says"),
    [
        (["--cfg", "all"], "--cfg job prints the whole resolved config"),
        (["--cfg", "hydra"], "--cfg job"),
        (["-cn", "glm"], "+experiment=NAME"),
        (["--config-path", "x"], "--config-dir DIR"),
        (["--hydra-help"], "output_dir/run_name"),
        (["--resolve"], "add --cfg job"),
        (["-p", "rollout"], "add --cfg job"),
        (["--cfg", "job", "--plan"], "give one of them"),
        (["--launcher=ray"], "add -m"),
        (["--plna"], "did you mean --plan?"),
        (["--info=tree"], "expected one of"),
    ],
)
def test_hydra_flags_get_the_rlpipe_answer(words: list[str], says: str, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(words) == 2
    assert says in capsys.readouterr().err


def test_cfg_job_with_resolve_and_package(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["rollout.n_samples=3", "--cfg", "job", "--resolve", "-p", "rollout"]) == 0
    text = capsys.readouterr().out
    assert text.startswith("rollout:\n") and "  n_samples: 3" in text and "\noptim:" not in text
    assert main(["--cfg", "job", "--package", "rollout.n_sample"]) == 2
    assert "rollout.n_samples" in capsys.readouterr().err  # the nearest key


def test_info_shows_hydra_search_path_and_defaults_tree(tmp_path: Path) -> None:
    (tmp_path / "conf" / "experiment").mkdir(parents=True)
    shown = _run("-m", "rlpipe", "train", "model=tiny-moe", "--info", "all", cwd=tmp_path)
    assert shown.returncode == 0, shown.stderr
    assert str(CONF_DIR) in shown.stdout and str(tmp_path / "conf") in shown.stdout  # the search path
    assert "model: tiny-moe" in shown.stdout and "experiment: tiny-cpu" in shown.stdout  # the defaults tree


def test_a_projects_own_conf_folder_and_config_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    mine = tmp_path / "conf" / "experiment"
    mine.mkdir(parents=True)
    text = (
        (CONF_DIR / "experiment" / "tiny-cpu.yaml").read_text().replace("run_name: tiny-${demo.task}", "run_name: mine")
    )
    (mine / "mine.yaml").write_text(text)
    elsewhere = tmp_path / "more" / "experiment"
    elsewhere.mkdir(parents=True)
    (elsewhere / "other.yaml").write_text(text.replace("run_name: mine", "run_name: other"))
    monkeypatch.chdir(tmp_path)
    assert main(["+experiment=mine", "--cfg", "job"]) == 0
    assert main(["+experiment=other", "--config-dir", str(tmp_path / "more"), "--cfg", "job"]) == 0
    assert main(["+experiment=other", "--cfg", "job"]) == 2  # not on the search path without --config-dir
    shutil.copy(CONF_DIR / "experiment" / "tiny-cpu.yaml", mine)  # a byte-identical copy reads the same: fine
    assert main(["--cfg", "job"]) == 0
    (mine / "tiny-cpu.yaml").write_text(text)  # named like a shipped experiment, but edited: would never be read
    assert main(["--cfg", "job"]) == 2


def test_cfg_job_prints_non_ascii_as_typed(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["run_name='Réponse'", "--cfg", "job", "-p", "run_name"]) == 0
    assert capsys.readouterr().out == "run_name: Réponse\n"
