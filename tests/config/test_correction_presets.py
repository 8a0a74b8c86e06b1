"""The correction presets of conf/algo compose over GRPO and mean what their names say."""

from __future__ import annotations

import pytest

from rlpipe.config import load


@pytest.mark.parametrize(
    ("preset", "expected"),
    [
        ("icepop", {"use_tis": True, "tis_level": "token", "tis_mode": "mask", "tis_clip_low": 0.5, "tis_clip": 2.0}),
        ("mis", {"use_tis": True, "tis_level": "sequence", "tis_mode": "mask", "tis_clip_low": 0.5}),
        ("cispo", {"policy_loss": "cispo", "eps_clip_high": 4.0, "use_tis": False}),
    ],
)
def test_preset(preset: str, expected: dict) -> None:
    algo = load([f"algo={preset}", "cluster.accelerator=cpu"], check_paths=False).cfg.algo
    assert {key: getattr(algo, key) for key in expected} == expected
    assert algo.advantage_estimator == "grpo" and algo.use_kl_loss is False  # GRPO's own settings underneath
