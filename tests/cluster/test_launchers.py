"""Cluster launchers: the Slurm script runs under stub `scontrol`/`srun`/`ray start` on a simulated 3-node Ray
cluster (ray.cluster_utils: three raylets on this machine) and trains the tiny job there; the KubeRay RayJob
manifest uses only fields of KubeRay's RayJob CRD, with their types."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml
from simulated import simulated_cluster

from rlpipe.config import load
from rlpipe.launch import ClusterShape, UnsupportedLayout
from rlpipe.launch.k8s import rayjob_manifest
from rlpipe.launch.slurm import slurm_script

ROOT = Path(__file__).resolve().parents[2]
SCHEMA = json.loads((Path(__file__).parent / "fixtures" / "kuberay_rayjob_schema.json").read_text())

STUBS = {
    # the allocation's nodes
    "scontrol": 'if [ "$1 $2" = "show hostnames" ]; then printf "node0\\nnode1\\nnode2\\n"; fi\n',
    # run the command on "the node": here, recording which node it was meant for
    "srun": (
        'node=""\nwhile [ $# -gt 0 ]; do case "$1" in -w) node="$2"; shift 2;; -*) shift;; *) break;; esac; done\n'
        'printf "%s\\t%s\\n" "$node" "$*" >> "$RLPIPE_STUB_LOG"\nexec "$@"\n'
    ),
    "hostname": "echo 127.0.0.1\n",
    # the raylets already run (the simulated cluster): `ray start`/`ray stop` only say what they would do
    "ray": "exit 0\n",
}


@pytest.fixture
def three_nodes() -> Any:
    """A simulated 3-node cluster: (its GCS port, the cluster)."""
    cluster = simulated_cluster(3, 2)
    yield int(cluster.address.rsplit(":", 1)[1]), cluster
    cluster.shutdown()


def _overrides(tmp_path: Path) -> list[str]:
    return [
        "rollout.num_rollout=3", f"output_dir={tmp_path / 'out'}", f"demo.cache_dir={tmp_path / 'cache'}",
        "cluster.actor_num_gpus_per_node=2", "rollout.global_batch_size=64", "ckpt.save=null", "ckpt.load=null",
        "log.progress=false", "eval.interval=null", "eval.before_train=false",
    ]  # fmt: skip


def test_slurm_script_starts_ray_on_every_node_and_trains_there(tmp_path: Path, three_nodes: Any) -> None:
    port, _ = three_nodes
    stubs = tmp_path / "bin"
    stubs.mkdir()
    for name, body in STUBS.items():
        (stubs / name).write_text("#!/bin/bash\n" + body)
        (stubs / name).chmod(0o755)
    overrides = _overrides(tmp_path)
    run = load([*overrides, "cluster.backend=ray"], check_paths=False)
    script = tmp_path / "job.sbatch"
    script.write_text(slurm_script(run, overrides, cpus_per_node=2).replace("#SBATCH", "# (sbatch)"))
    log = tmp_path / "srun.log"
    env = {
        **os.environ, "PATH": f"{stubs}:{Path(sys.executable).parent}:{os.environ['PATH']}",
        "RLPIPE_STUB_LOG": str(log), "RLPIPE_RAY_PORT": str(port), "SLURM_JOB_NODELIST": "node[0-2]",
        "RAY_AUTH_MODE": "disabled", "RLPIPE_JOIN_TIMEOUT_S": "60",
    }  # fmt: skip
    done = subprocess.run(["bash", str(script)], cwd=ROOT, env=env, capture_output=True, text=True, timeout=900)
    assert done.returncode == 0, (done.stdout[-2000:], done.stderr[-3000:])
    assert "rlpipe: 3 node(s) joined" in done.stdout
    calls = [line.split("\t") for line in log.read_text().splitlines()]
    head_start = f"ray start --head --node-ip-address=127.0.0.1 --port={port}"
    assert any(node == "node0" and cmd.startswith(head_start) for node, cmd in calls)
    workers = {n for n, c in calls if c.startswith(f"ray start --address=127.0.0.1:{port} --num-cpus=2")}
    assert workers == {"node1", "node2"}
    assert {n for n, c in calls if c.startswith("ray stop")} == {"node0", "node1", "node2"}  # stopped on exit
    metrics = (tmp_path / "out" / run.cfg.run_name / "metrics.jsonl").read_text().splitlines()
    assert sum(json.loads(m)["phase"] == "train" for m in metrics) == 3


def test_slurm_shape_one_node_or_engines_on_nodes_of_their_own() -> None:
    run = load(["experiment=glm4-9b-dapo"], check_paths=False)  # 4 trainer + 4 engine GPUs
    assert ClusterShape.of(run, 16) == ClusterShape(1, 8, 16)
    text = slurm_script(run, ["experiment=glm4-9b-dapo"], partition="gpu", time_limit="1-00:00:00")
    assert "#SBATCH --nodes=1" in text and "#SBATCH --gpus-per-node=8" in text and "#SBATCH --partition=gpu" in text
    assert "python -m rlpipe train experiment=glm4-9b-dapo cluster.backend=ray" in text
    colocated = load(["experiment=glm4-9b-dapo", "cluster.colocate=true", "cluster.actor_num_nodes=4",
                      "cluster.actor_num_gpus_per_node=8"], check_paths=False)  # fmt: skip
    assert ClusterShape.of(colocated, 16) == ClusterShape(4, 8, 16)
    two = load(["experiment=glm4-9b-dapo", "cluster.actor_num_nodes=2"], check_paths=False)
    assert ClusterShape.of(two, 16) == ClusterShape(3, 4, 16)  # the engines on a node of their own
    wide = ["experiment=glm4-9b-dapo", "cluster.actor_num_nodes=2", "cluster.rollout_num_gpus=8"]
    assert ClusterShape.of(load(wide, check_paths=False), 16) == ClusterShape(4, 4, 16)  # engines over two nodes
    big = [*wide, "sglang.rollout_num_gpus_per_engine=8"]  # one engine larger than a node: it spans both
    assert ClusterShape.of(load(big, check_paths=False), 16) == ClusterShape(4, 4, 16)
    one = ["experiment=glm4-9b-dapo", "cluster.actor_num_gpus_per_node=8", "cluster.rollout_num_gpus=8"]
    assert ClusterShape.of(load(one, check_paths=False), 16) == ClusterShape(2, 8, 16)  # 16 GPUs are not one node
    with pytest.raises(UnsupportedLayout, match="straddle"):
        odd = [*wide, "cluster.rollout_num_gpus=6", "sglang.rollout_num_gpus_per_engine=3"]
        ClusterShape.of(load(odd, check_paths=False), 16)


def _check(node: Any, schema: dict[str, Any], path: str) -> None:
    """Every key of `node` is a property the CRD declares at that path, with the CRD's type."""
    kind = schema.get("type")
    types = {"object": dict, "array": list, "string": str, "integer": int, "boolean": bool, "number": (int, float)}
    if kind:
        assert isinstance(node, types[kind]), f"{path}: {node!r} is not {kind}"
    if isinstance(node, dict) and "properties" in schema:
        for key in schema.get("required", []):
            assert key in node, f"{path}: the CRD requires {key}"
        for key, value in node.items():
            assert key in schema["properties"], f"{path}.{key}: not a field of KubeRay's RayJob"
            _check(value, schema["properties"][key], f"{path}.{key}")
    elif isinstance(node, dict) and "additionalProperties" in schema:
        for key, value in node.items():
            _check(value, schema["additionalProperties"], f"{path}.{key}")
    elif isinstance(node, list):
        for i, item in enumerate(node):
            _check(item, schema["items"], f"{path}[{i}]")


@pytest.mark.parametrize(
    "overrides",
    [
        ["experiment=glm4-9b-dapo"],
        [
            "experiment=glm4-9b-dapo",
            "cluster.colocate=true",
            "cluster.actor_num_nodes=4",
            "cluster.actor_num_gpus_per_node=8",
        ],
    ],
    ids=["one-node", "four-nodes-colocated"],
)
def test_rayjob_manifest_uses_kuberay_fields(overrides: list[str]) -> None:
    run = load(overrides, check_paths=False)
    manifest = yaml.safe_load(rayjob_manifest(run, overrides, image="registry/rlpipe:1", ray_version="2.60.0"))
    assert manifest["apiVersion"] == SCHEMA["apiVersion"] and manifest["kind"] == "RayJob"
    _check(manifest, SCHEMA["schema"], "RayJob")
    spec = manifest["spec"]
    assert spec["entrypoint"].startswith("python -m rlpipe train " + " ".join(overrides))
    workers = spec["rayClusterSpec"]["workerGroupSpecs"]
    shape = ClusterShape.of(run, 16)
    assert sum(g["replicas"] for g in workers) + 1 == shape.nodes
    head = spec["rayClusterSpec"]["headGroupSpec"]["template"]["spec"]["containers"][0]
    assert head["resources"]["limits"]["nvidia.com/gpu"] == str(shape.gpus_per_node)


def test_the_schema_check_catches_a_misspelled_field() -> None:
    """The checker itself: a field KubeRay does not have (silently pruned by the API server) is caught."""
    with pytest.raises(AssertionError, match="shutdownAfterJobFinish"):
        _check({"spec": {"shutdownAfterJobFinish": True}}, SCHEMA["schema"], "RayJob")
