"""`python launch.py`: CLI overrides in, a resolved run out, then the job (or a sweep of jobs).

    python launch.py [key=value | group=option | +experiment=name ...] [--cfg job] [--miles] [--plan] [-m] [--traceback]

Config problems print one message per problem and exit with code 2 before anything heavy is imported.
"""

from __future__ import annotations

import sys
from pathlib import Path

from rlpipe.config import ConfigError, Resolved, load

USAGE = __doc__.split("\n\n")[1]
FLAGS_HELP = """flags:
  --cfg job     print the resolved config (derived values with their reasons) and exit
  --miles       print the equivalent Miles launch arrays and exit
  --plan        print the preflight plan (placement, memory per GPU and phase, time per rollout) and exit;
                --plan=json for tools
  -m, --multirun  expand comma-separated overrides into a sweep; every point is validated first
  --launcher=ray  with -m: run the points as Ray jobs on a cluster (cluster.address / $RAY_ADDRESS, else a
                  local Ray), as many at once as its resources hold (--max-concurrent=N: at most N);
                  --launcher=local (default): one by one
  --traceback   show Python tracebacks for config errors
  -h, --help    this message"""


def _groups_help() -> str:
    """Each config group folder with its options (conf/<group>/<option>.yaml), the first being the pick syntax."""
    from rlpipe.config import CONF_DIR
    from rlpipe.config.keys import group_options

    groups = sorted(p.name for p in CONF_DIR.iterdir() if p.is_dir())
    lines = [f"  {group:<11} {', '.join(group_options(CONF_DIR, group))}" for group in groups]
    return (
        "config groups (pick one with group=option, e.g. model=qwen3-4B, experiment=glm4-9b-dapo):\n"
        + "\n".join(lines)
        + "\nkeys: any schema key as key=value (rollout.n_samples=8); all of them, documented: docs/config.md"
    )


def _split_args(argv: list[str]) -> tuple[list[str], set[str]]:
    overrides, flags, words = [], set(), iter(argv)
    for word in words:
        if word == "--cfg":
            flags.add("cfg:" + next(words, "job"))
        elif word in ("--plan", "--plan=md", "--plan=json"):
            flags.add("plan:" + (word.partition("=")[2] or "md"))
        elif word in ("--launcher=ray", "--launcher=local"):
            flags.add("launcher:" + word.partition("=")[2])
        elif word.startswith("--max-concurrent=") and word.partition("=")[2].isdigit():
            flags.add(word)
        elif word in ("-m", "--multirun"):
            flags.add("multirun")
        elif word.startswith("-"):
            flags.add(word)
        else:
            # `+experiment=x` and `experiment=x` mean the same: the root config already lists a default experiment.
            overrides.append(word[1:] if word.startswith("+experiment=") else word)
    return overrides, flags


def main(argv: list[str] | None = None) -> int:
    overrides, flags = _split_args(sys.argv[1:] if argv is None else argv)
    if flags & {"-h", "--help"}:
        print(f"{USAGE}\n{_groups_help()}\n{FLAGS_HELP}")
        return 0
    known = {"cfg:job", "--miles", "plan:md", "plan:json", "multirun", "launcher:ray", "launcher:local", "--traceback"}
    unknown = {f for f in flags - known if not f.startswith("--max-concurrent=")}
    if unknown:
        print(f"rlpipe: unknown flag(s) {', '.join(sorted(unknown))}\n{FLAGS_HELP}", file=sys.stderr)
        return 2
    try:
        if "multirun" in flags:
            from rlpipe.sweep import multirun

            launcher = "ray" if "launcher:ray" in flags else "local"
            limit = next((int(f.partition("=")[2]) for f in flags if f.startswith("--max-concurrent=")), None)
            return multirun(overrides, launcher, Path(sys.argv[0]).resolve(), max_concurrent=limit)
        printing = bool(flags & {"cfg:job", "--miles", "plan:md", "plan:json"})
        run: Resolved = load(overrides, check_paths=not printing)
    except ConfigError as exc:
        if "--traceback" in flags:
            raise
        print(exc.render(), file=sys.stderr)
        return 2
    if "cfg:job" in flags:
        from rlpipe.config.render import to_yaml

        print(to_yaml(run), end="")
        return 0
    if flags & {"plan:md", "plan:json"}:
        from rlpipe.plan import plan_of
        from rlpipe.plan.render import to_json, to_markdown

        plan = plan_of(run)
        print(to_json(plan) if "plan:json" in flags else to_markdown(plan), end="")
        return 0
    if "--miles" in flags:
        from rlpipe.config.miles import export_miles

        print(export_miles(run))
        return 0
    from rlpipe.run import run_job
    from rlpipe.stop import StopRequested

    try:
        return run_job(run)
    except StopRequested as stop:
        print(f"rlpipe: {stop}", file=sys.stderr)
        return stop.exit_code
    except KeyboardInterrupt:
        print(
            "rlpipe: interrupted; rerun the same command to resume from the last checkpoint (if ckpt.save is set)",
            file=sys.stderr,
        )
        return 130
