"""The user-facing surface: schema documentation, `--cfg job`, `--help`, sweeps, and what a bad config
costs from the shell (exit code 2, no traceback, none of torch / Ray / Megatron / SGLang imported).

Subprocess tests are few and each checks several promises, because each costs a fresh interpreter.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml
from pydantic import BaseModel

from rlpipe.cli import main
from rlpipe.config import ConfigError, load, schema
from rlpipe.config.render import to_yaml
from rlpipe.sweep import sweep_points

ROOT = Path(__file__).resolve().parents[2]
HEAVY = ("torch", "ray", "megatron", "sglang", "transformers")


def launch(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    """`python -X importtime launch.py ARGS` run from `cwd` (a test's tmp_path: the run's relative outputs/ and
    .cache/ would land there, never in the repo); the import log goes to stderr, before any message."""
    cmd = [sys.executable, "-X", "importtime", str(ROOT / "launch.py"), *args]
    return subprocess.run(cmd, cwd=cwd, capture_output=True, text=True, timeout=120)


def imported(stderr: str) -> set[str]:
    """Top-level packages named in an `-X importtime` log."""
    return {
        line.rsplit("|", 1)[1].strip().split(".")[0] for line in stderr.splitlines() if line.startswith("import time:")
    }


def message(stderr: str) -> str:
    return "\n".join(line for line in stderr.splitlines() if not line.startswith("import time:"))


# ------------------------------------------------------------------------------------------ schema docs
GROUP_CLASSES = [
    obj
    for obj in vars(schema).values()
    if isinstance(obj, type) and issubclass(obj, schema.Group) and obj is not schema.Group
]


def _group_of(annotation: Any) -> type[BaseModel] | None:
    return annotation if isinstance(annotation, type) and issubclass(annotation, schema.Group) else None


@pytest.mark.parametrize("cls", GROUP_CLASSES, ids=[c.__name__ for c in GROUP_CLASSES])
def test_every_field_has_a_one_line_description_and_a_miles_flag_entry(cls: type[BaseModel]) -> None:
    assert (cls.__doc__ or "").strip(), f"{cls.__name__} has no docstring"
    for name, info in cls.model_fields.items():
        if _group_of(info.annotation) is not None:
            continue  # a whole group (`model: ModelConfig`): documented by its class docstring, checked above
        assert info.description and info.description.strip(), f"{cls.__name__}.{name} has no description"
        assert "\n" not in info.description, f"{cls.__name__}.{name}: description is not one line"
        extra = info.json_schema_extra
        assert isinstance(extra, dict) and "miles" in extra, f"{cls.__name__}.{name}: no `miles` flag entry (F())"


def test_batch_sizes_say_prompts_or_samples() -> None:
    """The four knobs mix units: prompts per rollout, samples per step. Each description says which."""
    units = {
        (schema.RolloutConfig, "batch_size"): "prompts",
        (schema.RolloutConfig, "over_sampling_batch_size"): "prompts",
        (schema.RolloutConfig, "n_samples"): "samples",
        (schema.RolloutConfig, "global_batch_size"): "samples",
        (schema.EvalConfig, "n_samples"): "samples",
        (schema.PerfConfig, "micro_batch_size"): "samples",
        (schema.PerfConfig, "max_tokens_per_gpu"): "tokens",
    }
    for (cls, name), unit in units.items():
        assert unit in cls.model_fields[name].description, (cls.__name__, name)


# ------------------------------------------------------------------------------------ --cfg job, --help
def test_cfg_job_prints_every_derived_value_with_its_reason(capsys) -> None:
    assert main(["--cfg", "job"]) == 0
    out = capsys.readouterr().out
    run = load([], check_paths=False)
    config_lines = [line for line in out.splitlines() if not line.startswith("#")]
    for d in run.derivations:
        if d.key.startswith("topology."):
            assert f"#   {d.key.split('.', 1)[1]}: {d.value}" in out
        else:
            leaf = d.key.rsplit(".", 1)[1]
            assert any(
                line.strip().startswith(f"{leaf}:") and line.endswith(f"# {d.reason}") for line in config_lines
            ), d
    assert "global_batch_size: 64  # derived: batch_size 8 x n_samples 8 / num_steps_per_rollout 1" in out
    assert yaml.safe_load(out) == run.cfg.model_dump(mode="json")  # the comments ride on valid YAML
    assert out == to_yaml(run)


def test_cfg_job_of_a_recipe_lists_its_warnings(capsys) -> None:
    assert main(["experiment=glm4-9b-dapo", "--cfg", "job"]) == 0  # /root paths are absent here: warnings
    out = capsys.readouterr().out
    assert "# warning: ckpt.hf_checkpoint: folder does not exist (/root/GLM-Z1-9B-0414)" in out
    assert "#   num_engines: 2" in out


def test_flags_in_process(capsys) -> None:
    assert main(["--help"]) == 0
    assert "--cfg job" in capsys.readouterr().out
    assert main(["--bogus"]) == 2
    assert "unknown flag --bogus" in capsys.readouterr().err
    assert main(["rollout.n_sample=8"]) == 2
    assert "did you mean `rollout.n_samples`?" in capsys.readouterr().err
    with pytest.raises(ConfigError):  # --traceback lets the exception (and its traceback) through
        main(["rollout.n_sample=8", "--traceback"])


# ------------------------------------------------------------------------------------------------ sweeps
def test_sweep_points_are_the_cartesian_product() -> None:
    points = sweep_points(["optim.lr=1e-3,3e-3", "rollout.n_samples=4,8", "seed=7"])
    assert len(points) == 4
    assert {tuple(p) for p in points} == {
        (f"optim.lr={lr}", f"rollout.n_samples={n}", "seed=7") for lr in ("0.001", "0.003") for n in (4, 8)
    }
    for point in points:  # each point is a plain override list that loads
        run = load(point)
        assert run.cfg.optim.lr in (1e-3, 3e-3) and run.cfg.rollout.n_samples in (4, 8)


def test_sweep_of_group_options() -> None:
    assert sweep_points(["algo=grpo,gspo", "optim.lr=1e-3"]) == [
        ["algo=grpo", "optim.lr=1e-3"],
        ["algo=gspo", "optim.lr=1e-3"],
    ]


def test_sweep_with_one_bad_point_starts_nothing(tmp_path: Path) -> None:
    proc = launch("-m", "rollout.global_batch_size=64,50", "optim.lr=1e-3", cwd=tmp_path)
    assert proc.returncode == 2, proc.stdout + message(proc.stderr)
    err = message(proc.stderr)
    assert "sweep point rollout.global_batch_size=50 optim.lr=1e-3:" in err
    assert "rollout.global_batch_size=64 " not in err  # the good point is not reported
    assert "Traceback" not in err
    assert proc.stdout == ""  # no "sweep of N jobs", no "[1/2]": nothing started
    assert list(tmp_path.iterdir()) == []  # no multirun/ or outputs/ folder


def test_sweep_points_are_validated_in_the_folders_they_run_in(tmp_path: Path, monkeypatch, capsys) -> None:
    """A run in ./outputs with another learning rate does not block a learning-rate sweep: each point runs (and is
    checked) in its own multirun/<date>/<time>/<i>, where no earlier run lies."""
    from rlpipe.config.identity import write_identity

    monkeypatch.chdir(tmp_path)
    earlier = load(["demo.cache_dir=cache"]).cfg  # the default job, run earlier in this folder
    write_identity(tmp_path / "outputs" / "tiny-reverse", earlier.model_dump())
    (tmp_path / "outputs" / "tiny-reverse" / "metrics.jsonl").write_text('{"phase": "train", "rollout_id": 0}\n')
    started: list[list[str]] = []
    monkeypatch.setattr("rlpipe.sweep.subprocess.call", lambda cmd, env: started.append(cmd) or 0)
    assert main(["-m", "optim.lr=1e-3,3e-3", "demo.cache_dir=cache"]) == 0, capsys.readouterr().err
    assert [cmd[-3:] for cmd in started] == [
        ["optim.lr=0.001", "demo.cache_dir=cache", started[0][-1]],
        ["optim.lr=0.003", "demo.cache_dir=cache", started[1][-1]],
    ]
    assert started[0][-1].startswith("output_dir=multirun/") and started[0][-1].endswith("/0")
    assert started[1][-1].endswith("/1")


# ----------------------------------------------------------------------------------- the shell's view
@pytest.mark.parametrize(
    ("args", "words"),
    [
        (["rollout.n_sample=8"], ["rollout.n_sample: unknown key", "did you mean `rollout.n_samples`?"]),
        (["rollout.batch_size=0", "optim.lr=abc"], ["2 problems", "rollout.batch_size (got 0)", "optim.lr"]),
        (
            [
                "cluster.backend=ray",
                "cluster.colocate=true",
                "rollout.mode=async",
                "rollout.dynamic_sampling_filter_path=cfgtest_x.keep",
            ],
            ["2 problems", "rollout.mode (got 'async')", "rollout.dynamic_sampling_filter_path", "does not import"],
        ),
    ],
    ids=["unknown-key", "bad-values", "rules-and-dotted-path"],
)
def test_bad_config_exits_2_without_traceback_or_heavy_imports(
    args: list[str], words: list[str], tmp_path: Path
) -> None:
    proc = launch(*args, cwd=tmp_path)
    err = message(proc.stderr)
    assert proc.returncode == 2, err
    assert proc.stdout == ""
    assert "Traceback" not in err
    for w in words:
        assert w in err, err
    modules = imported(proc.stderr)
    assert {"hydra", "pydantic", "rlpipe"} <= modules  # the import log was read
    assert not modules & set(HEAVY), f"imported on the error path: {modules & set(HEAVY)}"
    assert list(tmp_path.iterdir()) == []  # a rejected config writes nothing


def test_cfg_job_and_help_from_the_shell(tmp_path: Path) -> None:
    proc = launch("--cfg", "job", cwd=tmp_path)
    assert proc.returncode == 0, message(proc.stderr)
    assert "# derived: batch_size" in proc.stdout
    assert not imported(proc.stderr) & set(HEAVY)
    assert list(tmp_path.iterdir()) == []  # printing the config starts nothing
    helped = subprocess.run(
        [sys.executable, str(ROOT / "launch.py"), "--help"], cwd=tmp_path, capture_output=True, text=True
    )
    assert helped.returncode == 0 and "--multirun, -m" in helped.stdout


def test_config_reference_is_generated_from_the_schema() -> None:
    """docs/config.md is `python -m rlpipe.config.docs`'s output: regenerate it when the schema changes."""
    from rlpipe.config.docs import render

    committed = (Path(__file__).resolve().parents[2] / "docs" / "config.md").read_text()
    assert committed == render(), "docs/config.md is stale: python -m rlpipe.config.docs > docs/config.md"


def test_start_of_run_table_folds_inherited_eval_fields_into_one_row() -> None:
    from rlpipe.config import load
    from rlpipe.config.render import derived_rows

    rows = {key: (value, why) for key, value, why in derived_rows(load([]))}
    value, why = rows["eval.datasets.reverse"]
    assert "temperature=0.0" in value and "max_response_len=8" in value and why.startswith("inherited")
    assert not any(key.startswith("eval.datasets.reverse.") for key in rows)  # each field is in that one row
    assert rows["eval.datasets"][0] == "{reverse}"
    assert rows["rollout.global_batch_size"] == ("64", "derived: batch_size 8 x n_samples 8 / num_steps_per_rollout 1")


def test_a_key_given_twice_warns_and_the_last_value_wins(recipe: list[str]) -> None:
    """Hydra's rule (the last one wins) is kept for wrapper scripts that append overrides, but said out loud."""
    run = load([*recipe, "rollout.n_samples=4", "rollout.n_samples=8"])
    assert run.cfg.rollout.n_samples == 8
    assert "rollout.n_samples: given 2 times (rollout.n_samples=4, rollout.n_samples=8); the last one is used" in (
        run.warnings
    )
