"""`rlpipe VERB ...`: the console entry point. Each verb is the module that already does the job, called with the
rest of the words; nothing here parses a verb's own options.

    rlpipe train [overrides] [flags]      = python launch.py ...
    rlpipe plan [overrides] [--json]      = rlpipe train ... --plan
    rlpipe import SCRIPT -o FILE          = python -m rlpipe.config.miles import ...
    rlpipe export [overrides]             = rlpipe train ... --miles
    rlpipe convert hf-to-torch-dist ...   = python -m rlpipe.tools.convert ...
    rlpipe launcher slurm|k8s ...         = python -m rlpipe.launch ...
    rlpipe schema [--write|--check]       = python -m rlpipe.config.json_schema ...
    rlpipe completion bash|zsh|install    tab completion
"""

from __future__ import annotations

import difflib
import sys
from collections.abc import Callable

PROG = "rlpipe"
VERBS: dict[str, str] = {
    "train": "compose, check and run a training job (the same as python launch.py); train --help: groups, keys, flags",
    "plan": "will it fit? placement, memory per GPU and phase, time per rollout, from the config alone; --json",
    "import": "a Miles/slime launch script -> an experiment YAML: import SCRIPT -o conf/experiment/NAME.yaml",
    "export": "a config as a Miles launch script: export [overrides]",
    "convert": "checkpoints between HuggingFace safetensors and Megatron torch_dist",
    "launcher": "a Slurm sbatch script or a KubeRay RayJob manifest that runs a config on a cluster",
    "schema": "the JSON schemas of the config files (editor completion and checks)",
    "completion": "tab completion for bash and zsh: completion install",
}


def _train(argv: list[str]) -> int:
    from rlpipe.cli.train import main

    return main(argv, prog=f"{PROG} train")


def _with_view(argv: list[str], view: str, verb: str) -> int:
    """`rlpipe plan|export`: the training command with its view flag, unless the words give it or ask for help."""
    from rlpipe.cli.train import main

    given = any(w.split("=")[0] == view for w in argv) or {"-h", "--help"} & set(argv)
    return main(argv if given else [*argv, view], prog=f"{PROG} {verb}")


def _plan(argv: list[str]) -> int:
    return _with_view(["--plan=json" if w == "--json" else w for w in argv], "--plan", "plan")


def _import(argv: list[str]) -> int:
    from rlpipe.config.miles.cli import main

    return main(["import", *argv], prog=PROG)


def _export(argv: list[str]) -> int:
    return _with_view(argv, "--miles", "export")


def _convert(argv: list[str]) -> int:
    from rlpipe.tools.convert import main

    main(argv, prog=f"{PROG} convert")
    return 0


def _launcher(argv: list[str]) -> int:
    from rlpipe.launch.__main__ import main

    return main(argv, prog=f"{PROG} launcher")


def _schema(argv: list[str]) -> int:
    from rlpipe.config.json_schema import main

    return main(argv, prog=f"{PROG} schema")


def _completion(argv: list[str]) -> int:
    from rlpipe.cli.completion import main

    return main(argv, prog=f"{PROG} completion")


RUNNERS: dict[str, Callable[[list[str]], int]] = {
    "train": _train, "plan": _plan, "import": _import, "export": _export, "convert": _convert,
    "launcher": _launcher, "schema": _schema, "completion": _completion,
}  # fmt: skip


def usage() -> str:
    width = max(map(len, VERBS)) + 2
    rows = "\n".join(f"  {verb.ljust(width)}{text}" for verb, text in VERBS.items())
    return (
        f"usage: {PROG} VERB [...]   ({PROG} VERB --help for each)\n\n{rows}\n\n"
        f"  {PROG} --version          the version\n"
        f"  {PROG} key=value ...      is {PROG} train key=value ... (any training flag or override first)\n"
        "python launch.py ... is rlpipe train ...; python -m rlpipe ... is rlpipe ..."
    )


def entry(argv: list[str] | None = None) -> int:
    """The `rlpipe` console script: dispatch on the first word; returns the exit code."""
    argv = sys.argv[1:] if argv is None else argv
    if not argv or argv[0] in ("-h", "--help"):
        print(usage())
        return 0
    if argv[0] == "--version":
        from rlpipe import __version__

        print(f"{PROG} {__version__}")
        return 0
    if argv[0] == "help":
        return entry([argv[1], "--help"]) if len(argv) > 1 else entry([])
    verb, rest = argv[0], argv[1:]
    if verb in RUNNERS:
        return RUNNERS[verb](rest)
    if "=" in verb or verb.startswith("-"):  # Hydra style, `rlpipe rollout.n_samples=8` or `rlpipe --cfg job`
        return _train(argv)
    near = difflib.get_close_matches(verb, list(VERBS), n=1)
    hint = f"did you mean `{PROG} {near[0]}`? " if near else ""
    print(f"{PROG}: unknown command `{verb}`; {hint}commands: {', '.join(VERBS)}", file=sys.stderr)
    return 2
