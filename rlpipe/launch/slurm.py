"""A Slurm batch script for a resolved run: one task per node, a Ray head on the first node and a worker on every
other, the job run on the head once every node has joined, Ray stopped on every node when it ends.

Why a script and not submitit: submitit submits pickled Python callables and needs the Slurm CLI where it runs; a
Ray cluster inside an allocation is a shell bootstrap (start, wait, run), and a script users can read, diff and
`sbatch` themselves is what Slurm sites ask for.
"""

from __future__ import annotations

import shlex

from rlpipe.config import Resolved
from rlpipe.launch import RAY_PORT, ClusterShape, job_command

JOIN_TIMEOUT_S = 600  # how long the script waits for every node's Ray to join before giving up, naming who joined

_WAIT_FOR_NODES = """\
import sys, time
address, want, timeout = sys.argv[1], int(sys.argv[2]), float(sys.argv[3])
deadline = time.monotonic() + timeout
import ray
while True:
    try:
        ray.init(address=address, log_to_driver=False)
        break
    except Exception as err:  # the head is not up yet
        if time.monotonic() > deadline:
            sys.exit(f"rlpipe: no Ray head at {address} after {timeout:.0f} s: {err}")
        time.sleep(2)
while len(alive := [n for n in ray.nodes() if n["Alive"]]) < want:
    if time.monotonic() > deadline:
        joined = ", ".join(n["NodeManagerAddress"] for n in alive)
        sys.exit(f"rlpipe: {len(alive)} of {want} nodes joined within {timeout:.0f} s: {joined}")
    time.sleep(2)
print(f"rlpipe: {len(alive)} node(s) joined")
"""


def slurm_script(
    run: Resolved,
    overrides: list[str],
    *,
    partition: str | None = None,
    time_limit: str | None = None,
    cpus_per_node: int = 16,
    setup: str = "",
) -> str:
    """The sbatch script; `setup` is shell run first on the head (e.g. `source .venv/bin/activate`)."""
    shape = ClusterShape.of(run, cpus_per_node)
    cfg = run.cfg
    run_dir = f"{cfg.output_dir}/{cfg.run_name}"
    header = [
        "#!/bin/bash",
        f"# rlpipe: `rlpipe launcher slurm {' '.join(shlex.quote(o) for o in overrides)}`",
        f"# {shape.nodes} node(s) x {shape.gpus_per_node} GPU(s): a Ray head on the first, workers on the rest.",
        f"#SBATCH --job-name={cfg.run_name}",
        f"#SBATCH --nodes={shape.nodes}",
        "#SBATCH --ntasks-per-node=1",
        f"#SBATCH --cpus-per-task={shape.cpus_per_node}",
        *([f"#SBATCH --gpus-per-node={shape.gpus_per_node}"] if shape.gpus_per_node else []),
        "#SBATCH --exclusive",
        f"#SBATCH --output={run_dir}/slurm-%j.out",
        *([f"#SBATCH --partition={partition}"] if partition else []),
        *([f"#SBATCH --time={time_limit}"] if time_limit else []),
    ]
    one = "srun --nodes=1 --ntasks=1 --overlap -w"
    body = [
        "set -euo pipefail",
        f"mkdir -p {shlex.quote(run_dir)}",
        *([setup] if setup else []),
        'mapfile -t nodes < <(scontrol show hostnames "$SLURM_JOB_NODELIST")',
        'head="${nodes[0]}"',
        f"head_ip=$({one} \"$head\" hostname --ip-address | awk '{{print $1}}')",
        f"port=${{RLPIPE_RAY_PORT:-{RAY_PORT}}}",
        'export RLPIPE_RAY_ADDRESS="$head_ip:$port"',
        f"resources=(--num-cpus={shape.cpus_per_node} --num-gpus={shape.gpus_per_node} --disable-usage-stats)",
        "cleanup() {",
        f'  for node in "${{nodes[@]}}"; do {one} "$node" ray stop --force >/dev/null 2>&1 || true; done',
        "}",
        "trap cleanup EXIT",
        'echo "rlpipe: Ray head on $head ($RLPIPE_RAY_ADDRESS), ${#nodes[@]} node(s)"',
        f'{one} "$head" ray start --head --node-ip-address="$head_ip" --port="$port" "${{resources[@]}}" --block &',
        'for node in "${nodes[@]:1}"; do',
        f'  {one} "$node" ray start --address="$RLPIPE_RAY_ADDRESS" "${{resources[@]}}" --block &',
        "done",
        # every node of the allocation, which `sbatch --nodes=N` may make larger than the config's shape
        f'python - "$RLPIPE_RAY_ADDRESS" "${{#nodes[@]}}" "${{RLPIPE_JOIN_TIMEOUT_S:-{JOIN_TIMEOUT_S}}}" <<\'PY\'',
        _WAIT_FOR_NODES.rstrip(),
        "PY",
        job_command(overrides),
    ]
    return "\n".join(header) + "\n\n" + "\n".join(body) + "\n"
