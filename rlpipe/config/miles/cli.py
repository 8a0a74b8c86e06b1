"""The Miles interop command line: `import SCRIPT [-o FILE] [--name NAME] [--set NAME=VALUE ...]` or
`export [overrides...]`."""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

from rlpipe.config.miles.importer import MissingSources, UnsetVariables, import_miles, to_experiment_yaml
from rlpipe.config.miles.shell import BashSyntaxError


def main(argv: list[str] | None = None, prog: str = "python -m rlpipe.config.miles") -> int:
    """`import SCRIPT [-o conf/experiment/NAME.yaml] [--name NAME]` or `export [overrides...]`."""
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == ["export"]:  # exactly `python launch.py ... --miles`, overrides passed through untouched
        from rlpipe.cli import main as launch_main

        return launch_main([*argv[1:], "--miles"])
    parser = argparse.ArgumentParser(prog=prog, description=__doc__.split("\n")[0])
    sub = parser.add_subparsers(dest="command", required=True)
    imp = sub.add_parser("import", help="a Miles/slime launch script -> an experiment YAML")
    imp.add_argument("script", type=Path)
    imp.add_argument("-o", "--output", type=Path, help="write here (e.g. conf/experiment/NAME.yaml), not stdout")
    imp.add_argument("--name", help="experiment / run name (default: the output or script file name)")
    imp.add_argument(
        "--set",
        action="append",
        default=[],
        metavar="NAME=VALUE",
        help="a value for a variable the script expects from its environment (repeatable; the environment is read too)",
    )
    imp.add_argument(
        "--source-dir",
        action="append",
        default=[],
        type=Path,
        metavar="DIR",
        help="where a file the script sources is looked for by name when it is not at its path (repeatable)",
    )
    sub.add_parser("export", help="the Miles script of a config: export [overrides...] (= launch.py --miles)")
    args = parser.parse_args(argv)
    given = dict(pair.partition("=")[::2] for pair in args.set)
    try:
        result = import_miles(
            args.script.read_text(),
            base_dir=args.script.resolve().parent,
            variables={**os.environ, **given},
            script_name=args.script.name,
            source_dirs=tuple(args.source_dir),
        )
    except (OSError, BashSyntaxError, UnsetVariables, MissingSources) as exc:
        print(f"rlpipe: cannot import {args.script}: {exc}", file=sys.stderr)
        return 2
    name = args.name or (args.output or args.script).name.removesuffix(".yaml").removesuffix(".sh")
    text = to_experiment_yaml(result, name, args.output)
    if args.output:
        args.output.write_text(text)
        print(f"rlpipe: wrote {args.output}", file=sys.stderr)
    else:
        print(text, end="")
    if result.unmapped:
        print(f"rlpipe: {len(result.unmapped)} flag(s) not applied:", file=sys.stderr)
        for item in result.unmapped:
            print(f"  {item}", file=sys.stderr)
    return 0
