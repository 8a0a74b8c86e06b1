"""Property tests for the four-knob resolver: batch_size x n_samples == global_batch_size x num_steps_per_rollout.

Runs `resolve` on a composed config (the offline demo, so no files are needed) with the knobs replaced,
which costs ~2 ms per example instead of a full Hydra compose.
"""

from __future__ import annotations

import copy
from functools import cache
from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st

from rlpipe.config import ConfigError
from rlpipe.config.load import compose, validate
from rlpipe.config.resolve import Resolved, resolve

KNOBS = ("batch_size", "n_samples", "global_batch_size", "num_steps_per_rollout")
sizes = st.integers(min_value=1, max_value=256)


@cache
def _base() -> dict[str, Any]:
    # reinforce_plus_plus: n_samples 1 is then legal, so the knobs are the only rule that can object.
    return compose(["cluster.accelerator=cpu", "algo.advantage_estimator=reinforce_plus_plus"])


def _resolve(knobs: dict[str, int | None]) -> Resolved:
    raw = copy.deepcopy(_base())
    raw["rollout"].update(knobs)
    return resolve(validate(raw))


def _division(knobs: dict[str, int], missing: str) -> tuple[int, int]:
    """(numerator, denominator) that yields the missing knob, written independently of the resolver."""
    bs, n, gbs, steps = (knobs.get(k) for k in KNOBS)
    if missing == "batch_size":
        return gbs * steps, n
    if missing == "n_samples":
        return gbs * steps, bs
    if missing == "global_batch_size":
        return bs * n, steps
    return bs * n, gbs


@settings(max_examples=300, deadline=None)
@given(values=st.tuples(sizes, sizes, sizes, sizes), missing=st.sampled_from(KNOBS))
def test_three_knobs_fill_the_fourth_or_say_it_is_not_whole(values, missing) -> None:
    given_knobs = {k: v for k, v in zip(KNOBS, values, strict=True) if k != missing}
    numerator, denominator = _division(given_knobs, missing)
    try:
        run = _resolve({**given_knobs, missing: None})
    except ConfigError as exc:
        (problem,) = exc.problems
        assert numerator % denominator != 0, problem.render()
        assert problem.key == f"rollout.{missing}"
        assert f"= {numerator / denominator:g} is not a whole number" in problem.message
        assert all(f"{k} {v}" in problem.message for k, v in given_knobs.items())  # the arithmetic is shown
        return
    assert numerator % denominator == 0
    ro = run.cfg.rollout
    assert ro.batch_size * ro.n_samples == ro.global_batch_size * ro.num_steps_per_rollout
    assert all(getattr(ro, k) == v for k, v in given_knobs.items())  # the given three are untouched
    assert getattr(ro, missing) == numerator // denominator
    assert run.reason(f"rollout.{missing}").startswith("derived: ")


@settings(max_examples=200, deadline=None)
@given(values=st.tuples(sizes, sizes, sizes, sizes))
def test_four_knobs_are_checked(values) -> None:
    knobs = dict(zip(KNOBS, values, strict=True))
    bs, n, gbs, steps = values
    try:
        run = _resolve(knobs)
    except ConfigError as exc:
        (problem,) = exc.problems
        assert bs * n != gbs * steps
        assert f"= {bs * n} samples produced" in problem.message and f"= {gbs * steps} consumed" in problem.message
        return
    assert bs * n == gbs * steps
    assert not any(run.reason(f"rollout.{k}") for k in KNOBS)  # nothing derived when all four are given


@settings(max_examples=200, deadline=None)
@given(bs=sizes, n=sizes, data=st.data())
def test_dropping_any_knob_of_a_consistent_set_recovers_it(bs, n, data) -> None:
    """Round trip: from a consistent quadruple, whichever knob is left out is derived back exactly."""
    steps = data.draw(st.sampled_from([d for d in range(1, bs * n + 1) if (bs * n) % d == 0]))
    full = {"batch_size": bs, "n_samples": n, "global_batch_size": bs * n // steps, "num_steps_per_rollout": steps}
    missing = data.draw(st.sampled_from(KNOBS))
    run = _resolve({**full, missing: None})
    assert getattr(run.cfg.rollout, missing) == full[missing]
