"""The mutable state the resolution rules share, in a module of its own so that rule modules import it without
importing each other (`rlpipe.config.resolve` runs the rules; `paths`, `files`, `identity` hold some of them)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from rlpipe.config.errors import Problem


@dataclass(frozen=True)
class Derivation:
    """A value the resolver filled in, and why (shown by `--cfg job` and the start-of-run table)."""

    key: str
    value: Any
    reason: str


@dataclass
class Resolver:
    """Mutable state shared by the rules: the config as a nested dict, plus what they found."""

    d: dict[str, Any]
    derivations: list[Derivation] = field(default_factory=list)
    problems: list[Problem] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)
    topology: dict[str, Any] = field(default_factory=dict)
    check_paths: bool = True  # False for --cfg job / --miles: a missing path is then a warning

    def path_problem(self, key: str, message: str, fix: str, value: Any = None) -> None:
        if self.check_paths:
            self.problem(key, message, fix, value)
        else:
            self.warn(key, f"{message} ({value})" if value is not None else message)

    def get(self, key: str) -> Any:
        node: Any = self.d
        for part in key.split("."):
            node = node[part]
        return node

    def derive(self, key: str, value: Any, reason: str) -> None:
        *parents, leaf = key.split(".")
        node = self.d
        for part in parents:
            node = node[part]
        node[leaf] = value
        self.derivations.append(Derivation(key, value, reason))

    def derived(self, key: str) -> bool:
        """Whether a rule filled `key` in (rather than the user)."""
        return any(d.key == key for d in self.derivations)

    def problem(self, key: str, message: str, fix: str = "", value: Any = None) -> None:
        self.problems.append(Problem(key, message, fix, value))

    def warn(self, key: str, message: str) -> None:
        self.warnings.append(f"{key}: {message}")
