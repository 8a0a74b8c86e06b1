"""Tab completion of the `rlpipe` command for bash and zsh.

    rlpipe completion bash|zsh        print the script (`source <(rlpipe completion bash)` tries it out)
    rlpipe completion install [SHELL] write it to $XDG_DATA_HOME/rlpipe/completion.SHELL and source it from the rc file

The scripts know no words themselves: each TAB runs one hidden query, so the words always match the installed rlpipe
(verbs, flags, config groups and their options on the search path, schema keys, allowed values):

    rlpipe completion query bash TEXT LINE
        LINE: the command line up to the cursor (${COMP_LINE:0:COMP_POINT}); TEXT: the part of the current word
        readline replaces (the completion function's $2: bash breaks words at `=` and `:` too). Prints the COMPREPLY
        entries, one a line: each candidate cut to TEXT, with a space after a finished one (the script registers
        with `complete -o nospace`, so `model=` and `rollout.` leave the cursor on the word).
    rlpipe completion query zsh -- WORD... CURRENT
        the words after the command name, then the word being typed. Prints whole candidates, one a line; the script
        adds those ending in `=` or `.` without a space.

No candidates: both scripts fall back to file names (`import SCRIPT`, `convert --hf DIR`, `--config-dir DIR`).
The query reads the schema with pydantic and lists the config folders; it imports no Hydra, torch, Ray or Megatron.
"""

from __future__ import annotations

import os
import shlex
import sys
import typing
from collections.abc import Iterable
from pathlib import Path

from rlpipe.cli.flags import BY_NAME, FLAGS, Flag
from rlpipe.cli.verbs import PROG, VERBS
from rlpipe.config.keys import config_groups, field_info, group_options, schema_groups, schema_keys, union_members
from rlpipe.config.load import search_path

SHELLS = ("bash", "zsh")
TRAINING_VERBS = ("train", "plan", "export")
EXTRA_FLAGS = {"plan": ("--json",)}  # rlpipe plan --json = --plan=json
SUBCOMMANDS = {  # the first word of the verbs with their own parsers (tests check them against those parsers)
    "convert": ("hf-to-torch-dist", "torch-dist-to-hf"),
    "launcher": ("slurm", "k8s"),
    "completion": ("bash", "zsh", "install"),
}
MARK = "# rlpipe tab completion (rlpipe completion install)"

BASH = """# bash completion for rlpipe; from `rlpipe completion bash`. Each TAB asks `rlpipe completion query`.
_rlpipe_complete() {
    local reply
    COMPREPLY=()
    while IFS= read -r reply; do
        COMPREPLY+=("$reply")
    done < <(command "$1" completion query bash "$2" "${COMP_LINE:0:COMP_POINT}" 2>/dev/null)
}
complete -o nospace -o default -F _rlpipe_complete rlpipe
"""
ZSH = """# zsh completion for rlpipe; from `rlpipe completion zsh`. Each TAB asks `rlpipe completion query`.
_rlpipe() {
    local -a reply query=("${(@Q)words[2,CURRENT-1]}" "${(Q)PREFIX}")
    reply=(${(f)"$(command $words[1] completion query zsh -- "${query[@]}" 2>/dev/null)"})
    if (( ! $#reply )); then
        _files
        return
    fi
    compadd -S '' -- ${(M)reply:#*[=.]}
    compadd -- ${reply:#*[=.]}
}
(( $+functions[compdef] )) || { autoload -Uz compinit && compinit; }
compdef _rlpipe rlpipe
"""


def script(shell: str) -> str:
    """The completion script for `shell` (bash or zsh); `--shell-completion install=SHELL` prints it too."""
    if shell not in SHELLS:
        raise ValueError(f"no completion script for {shell!r}; shells: {', '.join(SHELLS)}")
    return BASH if shell == "bash" else ZSH


def finished(word: str) -> bool:
    """Whether a candidate is a whole word (the shell adds a space), not a step (`model=`, `rollout.`)."""
    return not word.endswith(("=", "."))


def _matching(words: Iterable[str], current: str) -> list[str]:
    return sorted({w for w in words if w.startswith(current)})


def candidates(words: list[str], current: str) -> list[str]:
    """The completions of `current` after `words` (the words after `rlpipe`): whole words, sorted, once each."""
    if not words:
        if current.startswith("-"):
            return _matching((n for f in FLAGS for n in f.names), current)
        return _matching(VERBS, current) or _training(words, current)  # no verb fits: `rlpipe key=value` trains
    verb, rest = words[0], words[1:]
    if verb in TRAINING_VERBS:
        return _training(rest, current, EXTRA_FLAGS.get(verb, ()))
    if "=" in verb or verb.startswith("-"):
        return _training(words, current)
    if verb == "launcher" and rest:  # launcher slurm|k8s [options] overrides...
        return _overrides(current, _config_dirs(rest))
    if verb == "completion" and rest == ["install"]:
        return _matching(SHELLS, current)
    return _matching(SUBCOMMANDS.get(verb, ()), current) if not rest else []


def _training(words: list[str], current: str, extra_flags: tuple[str, ...] = ()) -> list[str]:
    """Completions among the training command's words: overrides, flags, and the argument of the flag before."""
    flag = BY_NAME.get(words[-1]) if words else None
    if flag is not None and flag.arg:
        values = _matching(_flag_values(flag), current)
        if not flag.optional_arg:
            return values
        return sorted({*values, *_training(words[:-1], current, extra_flags)})  # `--info` alone, or `--info TOPIC`
    if current.startswith("-"):
        name, eq, _ = current.partition("=")
        if eq:
            flag = BY_NAME.get(name)
            return _matching((f"{name}={v}" for v in (_flag_values(flag) if flag else ())), current)
        return _matching([*(n for f in FLAGS for n in f.names), *extra_flags], current)
    return _overrides(current, _config_dirs(words))


def _flag_values(flag: Flag) -> list[str]:
    """The words a flag's argument may be: its table values, or the schema groups for a GROUP (`--help rollout`)."""
    if flag.values:
        return list(flag.values)
    if flag.arg == "GROUP":
        return schema_groups()
    return []


def _config_dirs(words: list[str]) -> tuple[Path, ...]:
    """The config search path, with the folders of any `--config-dir DIR` among the words (their groups complete)."""
    extra = []
    for i, word in enumerate(words):
        name, eq, value = word.partition("=")
        if BY_NAME.get(name) is BY_NAME["--config-dir"]:
            value = value if eq else (words[i + 1] if i + 1 < len(words) else "")
            extra.append(Path(value).expanduser())
    return search_path([d for d in extra if str(d)])


def _overrides(current: str, dirs: tuple[Path, ...]) -> list[str]:
    """Completions of a Hydra override: `group=option`, `key=value`, a key one level at a time; with `+`, `++`, `~`."""
    body = current.lstrip("+~")
    sigil = current[: len(current) - len(body)]
    key, eq, _ = body.partition("=")
    if eq:
        values = group_options(dirs, key) if key in config_groups(dirs) else _allowed_values(key)
        return _matching((f"{sigil}{key}={v}" for v in values), current)
    words = [sigil + w for w in _key_steps(body, dirs)]
    if sigil.startswith("~"):  # `~key` deletes: no value follows
        words = [w.removesuffix("=") for w in words]
    return _matching(words, current)


def _key_steps(prefix: str, dirs: tuple[Path, ...]) -> list[str]:
    """The next step of a key: `group=` for a config group with a choice (a group with one option has nothing to
    pick, so `roll` goes straight to `rollout.`), and the schema keys at the prefix's depth: `leaf=`, `group.`."""
    depth = prefix.count(".")
    groups = [f"{g}=" for g in config_groups(dirs) if depth == 0 and len(group_options(dirs, g)) > 1]
    keys = [f"{k}=" if field_info(k) else f"{k}." for k in schema_keys() if k.count(".") == depth]
    return _matching([*groups, *keys], prefix)


def _allowed_values(key: str) -> list[str]:
    """The values a key's annotation allows, as typed on the command line: its Literal words, true/false for a bool,
    and null when it is Optional; [] for free values (numbers, paths, text)."""
    info = field_info(key)
    kinds = union_members(info.annotation) if info else []
    words: list[str] = []
    for kind in kinds:
        if kind is bool:
            words += ["true", "false"]
        elif typing.get_origin(kind) is typing.Literal:
            words += [_yaml_word(v) for v in typing.get_args(kind)]
    return [*words, "null"] if words and type(None) in kinds else words


def _yaml_word(value: object) -> str:
    return str(value).lower() if isinstance(value, bool) or value is None else str(value)


def bash_reply(text: str, line: str) -> list[str]:
    """COMPREPLY for the line up to the cursor: the candidates cut to `text` (what readline replaces), a space after
    the finished ones."""
    words = line.split()[1:]
    current = "" if not line or line[-1].isspace() or not words else words.pop()
    cut = len(current) - len(text) if current.endswith(text) else 0
    return [w[cut:] + (" " if finished(w) else "") for w in candidates(words, current)]


def _query(args: list[str]) -> int:
    """The hidden `query` subcommand the scripts call (see the module docstring); prints one entry a line."""
    if len(args) == 3 and args[0] == "bash":
        replies = bash_reply(args[1], args[2])
    elif len(args) >= 3 and args[:2] == ["zsh", "--"]:
        replies = candidates(args[2:-1], args[-1])
    else:
        return 2
    sys.stdout.write("".join(f"{r}\n" for r in replies))  # none: no line at all (an empty one would be a reply)
    return 0


def rc_file(shell: str) -> Path:
    """The interactive shell's startup file: ~/.bashrc, or $ZDOTDIR/.zshrc (ZDOTDIR defaults to ~)."""
    home = Path.home()
    return home / ".bashrc" if shell == "bash" else Path(os.environ.get("ZDOTDIR") or home) / ".zshrc"


def install(shell: str) -> str:
    """Write the script under $XDG_DATA_HOME (default ~/.local/share) and source it from the rc file once (the MARK
    comment finds an earlier install); returns what was done."""
    data = Path(os.environ.get("XDG_DATA_HOME") or Path.home() / ".local" / "share")
    target = data / PROG / f"completion.{shell}"
    target.parent.mkdir(parents=True, exist_ok=True)
    target.write_text(script(shell))
    rc = rc_file(shell)
    text = rc.read_text() if rc.exists() else ""
    path = shlex.quote(str(target))
    line = f"[ -f {path} ] && . {path}  {MARK}"
    if MARK in text:
        added = f"{rc} already sources it"
    else:
        rc.write_text(text + ("" if not text or text.endswith("\n") else "\n") + line + "\n")
        added = f"added to {rc}:\n  {line}"
    return f"wrote {target}\n{added}\nactivate it in this shell: source {rc}"


def usage(prog: str) -> str:
    return (
        f"usage: {prog} bash|zsh          print the completion script\n"
        f"       {prog} install [SHELL]   install it for bash or zsh (default: your $SHELL)"
    )


def _install_command(args: list[str], prog: str) -> int:
    """`install [SHELL]`: the shell named, else the one $SHELL names; exit code 2 for any other shell."""
    shell = args[0] if args else Path(os.environ.get("SHELL", "")).name
    if shell not in SHELLS:
        given = f"`{shell}`" if args else f"$SHELL is `{os.environ.get('SHELL', '')}`"
        print(
            f"{prog} install: {given}: only bash and zsh are supported; say which: {prog} install bash", file=sys.stderr
        )
        return 2
    print(install(shell))
    return 0


def main(argv: list[str], prog: str) -> int:
    """`rlpipe completion ...`: print or install a script, or answer a query; returns the exit code."""
    if argv[:1] == ["query"]:
        return _query(argv[1:])
    if argv[:1] in (["-h"], ["--help"]):
        print(usage(prog))
        return 0
    if len(argv) == 1 and argv[0] in SHELLS:
        print(script(argv[0]), end="")
        return 0
    if argv[:1] == ["install"] and len(argv) <= 2:
        return _install_command(argv[1:], prog)
    print(usage(prog), file=sys.stderr)
    return 2
