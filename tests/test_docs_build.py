"""The plug-in API reference (docs/api, `pip install 'rlpipe[docs]'`) builds without a warning and documents every
plug-in entry point: a documented module or name that moves or disappears fails autodoc's import (an error under
-W) or the anchor checks below, and a new dotted-path config key fails until the index lists it."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from rlpipe.config.dotted import DOTTED_FIELDS
from rlpipe.config.schema import Group, RunConfig

ROOT = Path(__file__).resolve().parents[1]

# page -> the objects it must document (their HTML anchors are their full dotted names)
DOCUMENTED = {
    "samples": ["rlpipe.data.sample.Sample", "rlpipe.data.sample.Sample.last_turn_tokens", "rlpipe.data.sample.Status"],
    "rewards": [
        "rlpipe.reward.context.RewardContext",
        "rlpipe.reward.custom.reward_signature",
        "rlpipe.reward.custom.load_custom_reward",
    ],
    "rollout": [
        "rlpipe.rollout.generate.generate_rollout",
        "rlpipe.rollout.generate.RolloutSource",
        "rlpipe.rollout.generate.RolloutSource.generate_groups",
        "rlpipe.rollout.generate.RolloutSource.score_groups",
        "rlpipe.rollout.generate.sampling_params",
        "rlpipe.rollout.engine.SamplingParams",
        "rlpipe.data.dataset.PromptDataset.next_batch",
        "rlpipe.rollout.filters.check_reward_nonzero_std",
        "rlpipe.rollout.filters.check_no_aborted",
        "rlpipe.rollout.buffer.pop_first",
    ],
    "environments": [
        "rlpipe.rollout.env.Environment",
        "rlpipe.rollout.env.Environment.reset",
        "rlpipe.rollout.env.Environment.step",
        "rlpipe.rollout.env.StepResult",
        "rlpipe.rollout.env.ToolEnv",
        "rlpipe.rollout.tool_calls.ToolError",
        "rlpipe.rollout.env.calculator_env",
        "rlpipe.rollout.sandbox.python_env",
        "rlpipe.rollout.openenv.OpenEnvTools",
    ],
    "config": [
        "rlpipe.config.schema.RunConfig",
        "rlpipe.config.schema.RunConfig.sft_job",
        "rlpipe.config.schema.RolloutConfig.custom_rm_path",
        "rlpipe.config.schema.RolloutConfig.env",
        "rlpipe.config.schema.AlgoConfig.custom_loss_function_path",
        "rlpipe.config.schema.EvalDataset",
    ],
}


@pytest.fixture(scope="module")
def built(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("api")
    cmd = [sys.executable, "-m", "sphinx", "-b", "html", "-W", "--keep-going", "-q", "docs/api", str(out)]
    done = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, f"sphinx-build failed:\n{done.stdout}{done.stderr}"
    return out


@pytest.mark.parametrize("page", sorted(DOCUMENTED))
def test_page_documents_its_entry_points(built: Path, page: str) -> None:
    html = (built / f"{page}.html").read_text()
    missing = [name for name in DOCUMENTED[page] if f'id="{name}"' not in html]
    assert not missing, f"docs/api/{page}.rst no longer documents {missing}"


def test_index_lists_every_dotted_path_key(built: Path) -> None:
    html = (built / "index.html").read_text()
    missing = [key for key in DOTTED_FIELDS if key not in html]
    assert not missing, f"docs/api/index.rst's table lacks the plug-in keys {missing}"


def test_config_page_documents_every_group_and_field(built: Path) -> None:
    html = (built / "config.html").read_text()
    groups = [g for g in Group.__subclasses__() if g.__module__ == Group.__module__]
    assert RunConfig in groups
    missing = [
        f"{group.__name__}.{name}"
        for group in groups
        for name in ["", *group.model_fields]
        if f'id="rlpipe.config.schema.{group.__name__}{"." if name else ""}{name}"' not in html
    ]
    assert not missing, f"config.html lacks {missing}"
