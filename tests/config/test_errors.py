"""Bad input before resolution: unknown keys (CLI and YAML) with did-you-mean, unknown group options,
wrong types and out-of-range sizes. Each table row lists every problem expected, all reported at once."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from rlpipe.config import CONF_DIR

# (overrides, [(key, words of the message, words of the fix), ...]) -- exactly these problems
BAD_INPUT = {
    "cli-typo": (["rollout.n_sample=8"], [("rollout.n_sample", "unknown key", "did you mean `rollout.n_samples`?")]),
    "cli-typo-with-plus": (
        ["+rollout.n_sample=8"],
        [("rollout.n_sample", "unknown key", "did you mean `rollout.n_samples`?")],
    ),
    "cli-typos-all-at-once": (
        ["rollout.n_sample=8", "rollout.batchsize=3", "perf.tensor_paralel=2", "rollout.samples=3", "foo=1"],
        [
            ("rollout.n_sample", "unknown key", "`rollout.n_samples`"),
            ("rollout.batchsize", "unknown key", "`rollout.batch_size`"),
            ("perf.tensor_paralel", "unknown key", "`perf.tensor_parallel`"),
            ("rollout.samples", "unknown key", "`rollout.n_samples`"),
            ("foo", "unknown key", "valid top-level keys: algo, ckpt"),
        ],
    ),
    "cli-eval-dataset-field-typo": (
        ["eval.datasets.aime.pth=/x.jsonl"],
        [("eval.datasets.aime.pth", "unknown key", "did you mean `eval.datasets.aime.path`?")],
    ),
    "cli-hydra-setting": (["hydra.run.dir=x"], [("hydra.run.dir", "not used by rlpipe", "remove")]),
    "cli-not-an-override": (["rollout.n_samples"], [("rollout.n_samples", "is not an override", "key=value")]),
    "unknown-model": (
        ["model=qwen9"],
        [("model", "no option `qwen9` in conf/model/", "options: auto, glm4-9B, llama3-8B, qwen2.5-0.5B")],
    ),
    "unknown-experiment-near-miss": (
        ["experiment=glm4-9b"],
        [("experiment", "no option `glm4-9b`", "did you mean `experiment=glm4-9b-dapo`?")],
    ),
    "unknown-option-in-sweep": (["perf=default,tp3"], [("perf", "no option `tp3`", "tp2")]),
    "wrong-types-all-at-once": (
        [
            "rollout.n_samples=abc",
            "rollout.batch_size=2.5",
            "cluster.colocate=maybe",
            "optim.lr=fast",
            "algo.advantage_estimator=ppo2",
            "rollout.stop_token_ids=7",
        ],
        [
            ("rollout.n_samples", "expected a whole number", "rollout.n_samples"),
            ("rollout.batch_size", "expected a whole number, not a fraction", "rollout.batch_size"),
            ("cluster.colocate", "expected true or false", "cluster.colocate"),
            ("optim.lr", "expected a number", "optim.lr"),
            ("algo.advantage_estimator", "must be one of 'grpo', 'gspo'", "algo.advantage_estimator"),
            ("rollout.stop_token_ids", "expected a list", "rollout.stop_token_ids"),
        ],
    ),
    "zero-and-negative-sizes-all-at-once": (
        [
            "rollout.batch_size=0",
            "rollout.n_samples=-1",
            "rollout.max_response_len=0",
            "perf.tensor_parallel=0",
            "cluster.actor_num_gpus_per_node=-2",
            "perf.max_tokens_per_gpu=-5",
            "optim.lr=0",
            "rollout.temperature=-0.5",
            "rollout.top_p=1.5",
        ],
        [
            ("rollout.batch_size", "must be greater than 0", "rollout.batch_size"),
            ("rollout.n_samples", "must be greater than 0", "rollout.n_samples"),
            ("rollout.max_response_len", "must be greater than 0", "rollout.max_response_len"),
            ("perf.tensor_parallel", "must be greater than 0", "perf.tensor_parallel"),
            ("cluster.actor_num_gpus_per_node", "must be greater than 0", "cluster.actor_num_gpus_per_node"),
            ("perf.max_tokens_per_gpu", "must be greater than 0", "perf.max_tokens_per_gpu"),
            ("optim.lr", "must be greater than 0", "optim.lr"),
            ("rollout.temperature", "must be at least 0", "rollout.temperature"),
            ("rollout.top_p", "must be at most 1", "rollout.top_p"),
        ],
    ),
}


def _check(found, expect) -> None:
    assert sorted(p.key for p in found) == sorted(k for k, _, _ in expect), [p.render() for p in found]
    for key, message, fix in expect:
        assert any(p.key == key and message in p.message and fix in p.fix for p in found), (
            key,
            [p.render() for p in found],
        )


@pytest.mark.parametrize("name", list(BAD_INPUT))
def test_bad_input(name: str, problems) -> None:
    overrides, expect = BAD_INPUT[name]
    _check(problems(overrides), expect)


def test_cli_typo_never_suggests_hydra_plus(problems) -> None:
    """Hydra's own message for a typo suggests `+rollout.n_sample`, which would add a key nobody reads."""
    for override in ("rollout.n_sample=8", "+rollout.n_sample=8", "++rollout.n_sample=8"):
        (found,) = problems([override])
        assert "+rollout" not in found.render(), found.render()


def test_bad_values_show_what_was_given(problems) -> None:
    (found,) = problems(["rollout.batch_size=0"])
    assert found.render() == (
        "  - rollout.batch_size (got 0): must be greater than 0\n      fix: set rollout.batch_size to a valid value"
    )


@pytest.fixture
def conf_copy(tmp_path: Path) -> Path:
    """A copy of conf/ with YAML files that contain typos (the real conf/ stays untouched)."""
    conf = tmp_path / "conf"
    shutil.copytree(CONF_DIR, conf)
    (conf / "experiment" / "typo.yaml").write_text(
        "# @package _global_\nrollout:\n  n_sample: 8\n  temprature: 0.5\neval:\n  datasets:\n"
        "    aime:\n      pth: /x.jsonl\n"
    )
    (conf / "perf" / "typo.yaml").write_text("tensor_paralel: 2\n")
    return conf


@pytest.mark.parametrize(
    ("overrides", "expect"),
    [
        (
            ["experiment=typo"],
            [
                ("rollout.n_sample", "unknown key", "did you mean `rollout.n_samples`?"),
                ("rollout.temprature", "unknown key", "did you mean `rollout.temperature`?"),
                ("eval.datasets.aime.pth", "unknown key", "did you mean `eval.datasets.aime.path`?"),
                ("eval.datasets.aime.path", "is required", "eval.datasets.aime.path"),
            ],
        ),
        (["perf=typo"], [("perf.tensor_paralel", "unknown key", "did you mean `perf.tensor_parallel`?")]),
    ],
    ids=["experiment-yaml", "group-yaml"],
)
def test_unknown_keys_in_yaml(overrides, expect, conf_copy: Path, problems) -> None:
    _check(problems(overrides, conf_dir=conf_copy, check_paths=False), expect)
