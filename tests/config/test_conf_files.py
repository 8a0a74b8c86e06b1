"""Every YAML under conf/ resolves: each experiment as shipped, and each group option on top of the default.

Experiments name checkpoints under /root that CI does not have, so they load with check_paths=False (the
`--cfg job` mode: missing files become warnings). Options are found by listing conf/, so a new file is
tested without editing this module.
"""

from __future__ import annotations

from pathlib import Path

import pytest
from hf_folders import write_hf_folder

from rlpipe.config import CONF_DIR, Resolved, load

EXPERIMENTS = sorted(p.stem for p in (CONF_DIR / "experiment").glob("*.yaml"))
GROUP_OPTIONS = sorted(
    (folder.name, p.stem)
    for folder in CONF_DIR.iterdir()
    if folder.is_dir() and folder.name != "experiment"
    for p in folder.glob("*.yaml")
)

# What each recipe must resolve to: the headline numbers its header comment promises.
EXPERIMENT_FACTS: dict[str, dict[str, object]] = {
    "glm4-9b-dapo": {
        "rollout.global_batch_size": 128,
        "perf.tensor_parallel": 2,
        "perf.context_parallel": 2,
        "algo.eps_clip_high": 0.28,
        "topology.actor_gpus": 4,
        "topology.data_parallel": 1,
        "topology.num_engines": 2,
        "eval.datasets.aime.n_samples": 16,
        "eval.datasets.aime.max_response_len": 16384,
    },
    "colocate": {
        "rollout.global_batch_size": 128,
        "cluster.offload_train": True,
        "cluster.offload_rollout": True,
        "cluster.rollout_num_gpus": 8,
        "sglang.mem_fraction_static": 0.8,
        "sglang.extra": {"cuda_graph_backend_prefill": "disabled"},
        "topology.num_engines": 4,
    },
    "async": {"rollout.mode": "async", "cluster.colocate": False, "rollout.global_batch_size": 256},
    "qwen3-4b-fp8": {"rollout.num_steps_per_rollout": 1, "ckpt.hf_checkpoint": "/root/Qwen3-4B-FP8"},
    "dynamic-sampling": {"rollout.over_sampling_batch_size": 64, "rollout.partial_rollout": True},
    "tiny-cpu": {"topology.device": "cpu", "rollout.global_batch_size": 64, "model.name": "tiny"},
}


def _value_at(run: Resolved, key: str) -> object:
    node: object = run.cfg.model_dump() | {"topology": run.topology.model_dump()}
    for part in key.split("."):
        assert isinstance(node, dict)
        node = node[part]
    return node


def test_facts_name_real_experiments() -> None:
    assert set(EXPERIMENT_FACTS) <= set(EXPERIMENTS)


@pytest.mark.parametrize("name", [e for e in EXPERIMENTS if e != "none"])
def test_experiment_resolves(name: str) -> None:
    run = load([f"experiment={name}"], check_paths=False)
    for key, value in EXPERIMENT_FACTS.get(name, {}).items():
        assert _value_at(run, key) == value, key


def test_blank_experiment_asks_for_exactly_what_a_recipe_must_give(problems, recipe) -> None:
    found = problems(["experiment=none", "model=auto"], check_paths=False)  # as conf/experiment/none.yaml says
    assert sorted(p.key for p in found) == [
        "ckpt.hf_checkpoint",
        "rollout.num_rollout",
        "rollout.prompt_data",
        "rollout.rm_type",
    ]
    assert all(p.fix for p in found)
    assert load(recipe).cfg.demo is None  # given those four, it resolves


def test_root_config_resolves() -> None:
    assert load([]).cfg.demo is not None  # conf/config.yaml's default experiment is the offline demo


@pytest.mark.parametrize(("group", "option"), GROUP_OPTIONS, ids=[f"{g}={o}" for g, o in GROUP_OPTIONS])
def test_group_option_resolves(group: str, option: str, recipe: list[str], tmp_path: Path) -> None:
    """Each option on top of the default. Model options go on the blank recipe instead: the default demo
    builds its own tiny model; model=auto gets a checkpoint folder with a config.json to read."""
    overrides = [f"{group}={option}"]
    if group == "model":
        overrides = [*recipe, *overrides]
        if option == "auto":
            arch = {"model_type": "llama", "num_hidden_layers": 2, "hidden_size": 64, "intermediate_size": 128}
            arch |= {"num_attention_heads": 4, "num_key_value_heads": 2, "vocab_size": 100, "rope_theta": 1e4}
            ckpt = write_hf_folder(tmp_path / "auto-ckpt", arch | {"rms_norm_eps": 1e-5, "tie_word_embeddings": False})
            overrides = [o for o in overrides if not o.startswith("ckpt.hf_checkpoint=")]
            overrides.append(f"ckpt.hf_checkpoint={ckpt}")
        else:  # the recipe's config.json is the tiny model's: without it the option's own values stand
            (tmp_path / "hf" / "config.json").unlink()
    if (group, option) == ("perf", "tp2"):
        overrides += ["cluster.backend=ray", "cluster.actor_num_gpus_per_node=2"]  # TP 2: two trainer processes
    run = load(overrides, check_paths=False)
    if group == "model" and option != "auto":
        assert run.cfg.model.name == option
    assert run.cfg.model.num_layers is not None
