"""The add task's demo settings: `demo.task=add` on tiny-cpu's settings (3 digits, 40 warm-up steps) learns nothing,
and the run says so in its start-of-run warnings, pointing at conf/experiment/tiny-add.yaml, whose settings are
within what learns (2 digits, a long warm-up; measured in that file's header). Config only: nothing is built."""

from __future__ import annotations

import pytest

from rlpipe.config import load
from rlpipe.config.resolve import ADD_MAX_DIGITS, ADD_MIN_WARMUP_STEPS


def _add_warnings(overrides: list[str]) -> list[str]:
    return [w for w in load(overrides, check_paths=False).warnings if w.startswith("demo.task:")]


def test_add_on_tiny_cpu_settings_says_it_will_not_learn() -> None:
    (warning,) = _add_warnings(["demo.task=add"])
    assert "3 digits and 40 warm-up steps" in warning and "experiment=tiny-add" in warning


def test_tiny_add_experiment_is_within_what_learns() -> None:
    cfg = load(["experiment=tiny-add"], check_paths=False).cfg
    assert cfg.demo is not None and cfg.warmup is not None
    assert (cfg.demo.task, cfg.demo.digits, cfg.run_name) == ("add", 2, "tiny-add-d2")
    assert cfg.demo.digits <= ADD_MAX_DIGITS and cfg.warmup.steps >= ADD_MIN_WARMUP_STEPS
    assert _add_warnings(["experiment=tiny-add"]) == []


@pytest.mark.parametrize(
    "overrides", [[], ["demo.task=copy"], ["demo.task=add", "demo.digits=2", f"warmup.steps={ADD_MIN_WARMUP_STEPS}"]]
)
def test_no_warning_for_runs_that_learn(overrides: list[str]) -> None:
    assert _add_warnings(overrides) == []
