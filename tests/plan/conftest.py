"""The plan's recipes name a GPU cluster's files (/root/GLM-Z1-9B-0414, ...): its tests run as on that cluster."""

from __future__ import annotations

import pytest

from rlpipe.config.state import Resolver


@pytest.fixture
def on_the_cluster(monkeypatch: pytest.MonkeyPatch) -> None:
    """A GPU is visible, sglang is installed, and the files a recipe names exist (their checks only warn): what is
    left to refuse is the plan. (The checks of the machine and of files are tests/config's.)"""
    monkeypatch.setattr("rlpipe.config.limits.gpu_visible", lambda: True)
    monkeypatch.setattr("rlpipe.config.support.installed", lambda package: True)
    monkeypatch.setattr(Resolver, "path_problem", lambda self, key, message, fix, value=None: self.warn(key, message))
