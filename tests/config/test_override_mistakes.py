"""The common Hydra slips get one problem each, naming the override and what to type instead."""

from __future__ import annotations

import pytest

from rlpipe.config import ConfigError, load


@pytest.mark.parametrize(
    ("override", "message", "fix"),
    [
        ("optim.lr=1e-3,3e-3", "a comma list is a sweep over 2 values", "rlpipe train -m optim.lr=1e-3,3e-3"),
        ("lora.target_modules=q_proj,v_proj", "sweep over 2 values", "\"lora.target_modules='q_proj,v_proj'\""),
        ("model=tiny,tiny-moe", "sweep over 2 values", "-m model=tiny,tiny-moe"),
        ("+rollout.n_samples=8", "rollout.n_samples is already set", "write rollout.n_samples=8"),
        ("+model=tiny-moe", "model is already chosen", "write model=tiny-moe"),
        ("++model=tiny-moe", "a group is chosen without it", "write model=tiny-moe"),
        ("run_name=Réponse", "'é' in a value only inside quotes", "\"run_name='Réponse'\""),
        ("rollout.n_samples", "is not an override", "key=value"),
    ],
)
def test_hydra_slip_says_what_to_type(override: str, message: str, fix: str) -> None:
    with pytest.raises(ConfigError) as caught:
        load([override], check_paths=False)
    (problem,) = caught.value.problems
    assert problem.key == override
    assert message in problem.message and fix in problem.fix, problem.render()


def test_the_suggested_spellings_work() -> None:
    """Each fix above, typed as suggested (the shell's outer quotes removed), composes."""
    run = load(
        ["lora.target_modules='q_proj,v_proj'", "run_name='Réponse'", "++rollout.n_samples=8"], check_paths=False
    )
    assert run.cfg.lora.target_modules == "q_proj,v_proj" and run.cfg.run_name == "Réponse"
    assert run.cfg.rollout.n_samples == 8


def test_unknown_group_option_in_a_comma_list_is_named_first() -> None:
    with pytest.raises(ConfigError) as caught:
        load(["perf=default,tp3"], check_paths=False)
    (problem,) = caught.value.problems
    assert problem.key == "perf" and "no option `tp3`" in problem.message
