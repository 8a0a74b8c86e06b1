"""Placement across nodes, on simulated clusters (ray.cluster_utils: several raylets on this machine, each with its
own CPUs and fake GPUs): bundles taken in node order put consecutive trainer ranks on one node and the engines after
them; the tiny job with two data-parallel trainer ranks on two raylets and the rollout manager on a third learns
exactly as on one; SGLang engine processes start on the nodes of their GPUs, one per node for an engine larger than
a node."""

from __future__ import annotations

import dataclasses
import json
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from simulated import run_tiny_job, simulated_cluster, start_tiny_job, train_rewards

from rlpipe.cluster.placement import node_ordered, plan_placement, reserve
from rlpipe.config import Resolved, load

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture
def connected() -> Iterator[callable]:
    """connected(nodes, cpus, gpus): a simulated cluster this process has joined; both gone afterwards."""
    import ray

    made = []

    def start(nodes: int, cpus: int, gpus: int) -> object:
        cluster = simulated_cluster(nodes, cpus, gpus)
        made.append(cluster)
        ray.init(address=cluster.address, log_to_driver=False)
        return cluster

    yield start
    ray.shutdown()
    for cluster in made:
        cluster.shutdown()


def _nodes_of(group: object) -> dict[int, str]:
    from ray.util.placement_group import placement_group_table

    return placement_group_table(group)["bundles_to_node_id"]


DISAGGREGATED = ["experiment=glm4-9b-dapo", "cluster.actor_num_nodes=2", "cluster.actor_num_gpus_per_node=8",
                 "cluster.rollout_num_gpus=8"]  # fmt: skip
COLOCATED = ["experiment=glm4-9b-dapo", "cluster.colocate=true", "cluster.actor_num_nodes=4",
             "cluster.actor_num_gpus_per_node=8"]  # fmt: skip


@pytest.mark.parametrize(("overrides", "nodes"), [(DISAGGREGATED, 3), (COLOCATED, 4)], ids=["2x8+1x8", "4x8-colocated"])
def test_ranks_fill_nodes_in_order(connected, overrides: list[str], nodes: int) -> None:
    from ray.util import remove_placement_group

    connected(nodes, 8, 8)
    run = load(overrides, check_paths=False)
    plan = plan_placement(run)
    group = reserve(plan, timeout_s=300)
    try:
        ordered, on_node = node_ordered(plan, group), _nodes_of(group)
        rank_nodes = [on_node[b] for b in ordered.trainer_bundles]
        per_node = run.cfg.cluster.actor_num_gpus_per_node
        for rank, node in enumerate(rank_nodes):  # rank by rank: ranks r and r' share a node iff r // 8 == r' // 8
            assert [n == node for n in rank_nodes] == [
                r // per_node == rank // per_node for r in range(len(rank_nodes))
            ]
        assert len(set(rank_nodes)) == run.cfg.cluster.actor_num_nodes
        tp = run.cfg.perf.tensor_parallel
        for first in range(0, len(rank_nodes), tp):  # every tensor-parallel group inside one node
            assert len(set(rank_nodes[first : first + tp])) == 1
        per_engine = run.cfg.sglang.rollout_num_gpus_per_engine
        engine_nodes = [on_node[b] for b in ordered.rollout_bundles]
        if run.cfg.cluster.colocate:  # engine e on the GPUs of trainer ranks e*g .. e*g+g-1
            assert engine_nodes == [rank_nodes[e * per_engine] for e in range(len(engine_nodes))]
        else:  # the engines on a node of their own, after the trainer's
            assert set(engine_nodes).isdisjoint(rank_nodes) and len(set(engine_nodes)) == 1
    finally:
        remove_placement_group(group)


def _rewards(tmp_path: Path, name: str, *extra: str) -> tuple[list[float], dict]:
    done = run_tiny_job(
        tmp_path, name, "cluster.backend=ray", "cluster.actor_num_gpus_per_node=2", "rollout.global_batch_size=64",
        "rollout.num_rollout=6", *extra,
    )  # fmt: skip
    assert "rlpipe: placement:" in done.stdout
    return train_rewards(tmp_path / name), json.loads((tmp_path / name / "placement.json").read_text())


def test_tiny_job_across_three_nodes_learns_as_on_one(tmp_path: Path) -> None:
    """One CPU per raylet: the two trainer ranks and the rollout manager cannot share a node."""
    cluster = simulated_cluster(3, 1)
    try:
        spread, placement = _rewards(tmp_path, "spread", f"cluster.address={cluster.address}")
    finally:
        cluster.shutdown()
    together, one = _rewards(tmp_path, "together")
    nodes = [r["node_id"] for r in placement["trainer_ranks"]] + [placement["rollout_manager"]["node_id"]]
    roles = [*placement["trainer_ranks"], placement["rollout_manager"]]
    assert {r["cwd"] for r in roles} == {str(tmp_path)}  # every role works in the folder the run was launched from
    assert len(set(nodes)) == 3
    assert len({r["node_id"] for r in one["trainer_ranks"]} | {one["rollout_manager"]["node_id"]}) == 1
    assert len(spread) == 6 and spread == together  # where the roles run changes nothing of what they compute


SPANNING = ["experiment=glm4-9b-dapo", "cluster.rollout_num_gpus=8", "sglang.rollout_num_gpus_per_engine=8"]
TWO_ENGINE_NODES = ["experiment=glm4-9b-dapo", "cluster.rollout_num_gpus=8", "sglang.rollout_num_gpus_per_engine=4"]


def test_a_node_that_leaves_mid_run_is_named_with_what_it_ran(tmp_path: Path) -> None:
    """A raylet killed while the tiny job trains across three nodes: the job stops with one message naming that node
    (its Ray id) and the roles it held, not a traceback, and not after Ray's long retries."""
    cluster = simulated_cluster(3, 1)
    try:
        job = start_tiny_job(tmp_path, "lost", f"cluster.address={cluster.address}", "cluster.backend=ray",
                             "cluster.actor_num_gpus_per_node=2", "rollout.num_rollout=1000")  # fmt: skip
        placement = tmp_path / "lost" / "placement.json"
        while not placement.exists():  # written once every role has started
            assert job.poll() is None, job.stderr.read()[-3000:]
            time.sleep(0.2)
        ranks = json.loads(placement.read_text())["trainer_ranks"]
        head = cluster.head_node.node_id
        rank, victim = next((r, n["node_id"]) for r, n in enumerate(ranks) if n["node_id"] != head)
        cluster.remove_node(next(n for n in cluster.worker_nodes if n.node_id == victim), allow_graceful=False)
        _, stderr = job.communicate(timeout=600)
    finally:
        cluster.shutdown()
    assert job.returncode == 1, stderr[-3000:]
    assert f"Ray node {victim[:12]}) left the cluster; it ran trainer ranks [{rank}]" in stderr, stderr[-3000:]
    assert "Traceback" not in stderr


@pytest.fixture(scope="module")
def tiny_checkpoint(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from rlpipe.data.tiny_model import TinyModelSpec, build_tiny_checkpoint

    return build_tiny_checkpoint(tmp_path_factory.mktemp("tiny") / "ckpt", TinyModelSpec(seed=0))


def _with_checkpoint(run: Resolved, checkpoint: Path) -> Resolved:
    """`run` serving `checkpoint` (the fake server generates with it) instead of the recipe's hub model."""
    ckpt = run.cfg.ckpt.model_copy(update={"hf_checkpoint": str(checkpoint)})
    return dataclasses.replace(run, cfg=run.cfg.model_copy(update={"ckpt": ckpt}))


@pytest.fixture
def engines_on(connected, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[callable]:
    """engines_on(overrides, nodes, gpus, checkpoint): the engine processes of `overrides` started on a simulated
    cluster by rlpipe's EngineHosts, `python -m sglang.launch_server` being the fake server (tests/fakes); yields
    (hosts, trainer bundles' nodes) and stops them afterwards."""
    from ray.util import remove_placement_group

    from rlpipe.cluster.engine_hosts import EngineHosts

    monkeypatch.setenv("PYTHONPATH", f"{ROOT / 'tests' / 'fakes' / 'sglang_launcher'}:{ROOT}")  # the raylets' env
    made = []

    def start(overrides: list[str], nodes: int, gpus: int, checkpoint: Path) -> tuple[EngineHosts, list[str]]:
        connected(nodes, 8, gpus)
        run = _with_checkpoint(load(overrides, check_paths=False), checkpoint)
        plan = plan_placement(run)
        group = reserve(plan, timeout_s=300)
        ordered = node_ordered(plan, group)
        hosts = EngineHosts(run, ordered, group, tmp_path / "logs")
        made.append((hosts, group))
        return hosts, [_nodes_of(group)[b] for b in ordered.trainer_bundles]

    yield start
    for hosts, group in made:
        hosts.stop()
        remove_placement_group(group)


def _log(tmp_path: Path, part: object) -> str:
    suffix = f"_node{part.node_rank}" if part.nnodes > 1 else ""
    return (tmp_path / "logs" / f"sglang_engine_{part.engine}{suffix}.log").read_text()


@pytest.mark.parametrize(
    ("overrides", "nodes", "gpus", "layout"),
    [
        # one 8-GPU node: 4 trainer ranks, then 2 engines of 2 GPUs each on the same node
        (["experiment=glm4-9b-dapo"], 1, 8, [(0, 0, 1, "trainer"), (1, 0, 1, "trainer")]),
        # 4-GPU nodes: trainer on one, one engine of 8 GPUs spanning the other two (node ranks 0 and 1)
        (SPANNING, 3, 4, [(0, 0, 2, "A"), (0, 1, 2, "B")]),
        # 4-GPU nodes: trainer on one, two engines of 4 GPUs, one per node
        (TWO_ENGINE_NODES, 3, 4, [(0, 0, 1, "A"), (1, 0, 1, "B")]),
    ],
    ids=["beside-the-trainer", "engine-spans-two-nodes", "engines-on-two-nodes"],
)
def test_engine_processes_start_on_the_nodes_of_their_gpus(
    engines_on, tiny_checkpoint: Path, tmp_path: Path, overrides: list[str], nodes: int, gpus: int, layout: list
) -> None:
    """Every server process on its own node seeing exactly its GPUs; an engine larger than a node runs one process per
    node that rendezvous at node rank 0; the router reaches each engine there and generation works."""
    from rlpipe.rollout.engine import SamplingParams
    from rlpipe.rollout.engines import started_engine

    hosts, trainer_nodes = engines_on(overrides, nodes, gpus, tiny_checkpoint)
    urls = hosts.start(timeout_s=300)
    got = [(p.engine, p.node_rank, p.nnodes) for p in hosts.parts]
    assert got == [(e, r, n) for e, r, n, _ in layout]
    named = {}  # the layout's node letters, each a distinct node, "trainer" the trainer's
    for part, (*_, node) in zip(hosts.parts, layout, strict=True):
        expected = trainer_nodes[0] if node == "trainer" else named.setdefault(node, part.node_id)
        assert part.node_id == expected
    assert len(set(named.values()) | {trainer_nodes[0]}) == len(named) + 1  # the engines' nodes are distinct
    per_process = 8 // 4 if nodes == 1 else 4
    for part in hosts.parts:
        log = _log(tmp_path, part)
        assert f"CUDA_VISIBLE_DEVICES={part.cuda_visible_devices} " in log and len(part.gpus) == per_process
        assert ("all 2 node ranks joined" in log) == (part.nnodes == 2)
        if part.nnodes == 2:
            assert f"dist_init_addr={hosts.parts[0].node_ip}:" in log
    gpus_of = {}
    for part in hosts.parts:  # no GPU of a node is given twice, nor one the trainer has on a shared node
        gpus_of.setdefault(part.node_id, []).extend(part.gpus)
    assert all(len(g) == len(set(g)) for g in gpus_of.values())
    if nodes == 1:
        assert sorted(gpus_of[trainer_nodes[0]]) == ["4", "5", "6", "7"]  # Ray gave the trainer's ranks 0-3
    assert len(urls) == len({p.engine for p in hosts.parts})
    run = _with_checkpoint(load(overrides, check_paths=False), tiny_checkpoint)
    with started_engine(run, tmp_path / "router", engine_urls=urls) as engine:
        outs = engine.generate([[1, 5, 6], [2, 7]], SamplingParams(max_new_tokens=2, temperature=0.0))
    assert [len(o) for o in outs] == [1, 1] and all(o[0].output_ids for o in outs)


def test_an_engine_process_that_dies_while_starting_names_its_engine_and_node(engines_on, tmp_path: Path) -> None:
    from rlpipe.rollout.sglang.process import ServerStartError

    hosts, _ = engines_on(SPANNING, 3, 4, tmp_path / "no-such-checkpoint")
    with pytest.raises(ServerStartError) as info:
        hosts.start(timeout_s=300)
    message = str(info.value)
    part = next(p for p in hosts.parts if f"node rank {p.node_rank} of 2" in message)
    assert "SGLang engine 0" in message and part.node_id[:12] in message and "exited with code" in message
    assert "no-such-checkpoint" in message  # the server log's last lines say why
