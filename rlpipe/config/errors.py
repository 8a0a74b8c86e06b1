"""Config problems: collected all at once, each naming the key, the value, the rule and the fix."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class Problem:
    """One thing wrong with the config, in the user's vocabulary."""

    key: str  # dotted path, e.g. "rollout.n_samples"
    message: str  # the rule that is broken, with the values involved
    fix: str = ""  # what to change, as an override when possible
    value: Any = None

    def render(self) -> str:
        value = "" if self.value is None else f" (got {self.value!r})"
        fix = f"\n      fix: {self.fix}" if self.fix else ""
        return f"  - {self.key}{value}: {self.message}{fix}"


class ConfigError(Exception):
    """Raised with every problem found; the CLI prints them and exits with code 2."""

    def __init__(self, problems: list[Problem]):
        self.problems = list(problems)
        super().__init__(self.render())

    def render(self) -> str:
        n = len(self.problems)
        head = f"rlpipe: the config has {n} problem{'s' if n != 1 else ''}:"
        return "\n".join([head, *(p.render() for p in self.problems)])
