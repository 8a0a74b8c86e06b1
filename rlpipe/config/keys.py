"""Every valid dotted key, from the schema, and the key check that runs before Hydra.

Hydra's own message for a typo (`rollout.n_sample=8`) suggests `+rollout.n_sample`, the wrong fix. We
check override keys against the schema first and suggest the nearest real key instead.
"""

from __future__ import annotations

import difflib
import types
import typing
from functools import cache
from pathlib import Path

from pydantic import BaseModel

from rlpipe.config.errors import Problem
from rlpipe.config.schema import EvalDataset, RunConfig

# Keys under these prefixes are free-form maps: anything below is accepted (values checked later).
FREE_PREFIXES: tuple[str, ...] = ("sglang.extra.",)
DATASETS_PREFIX = "eval.datasets."


def _model_class(annotation: object) -> type[BaseModel] | None:
    """The pydantic model inside `Model` or `Model | None`, else None."""
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return annotation
    if typing.get_origin(annotation) in (typing.Union, types.UnionType):
        for arg in typing.get_args(annotation):
            if isinstance(arg, type) and issubclass(arg, BaseModel):
                return arg
    return None


def _walk(model: type[BaseModel], prefix: str) -> list[str]:
    keys = []
    for name, info in model.model_fields.items():
        key = f"{prefix}{name}"
        keys.append(key)
        sub = _model_class(info.annotation)
        if sub is not None:
            keys.extend(_walk(sub, key + "."))
    return keys


@cache
def schema_keys() -> frozenset[str]:
    """All dotted keys a config may set (groups and leaves)."""
    return frozenset(_walk(RunConfig, ""))


def is_known_key(key: str) -> bool:
    if key in schema_keys() or any(key.startswith(p) for p in FREE_PREFIXES):
        return True
    if key.startswith(DATASETS_PREFIX):  # eval.datasets.<name>[.<field>]
        rest = key[len(DATASETS_PREFIX) :].split(".")
        return len(rest) == 1 or (len(rest) == 2 and rest[1] in EvalDataset.model_fields)
    return False


def suggest(key: str) -> str:
    """A did-you-mean fix for an unknown key: the nearest schema key, else the valid keys of its group."""
    keys = sorted(schema_keys())
    if key.startswith(DATASETS_PREFIX) and key.count(".") == 3:  # eval.datasets.<name>.<field>: a dataset's fields
        dataset, _, leaf = key.rpartition(".")
        close = difflib.get_close_matches(leaf, list(EvalDataset.model_fields), n=1, cutoff=0.6)
        if close:
            return f"did you mean `{dataset}.{close[0]}`?"
        return "valid keys of an eval dataset: " + ", ".join(EvalDataset.model_fields)
    close = difflib.get_close_matches(key, keys, n=1, cutoff=0.6)
    if not close:  # compare the last component within the same group ("rollout.samples" -> n_samples)
        group, _, leaf = key.rpartition(".")
        siblings = [k for k in keys if k.rpartition(".")[0] == group]
        names = difflib.get_close_matches(leaf, [k.rpartition(".")[2] for k in siblings], n=1, cutoff=0.5)
        close = [f"{group}.{names[0]}" if group else names[0]] if names else []
    if close:
        return f"did you mean `{close[0]}`?"
    group = key.split(".")[0]
    fields = sorted(k for k in keys if k.startswith(group + ".") and k.count(".") == 1)
    if fields:
        return f"valid keys in `{group}`: " + ", ".join(f.split(".", 1)[1] for f in fields)
    return "valid top-level keys: " + ", ".join(sorted(k for k in keys if "." not in k))


def group_options(conf_dir: Path, group: str) -> list[str]:
    """Option names of a config group folder (conf/<group>/<option>.yaml)."""
    return sorted(p.stem for p in (conf_dir / group).glob("*.yaml"))


def check_overrides(overrides: list[str], conf_dir: Path) -> list[Problem]:
    """Check each CLI override's key (not its value) against the schema and the group folders."""
    from hydra.core.override_parser.overrides_parser import OverridesParser
    from hydra.errors import HydraException

    problems: list[Problem] = []
    parser = OverridesParser.create()
    for text in overrides:
        try:
            (override,) = parser.parse_overrides([text])
        except HydraException as exc:
            problems.append(Problem(text, f"cannot parse this override: {exc}", "write it as key=value"))
            continue
        key = override.key_or_group
        if (conf_dir / key).is_dir():  # a group choice: model=qwen3-4B, +experiment=tiny-cpu
            if override.is_delete():
                continue
            choices = (
                list(override.sweep_string_iterator()) if override.is_sweep_override() else [str(override.value())]
            )
            options = group_options(conf_dir, key)
            for choice in choices:
                if choice not in options:
                    near = difflib.get_close_matches(choice, options, n=1)
                    hint = f"did you mean `{key}={near[0]}`? " if near else ""
                    problems.append(
                        Problem(key, f"no option `{choice}` in conf/{key}/", hint + "options: " + ", ".join(options))
                    )
            continue
        if key.startswith("hydra."):
            problems.append(Problem(key, "Hydra runtime settings are not used by rlpipe", "remove this override"))
        elif not is_known_key(key):
            problems.append(Problem(key, "unknown key", suggest(key)))
    return problems


def repeated_overrides(overrides: list[str]) -> list[str]:
    """A warning for each key given more than once: Hydra keeps the last value without a word, which is what a
    wrapper script appending overrides wants, and a surprise when it is a slip."""
    given: dict[str, list[str]] = {}
    for text in overrides:
        given.setdefault(text.split("=", 1)[0].lstrip("+~"), []).append(text)
    return [
        f"{key}: given {len(texts)} times ({', '.join(texts)}); the last one is used"
        for key, texts in given.items()
        if len(texts) > 1
    ]
