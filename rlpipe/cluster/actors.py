"""Ray actors: thin process wrappers around the plain role classes (TrainerRole, RolloutRole).

An actor only sets up its process (threads, device, torch.distributed) and forwards `call(method, *args)` to
its role, so the code that runs is exactly the in-process code.
"""

from __future__ import annotations

import contextlib
import os
import socket
from pathlib import Path
from typing import Any

from rlpipe.config import Resolved
from rlpipe.config.schema import RunConfig


def _prepare_process(device: str) -> None:
    """Quiet third-party chatter; on CPU one thread per rank, on GPU this actor's device with one CUDA work
    queue (megatron's advice under tensor / sequence parallelism: collectives then run in issue order; it must be
    set before the CUDA context exists)."""
    if device != "cpu":
        os.environ.setdefault("CUDA_DEVICE_MAX_CONNECTIONS", "1")
    import torch

    from rlpipe.quiet import quiet_third_party

    quiet_third_party()
    if device == "cpu":
        torch.set_num_threads(1)  # one thread per trainer process: the cores are shared between ranks
    else:
        torch.cuda.set_device(0)  # Ray narrowed CUDA_VISIBLE_DEVICES to this actor's GPU


DRIVER_CWD = "RLPIPE_DRIVER_CWD"  # the folder the run was launched from, which every role works in


def _follow_driver() -> None:
    """Work in the driver's folder, so a config's relative paths (.cache/rlpipe/..., outputs/...) mean the same here
    as where the run was launched; Ray starts workers elsewhere (a Ray job's temp folder, the session folder)."""
    folder = os.environ.get(DRIVER_CWD)
    if folder and os.path.isdir(folder):
        os.chdir(folder)


def where_am_i() -> dict[str, Any]:
    """This actor's node (Ray's id and IP), the GPUs Ray gave it, and the folder it works in."""
    import ray

    context = ray.get_runtime_context()
    node = {"node_id": context.get_node_id(), "node_ip": ray.util.get_node_ip_address()}
    return node | {"gpus": ray.get_gpu_ids(), "cwd": os.getcwd()}


class TrainerActor:
    """One trainer rank. Two-phase start: construct every rank, then `init` them together (it blocks until
    all ranks join the process group)."""

    def __init__(self, cfg: RunConfig, rank: int, world_size: int, device: str) -> None:
        _follow_driver()
        self.cfg, self.rank, self.world_size, self.device = cfg, rank, world_size, device
        self.role: Any = None

    def rendezvous(self) -> str:
        """A tcp:// init method on this rank's node (asked of rank 0)."""
        with socket.socket() as sock:
            sock.bind(("", 0))
            port = sock.getsockname()[1]
        import ray

        return f"tcp://{ray.util.get_node_ip_address()}:{port}"

    def init(self, init_method: str) -> None:
        _prepare_process(self.device)
        from rlpipe.train.distributed import init_distributed
        from rlpipe.train.role import TrainerRole

        pf = self.cfg.perf
        init_distributed(
            self.rank,
            self.world_size,
            init_method,
            pf.tensor_parallel,
            pf.pipeline_parallel,
            pf.context_parallel,
            pf.expert_parallel,
            pf.expert_tensor_parallel,
        )
        self.role = TrainerRole(self.cfg)

    def call(self, method: str, *args: Any) -> Any:
        return getattr(self.role, method)(*args)

    def where(self) -> dict[str, Any]:
        return where_am_i()

    def engine_weights_digest(self) -> str:
        """Digest of the weights the engine serves (Miles' --check-weight-update-equal, on demand)."""
        from rlpipe.cluster.digest import named_tensor_digest

        return named_tensor_digest(self.role.engine.model.named_parameters())

    def open_weight_sync(self, address: str, port: int, world_size: int, backend: str) -> None:
        """Rank 0 joins the weight-sync group as its root (see rlpipe.cluster.weight_sync)."""
        from rlpipe.cluster.weight_sync import open_group

        self.sync_group = open_group(backend, address, port, world_size, rank=0)

    def weight_specs(self) -> Any:
        from rlpipe.cluster.weight_sync import specs_of

        named = self.role.hf_named_tensors()
        return specs_of(named) if self.rank == 0 else None

    def broadcast_weights(self, bucket_bytes: int, flat: bool) -> None:
        """Every rank helps gather the weights; rank 0 broadcasts them into the weight-sync group."""
        from rlpipe.cluster.weight_sync import send

        named = self.role.hf_named_tensors()
        if self.rank == 0:
            send(self.sync_group, named, bucket_bytes, flat=flat)

    def weights_digest(self) -> str:
        from rlpipe.cluster.digest import named_tensor_digest

        return named_tensor_digest(self.role.hf_named_tensors())

    def weights(self) -> Any:
        """HF-named weights; every rank takes part in gathering them, only rank 0 hands them over."""
        named = self.role.hf_named_tensors()
        return named if self.rank == 0 else None


class RolloutActor:
    """The rollout manager: owns the engine(s), the prompt data and the rewards. With SGLang it starts the router
    over the servers the EngineHostActors started (`engine_urls`) as its subprocess, and stops it in `close`."""

    def __init__(self, run: Resolved, log_dir: str, engine_urls: list[str] | None = None) -> None:
        _follow_driver()
        _prepare_process(run.topology.device)
        from rlpipe.rollout.engines import started_engine
        from rlpipe.rollout.role import RolloutRole

        self._engines = contextlib.ExitStack()
        engine = self._engines.enter_context(started_engine(run, Path(log_dir), engine_urls))
        self.role = RolloutRole(run.cfg, engine)

    def close(self) -> None:
        self.role.close()
        self._engines.close()

    def open_weight_sync(self, address: str, port: int, world_size: int, backend: str) -> None:
        """Join the weight-sync group: SGLang servers join it themselves (ranks 1..), the in-process engine
        through this actor (rank 1)."""
        engine = self.role.engine
        if hasattr(engine, "init_weights_update_group"):
            engine.init_weights_update_group(address, port, world_size, backend=backend)
        else:
            from rlpipe.cluster.weight_sync import open_group

            self.sync_group = open_group(backend, address, port, world_size, rank=1)

    def receive_weights(self, specs: list, bucket_bytes: int) -> int:
        """One sync's worth of broadcast weights into the engine; returns the new weight version."""
        from rlpipe.cluster.weight_sync import buckets, receive

        engine = self.role.engine
        if hasattr(engine, "update_weights_from_distributed"):  # SGLang receives each bucket itself
            engine.begin_weight_update()
            for bucket in buckets(specs, bucket_bytes):
                chosen = [specs[i] for i in bucket]
                engine.update_weights_from_distributed(
                    [s.name for s in chosen], [str(s.dtype).removeprefix("torch.") for s in chosen],
                    [list(s.shape) for s in chosen],
                )  # fmt: skip
            engine.end_weight_update()
            engine.flush_cache()
            return engine.weight_version
        named = [pair for bucket in receive(self.sync_group, specs, bucket_bytes) for pair in bucket]
        return self.role.update_weights(named)

    def call(self, method: str, *args: Any) -> Any:
        return getattr(self.role, method)(*args)

    def where(self) -> dict[str, Any]:
        return where_am_i()

    def engine_weights_digest(self) -> str:
        """Digest of the weights the engine serves (Miles' --check-weight-update-equal, on demand)."""
        from rlpipe.cluster.digest import named_tensor_digest

        return named_tensor_digest(self.role.engine.model.named_parameters())


class EngineHostActor:
    """One SGLang server process (an EnginePart) on the node this actor runs on: it asks this node for free ports,
    starts the server seeing only the part's GPUs, reports whether it lives and answers, and stops it."""

    def __init__(self, cfg: RunConfig, part: Any, log_dir: str) -> None:
        _follow_driver()
        self.cfg, self.part, self.log_dir = cfg, part, Path(log_dir)
        self.process: Any = None

    def free_ports(self, count: int) -> list[int]:
        from rlpipe.rollout.sglang.process import free_ports

        return free_ports(count, self.part.node_ip)

    def start(self, port: int, dist_init_addr: str | None) -> str:
        """Launch the server (not waiting for it); its HTTP address (only node rank 0 serves one)."""
        from rlpipe.rollout.sglang.process import ManagedProcess
        from rlpipe.rollout.sglang.server import EngineSlot, server_command

        part = self.part
        slot = EngineSlot(part.engine, 0, part.node_ip, port, part.nnodes, part.node_rank, dist_init_addr)
        name = f"sglang_engine_{part.engine}" + (f"_node{part.node_rank}" if part.nnodes > 1 else "")
        env = {"CUDA_VISIBLE_DEVICES": part.cuda_visible_devices}
        log = self.log_dir / f"{name}.log"
        self.process = ManagedProcess(server_command(self.cfg, slot), slot.url + "/health", log, env)
        self.process.start()
        return slot.url

    def state(self) -> tuple[int | None, bool]:
        """(exit code, or None while it runs; whether it answers /health, which only node rank 0 does)."""
        code = self.process.proc.poll()
        return code, code is None and self.part.serves_http and self.process.is_healthy()

    def log_tail(self) -> str:
        return self.process.log_tail()

    def stop(self) -> None:
        if self.process is not None:
            self.process.stop()
