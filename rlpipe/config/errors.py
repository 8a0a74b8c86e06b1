"""Config problems: collected all at once, each naming the key, the value, the rule and the fix."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from rlpipe.config.secrets import redact, redact_text


@dataclass(frozen=True)
class Problem:
    """One thing wrong with the config, in the user's vocabulary."""

    key: str  # dotted path, e.g. "rollout.n_samples"
    message: str  # the rule that is broken, with the values involved
    fix: str = ""  # what to change, as an override when possible
    value: Any = None

    def render(self) -> str:
        """The problem as the CLI prints it; secrets in the value, message or key (an override) are redacted."""
        value = "" if self.value is None else f" (got {redact(self.value, self.key)!r})"
        fix = f"\n      fix: {redact_text(self.fix)}" if self.fix else ""
        return f"  - {redact_text(self.key)}{value}: {redact_text(self.message)}{fix}"


class ConfigError(Exception):
    """Raised with every problem found; the CLI prints them and exits with code 2."""

    def __init__(self, problems: list[Problem]):
        self.problems = list(problems)
        super().__init__(self.render())

    def render(self) -> str:
        n = len(self.problems)
        head = f"rlpipe: the config has {n} problem{'s' if n != 1 else ''}:"
        return "\n".join([head, *(p.render() for p in self.problems)])
