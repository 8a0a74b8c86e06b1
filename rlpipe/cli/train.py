"""`rlpipe train` (and `python launch.py`, the same code): CLI overrides in, a resolved run out, then the job (or a
sweep of jobs), or one of the print-and-exit views (`--cfg job`, `--plan`, `--miles`, `--info`).

Config problems print one message per problem and exit with code 2 before anything heavy is imported.
"""

from __future__ import annotations

import sys

from rlpipe.cli.flags import Parsed, UsageError, parse
from rlpipe.config import ConfigError, Resolved, load


def main(argv: list[str] | None = None, prog: str = "python launch.py") -> int:
    """Run the training command on `argv` (default: this process's arguments); returns the exit code."""
    try:
        args = parse(sys.argv[1:] if argv is None else argv)
        _check_combination(args)
    except UsageError as exc:
        print(f"rlpipe: {exc}", file=sys.stderr)
        return 2
    if args.help or args.version or args.shell_completion:
        return _print_and_exit(args, prog)
    from rlpipe.config.load import search_path

    extra_dirs = search_path(args.config_dirs)[1:]
    try:
        if args.multirun:
            from rlpipe.sweep import multirun

            return multirun(args.overrides, args.launcher, extra_dirs, max_concurrent=args.max_concurrent)
        if args.info:
            from rlpipe.cli.info import show_info

            return show_info(args.info, args.overrides, extra_dirs)
        printing = args.cfg or args.miles or args.plan is not None
        run: Resolved = load(args.overrides, check_paths=not printing, extra_dirs=extra_dirs)
    except ConfigError as exc:
        if args.traceback:
            raise
        print(exc.render(), file=sys.stderr)
        return 2
    if args.cfg or args.miles or args.plan:
        print(_view(args, run), end="")
        return 0
    return _run(run)


def _check_combination(args: Parsed) -> None:
    """Flags that only mean something beside another one."""
    views = [name for name, on in (("--cfg", args.cfg), ("--plan", args.plan), ("--miles", args.miles),
                                   ("--info", args.info), ("-m", args.multirun)) if on]  # fmt: skip
    if len(views) > 1:
        raise UsageError(f"{' and '.join(views)} do different things; give one of them")
    if args.resolve and not args.cfg:
        raise UsageError("--resolve goes with --cfg job (whose values are always resolved); add --cfg job")
    if args.package is not None and not args.cfg:
        raise UsageError(f"--package {args.package} chooses what --cfg job prints; add --cfg job")
    if args.package is not None:
        from rlpipe.config.keys import is_known_key, suggest

        if not is_known_key(args.package):
            raise UsageError(f"--package {args.package}: no such key; {suggest(args.package)}")
    if (args.launcher != "local" or args.max_concurrent is not None) and not args.multirun:
        raise UsageError("--launcher and --max-concurrent choose how a sweep runs; add -m")


def _print_and_exit(args: Parsed, prog: str) -> int:
    if args.help:
        from rlpipe.cli.help import group_help, train_help, unknown_group

        text = group_help(args.help_group, prog) if args.help_group else train_help(prog)
        print(text or unknown_group(args.help_group or ""), file=sys.stdout if text else sys.stderr)
        return 0 if text else 2
    if args.version:
        from rlpipe import __version__

        print(f"rlpipe {__version__}")
        return 0
    from rlpipe.cli.completion import script

    print(script(args.shell_completion or ""), end="")
    return 0


def _view(args: Parsed, run: Resolved) -> str:
    """The text of a print-and-exit view."""
    if args.cfg:
        from rlpipe.config.render import to_yaml

        return to_yaml(run, package=args.package)
    if args.plan:
        from rlpipe.plan import plan_of
        from rlpipe.plan.render import to_json, to_markdown

        plan = plan_of(run)
        return to_json(plan) if args.plan == "json" else to_markdown(plan)
    from rlpipe.config.miles import export_miles

    return export_miles(run) + "\n"


def _run(run: Resolved) -> int:
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
