"""The training command's flags (`rlpipe train ...`, `python launch.py ...`): one table read by the parser, `--help`
and tab completion, so the three never disagree.

Flags follow Hydra's spelling where Hydra has the same idea (`--cfg job`, `--info`, `-m`, `--config-dir`,
`--shell-completion`); Hydra flags whose job rlpipe does differently are recognised and answered with the rlpipe
way, never with "unknown flag".
"""

from __future__ import annotations

import difflib
from dataclasses import dataclass, field
from pathlib import Path

INFO_TOPICS = ("all", "searchpath", "defaults", "defaults-tree", "config", "plugins")


@dataclass(frozen=True)
class Flag:
    names: tuple[str, ...]  # long name first: ("--cfg", "-c")
    help: str
    values: tuple[str, ...] = ()  # the words its argument may be (completion and checks); () with `arg`: free text
    arg: str = ""  # its argument as help shows it; "" = a switch
    optional_arg: bool = False  # `--info` alone, or `--info searchpath`


FLAGS: tuple[Flag, ...] = (
    Flag(("--cfg", "-c"), "print the resolved config (derived values with their reasons) and exit", ("job",), "job"),
    Flag(("--package", "-p"), "with --cfg job: print only this group (e.g. -p rollout)", arg="GROUP"),
    Flag(("--resolve",), "with --cfg job: accepted for Hydra users; rlpipe always prints resolved values"),
    Flag(
        ("--plan",),
        "print the preflight plan (placement, memory per GPU and phase, time per rollout) and exit; "
        "--plan=json for tools",
        ("md", "json"),
        "FORMAT",
        optional_arg=True,
    ),
    Flag(("--miles",), "print the equivalent Miles launch script and exit"),
    Flag(
        ("--info",),
        "Hydra's view of the composition (config search path, defaults tree, ...) and exit",
        INFO_TOPICS,
        "TOPIC",
        optional_arg=True,
    ),
    Flag(("--multirun", "-m"), "expand comma-separated overrides into a sweep; every point is validated first"),
    Flag(
        ("--launcher",),
        "with -m: local (one by one, the default) or ray (Ray jobs on cluster.address / "
        "$RAY_ADDRESS, else a local Ray, as many at once as its resources hold)",
        ("local", "ray"),
        "NAME",
    ),
    Flag(("--max-concurrent",), "with -m --launcher=ray: at most N points at once", arg="N"),
    Flag(
        ("--config-dir", "-cd"),
        "also look for config groups and experiments in DIR (./conf is always looked in)",
        arg="DIR",
    ),
    Flag(
        ("--shell-completion", "-sc"),
        "print the tab-completion script for bash or zsh (install: rlpipe completion install)",
        ("install=bash", "install=zsh"),
        "install=SHELL",
    ),
    Flag(("--traceback",), "show Python tracebacks for config errors"),
    Flag(("--version",), "print rlpipe's version and exit"),
    Flag(("--help", "-h"), "this message; --help GROUP lists every key of a group", arg="GROUP", optional_arg=True),
)
# Hydra flags whose job rlpipe does another way: flag -> what to type instead.
HYDRA_EQUIVALENTS: dict[str, str] = {
    "--config-name": "pick a whole recipe with +experiment=NAME (a file in conf/experiment/ or "
    "--config-dir DIR/experiment/)",
    "-cn": "pick a whole recipe with +experiment=NAME",
    "--config-path": "add a config folder with --config-dir DIR",
    "-cp": "add a config folder with --config-dir DIR",
    "--hydra-help": "rlpipe does not use Hydra's runtime (hydra.run.dir, job logging): outputs go to "
    "output_dir/run_name; see --help",
    "--run": "runs are the default; drop the flag",
    "-r": "runs are the default; drop the flag",
    "--experimental-rerun": "rerun a finished or killed run with the same command: it resumes from its checkpoint",
}
CFG_EQUIVALENTS = {
    "all": "rlpipe uses no Hydra runtime config; --cfg job prints the whole resolved config",
    "hydra": "rlpipe uses no Hydra runtime config (outputs go to output_dir/run_name); --cfg job prints the config",
}


class UsageError(Exception):
    """A flag problem, said in one line with what to type instead (the CLI exits with code 2)."""


@dataclass
class Parsed:
    """The training command's words, sorted into overrides and flag values."""

    overrides: list[str] = field(default_factory=list)
    cfg: bool = False
    package: str | None = None
    resolve: bool = False
    plan: str | None = None  # "md" | "json"
    miles: bool = False
    info: str | None = None
    multirun: bool = False
    launcher: str = "local"
    max_concurrent: int | None = None
    config_dirs: list[Path] = field(default_factory=list)
    shell_completion: str | None = None  # "bash" | "zsh"
    traceback: bool = False
    version: bool = False
    help: bool = False
    help_group: str | None = None


BY_NAME = {name: flag for flag in FLAGS for name in flag.names}


def _take(flag: Flag, inline: str | None, words: list[str], name: str) -> str | None:
    """The flag's argument: `--x=v`, or the next word (`--x v`; for an optional one only when it is a known value)."""
    if inline is not None:
        return inline
    if not flag.arg:  # a switch
        return None
    if flag.optional_arg:
        if words and (
            words[0] in flag.values or (not flag.values and not words[0].startswith("-") and "=" not in words[0])
        ):
            return words.pop(0)
        return None
    if not words or words[0].startswith("-"):
        raise UsageError(f"{name} needs a value: {name} {flag.arg}")
    return words.pop(0)


def _check_value(name: str, flag: Flag, value: str) -> str:
    if flag.values and value not in flag.values:
        raise UsageError(f"{name} {value}: expected one of {', '.join(flag.values)}")
    return value


def parse(argv: list[str]) -> Parsed:
    """Sort the words; raises UsageError for an unknown flag, a missing value, or a Hydra flag rlpipe answers
    another way (the message says what to type)."""
    out, words = Parsed(), list(argv)
    while words:
        word = words.pop(0)
        if not word.startswith("-") or word == "-":
            # `+experiment=x` and `experiment=x` mean the same: the root config already lists a default experiment.
            out.overrides.append(word[1:] if word.startswith("+experiment=") else word)
            continue
        name, eq, inline = word.partition("=")
        if name in HYDRA_EQUIVALENTS:
            raise UsageError(f"{name}: {HYDRA_EQUIVALENTS[name]}")
        flag = BY_NAME.get(name)
        if flag is None:
            near = difflib.get_close_matches(name, list(BY_NAME), n=1)
            hint = f"did you mean {near[0]}? " if near else ""
            raise UsageError(f"unknown flag {word}; {hint}the flags are listed by --help")
        value = _take(flag, inline if eq else None, words, name)
        _apply(out, flag.names[0], flag, name, value)
    return out


def _apply(out: Parsed, long: str, flag: Flag, name: str, value: str | None) -> None:
    if long == "--cfg":
        assert value is not None
        if value in CFG_EQUIVALENTS:
            raise UsageError(f"--cfg {value}: {CFG_EQUIVALENTS[value]}")
        out.cfg = _check_value(name, flag, value) == "job"
    elif long == "--package":
        out.package = value
    elif long == "--plan":
        out.plan = _check_value(name, flag, value or "md")
    elif long == "--miles":
        out.miles = True
    elif long == "--info":
        out.info = _check_value(name, flag, value or "all")
    elif long == "--multirun":
        out.multirun = True
    elif long == "--launcher":
        out.launcher = _check_value(name, flag, value or "")
    elif long == "--max-concurrent":
        if not (value or "").isdigit() or int(value or 0) < 1:
            raise UsageError(f"--max-concurrent {value}: expected a whole number >= 1")
        out.max_concurrent = int(value or 0)
    elif long == "--config-dir":
        out.config_dirs.append(Path(value or ""))
    elif long == "--shell-completion":
        out.shell_completion = _check_value(name, flag, value or "").partition("=")[2]
    elif long == "--traceback":
        out.traceback = True
    elif long == "--version":
        out.version = True
    elif long == "--help":
        out.help, out.help_group = True, value
    elif long == "--resolve":
        out.resolve = True
