"""`rlpipe launcher slurm|k8s [options] [overrides...]` (or `python -m rlpipe.launch ...`): print the launcher of the
resolved config."""

from __future__ import annotations

import argparse
import sys

from rlpipe.config import ConfigError, Resolved, load
from rlpipe.launch import UnsupportedLayout


def main(argv: list[str] | None = None, prog: str = "python -m rlpipe.launch") -> int:
    parser = argparse.ArgumentParser(prog=prog, description=__doc__.split("\n")[0])
    sub = parser.add_subparsers(dest="target", required=True)
    slurm = sub.add_parser("slurm", help="an sbatch script: a Ray cluster across the allocation, then the job")
    slurm.add_argument("--partition")
    slurm.add_argument("--time", dest="time_limit", help="Slurm time limit, e.g. 2-00:00:00")
    slurm.add_argument("--setup", default="", help="shell run first, e.g. 'source .venv/bin/activate'")
    k8s = sub.add_parser("k8s", help="a KubeRay RayJob manifest")
    k8s.add_argument("--image", required=True, help="the container image with rlpipe and its dependencies")
    k8s.add_argument("--memory", default="200Gi", help="memory per pod")
    k8s.add_argument("--ray-version", help="the image's Ray version (KubeRay's rayVersion)")
    for p in (slurm, k8s):
        p.add_argument("--cpus-per-node", type=int, default=16)
        p.add_argument("overrides", nargs="*", help="the run's overrides, as for rlpipe train")
    args = parser.parse_args(sys.argv[1:] if argv is None else argv)
    try:
        # as the job will run it (on Ray); its files live on the cluster, checked when the job starts there
        run = load([*args.overrides, "cluster.backend=ray"], check_paths=False)
    except ConfigError as exc:
        print(exc.render(), file=sys.stderr)
        return 2
    try:
        print(_launcher(args, run), end="")
    except UnsupportedLayout as exc:
        print(f"rlpipe: {exc}", file=sys.stderr)
        return 2
    return 0


def _launcher(args: argparse.Namespace, run: Resolved) -> str:
    if args.target == "slurm":
        from rlpipe.launch.slurm import slurm_script

        return slurm_script(run, args.overrides, partition=args.partition, time_limit=args.time_limit,
                            cpus_per_node=args.cpus_per_node, setup=args.setup)  # fmt: skip
    from rlpipe.launch.k8s import rayjob_manifest

    return rayjob_manifest(run, args.overrides, image=args.image, cpus_per_node=args.cpus_per_node,
                           memory=args.memory, ray_version=args.ray_version)  # fmt: skip


if __name__ == "__main__":
    sys.exit(main())
