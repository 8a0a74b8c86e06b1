"""The common Hydra override slips, answered with what to type instead of Hydra's grammar-level message.

- a comma list without `-m` (`optim.lr=1e-3,3e-3`, `lora.target_modules=q_proj,v_proj`): a sweep, or a list;
- `+key=value` on a key the config already has (`+` adds a key; rlpipe's keys all exist);
- a value with characters Hydra's grammar only takes quoted (`run_name=réponse`, `rollout.stop=[</s>]`);
- everything else Hydra says, with the override it was about and a pointer to the grammar.
"""

from __future__ import annotations

import re
import shlex

from rlpipe.config.errors import Problem

GRAMMAR = "https://hydra.cc/docs/advanced/override_grammar/basic/"


def sweep_without_multirun(text: str, key: str, values: list[str], kind: str | None) -> Problem:
    """`key=a,b` outside a sweep: Hydra reads it as several values for one run. `kind` ("list", "str" or None, from
    the schema) says which single value it more likely meant."""
    message = f"a comma list is a sweep over {len(values)} values; one run takes one value"
    sweep = f"run one job per value with -m: rlpipe train -m {shlex.quote(text)}"
    joined = ",".join(values)
    if kind == "list":
        return Problem(text, message, f"for one list, write {shell_word(f'{key}=[{joined}]')}; to {sweep}")
    if kind == "str":
        quoted = f"{key}='{joined}'"
        return Problem(text, message, f"for the text {joined}, quote it: {shell_word(quoted)}; to {sweep}")
    return Problem(text, message, sweep)


def shell_word(word: str) -> str:
    """`word` as one shell word, in double quotes when that keeps Hydra's inner single quotes readable."""
    if word.isascii() and word.replace("_", "").replace(".", "").replace("=", "").isalnum():
        return word
    return f'"{word}"' if not any(c in word for c in '"$`\\!') else shlex.quote(word)


def unparsable(text: str, hydra_message: str) -> Problem:
    """An override Hydra's grammar rejects; non-ASCII and punctuation in a value need quotes inside the word."""
    key, eq, value = text.partition("=")
    if not eq:
        return Problem(
            text, "is not an override (key=value) or a flag", "write it as key=value, e.g. rollout.n_samples=8"
        )
    odd = sorted({c for c in value if not c.isascii() or c in "\"'<>&;|()!#" or c.isspace()} - {" "})
    if odd and not value.startswith(("'", '"')):
        quoted = f"{key}='{value}'"
        return Problem(
            text,
            f"Hydra's override grammar takes {''.join(odd)!r} in a value only inside quotes",
            f"quote the value inside the word: {shell_word(quoted)} (the outer quotes are the shell's)",
        )
    return Problem(text, f"cannot parse this override: {hydra_message.splitlines()[0]}", f"see {GRAMMAR}")


_ALREADY_THERE = re.compile(r"Could not append to config\. An item is already at '([^']+)'")
_FORCED_GROUP = re.compile(r"force-add of config groups is not supported: '([^']+)'")
_GROUP_TWICE = re.compile(r"Multiple values for ([\w/.-]+)\. To override a value use 'override \1: ([^']+)'")


def hydra_problem(message: str, overrides: list[str]) -> Problem:
    """Hydra's composition error as a Problem naming the override and the fix."""
    there = _ALREADY_THERE.search(message)
    if there:
        key = there.group(1)
        text = next((o for o in overrides if o.lstrip("+").split("=", 1)[0] == key), f"+{key}=...")
        plain = text.lstrip("+")
        return Problem(text, f"`+` adds a key the config lacks, and {key} is already set", f"write {plain}")
    group = _GROUP_TWICE.search(message)
    if group:
        name, option = group.groups()
        text = next((o for o in overrides if o.lstrip("+").split("=", 1)[0] == name), f"+{name}={option}")
        return Problem(text, f"`+` adds a group, and {name} is already chosen", f"write {name}={option}")
    forced = _FORCED_GROUP.search(message)
    if forced:
        text = forced.group(1)
        return Problem(text, "`++` forces a key in; a group is chosen without it", f"write {text.lstrip('+')}")
    return Problem("overrides", message.splitlines()[0], f"check the override syntax: {GRAMMAR}")
