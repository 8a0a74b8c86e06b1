"""Suite-wide setup: tests write only under temporary folders, never into the repo or the folder pytest runs from.

Hypothesis keeps its example database and constants cache in `./.hypothesis` unless told otherwise; here it goes
to a temporary folder removed at the end of the session (an explicit HYPOTHESIS_STORAGE_DIRECTORY still wins, for
whoever wants failing examples kept across runs).
"""

from __future__ import annotations

import os
import shutil
import tempfile

import pytest

_HYPOTHESIS_HOME: str | None = None


def pytest_configure(config: pytest.Config) -> None:
    global _HYPOTHESIS_HOME
    if os.environ.get("HYPOTHESIS_STORAGE_DIRECTORY"):
        return
    from hypothesis.configuration import set_hypothesis_home_dir

    _HYPOTHESIS_HOME = tempfile.mkdtemp(prefix="rlpipe-hypothesis-")
    set_hypothesis_home_dir(_HYPOTHESIS_HOME)


def pytest_unconfigure(config: pytest.Config) -> None:
    if _HYPOTHESIS_HOME is not None:
        shutil.rmtree(_HYPOTHESIS_HOME, ignore_errors=True)
