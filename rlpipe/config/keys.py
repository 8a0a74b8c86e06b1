"""Every valid dotted key, from the schema, and the key check that runs before Hydra.

Hydra's own message for a typo (`rollout.n_sample=8`) suggests `+rollout.n_sample`, the wrong fix. We
check override keys against the schema first and suggest the nearest real key instead.
"""

from __future__ import annotations

import difflib
import types
import typing
from collections.abc import Sequence
from functools import cache
from pathlib import Path

from pydantic import BaseModel
from pydantic.fields import FieldInfo

from rlpipe.config.errors import Problem
from rlpipe.config.mistakes import sweep_without_multirun, unparsable
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


def field_info(key: str) -> FieldInfo | None:
    """The schema field of a dotted key (`rollout.n_samples`), or None for a group or an unknown key."""
    model: type[BaseModel] | None = RunConfig
    *groups, leaf = key.split(".")
    for name in groups:
        info = model.model_fields.get(name) if model else None
        model = _model_class(info.annotation) if info else None
    info = model.model_fields.get(leaf) if model else None
    return None if info is None or _model_class(info.annotation) else info


def group_fields(group: str) -> list[tuple[str, FieldInfo]]:
    """(dotted key, field) for every leaf directly in a schema group (`rollout`); [] when it is not a group."""
    info = RunConfig.model_fields.get(group)
    model = _model_class(info.annotation) if info else None
    if model is None:
        return []
    return [(f"{group}.{name}", f) for name, f in model.model_fields.items() if _model_class(f.annotation) is None]


def schema_groups() -> list[str]:
    """The top-level keys that are groups of keys (`rollout`, `lora`), in schema order."""
    return [name for name, info in RunConfig.model_fields.items() if _model_class(info.annotation)]


def union_members(annotation: object) -> list[object]:
    """`A | B | None` -> [A, B, NoneType], each with any `Annotated[...]` removed."""
    while typing.get_origin(annotation) is typing.Annotated:
        annotation = typing.get_args(annotation)[0]
    if typing.get_origin(annotation) in (typing.Union, types.UnionType):
        return [m for a in typing.get_args(annotation) for m in union_members(a)]
    return [annotation]


def value_kind(key: str) -> str | None:
    """ "list" for a key holding a list, "str" for free text (`lora.target_modules` is a comma list in one string),
    else None: what `key=a,b` was more likely meant as when it is not a sweep."""
    info = field_info(key)
    kinds = union_members(info.annotation) if info else []
    if any(typing.get_origin(k) in (list, tuple) for k in kinds):
        return "list"
    return "str" if str in kinds else None


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


def config_groups(conf_dirs: Sequence[Path]) -> list[str]:
    """Group names: the folders of every config folder on the search path (conf/<group>/)."""
    return sorted({p.name for d in conf_dirs if d.is_dir() for p in d.iterdir() if p.is_dir()})


def is_group(conf_dirs: Sequence[Path], key: str) -> bool:
    return bool(key) and any((d / key).is_dir() for d in conf_dirs)


def group_options(conf_dirs: Sequence[Path], group: str) -> list[str]:
    """Option names of a config group across the search path (<dir>/<group>/<option>.yaml)."""
    return sorted({p.stem for d in conf_dirs for p in (d / group).glob("*.yaml")})


def shadowed_options(conf_dirs: Sequence[Path]) -> list[Problem]:
    """An option in a later config folder named like one in an earlier folder is never read (Hydra takes the
    first): say so instead of silently training on the other file. A byte-identical copy (a project that copied
    conf/, or a Ray job's working_dir, which uploads the checkout's conf/ link as a copy) reads the same either way."""
    problems, seen = [], {}
    for d in conf_dirs:
        for path in sorted(d.glob("*/*.yaml")):
            key = (path.parent.name, path.stem)
            if key in seen and path.read_bytes() != seen[key].read_bytes():
                problems.append(
                    Problem(
                        f"{key[0]}={key[1]}",
                        f"{path} has the name of {seen[key]}, which is found first, so yours would not be read",
                        f"rename it (e.g. {path.with_stem(path.stem + '-mine').name}) and pick that name",
                    )
                )
            elif key not in seen:
                seen[key] = path
    return problems


def check_overrides(overrides: list[str], conf_dirs: Sequence[Path]) -> list[Problem]:
    """Check each CLI override's key (not its value) against the schema and the group folders."""
    from hydra.core.override_parser.overrides_parser import OverridesParser
    from hydra.errors import HydraException

    problems: list[Problem] = []
    parser = OverridesParser.create()
    for text in overrides:
        try:
            (override,) = parser.parse_overrides([text])
        except HydraException as exc:
            problems.append(unparsable(text, str(exc)))
            continue
        key = override.key_or_group
        # sweeps are expanded (rlpipe.sweep) before a single run's overrides get here
        values = list(override.sweep_string_iterator()) if override.is_sweep_override() else [str(override.value())]
        if is_group(conf_dirs, key):  # a group choice: model=qwen3-4B, +experiment=tiny-cpu
            if override.is_delete():
                continue
            options = group_options(conf_dirs, key)
            for choice in [v for v in values if v not in options]:
                near = difflib.get_close_matches(choice, options, n=1)
                hint = f"did you mean `{key}={near[0]}`? " if near else ""
                problems.append(
                    Problem(key, f"no option `{choice}` in conf/{key}/", hint + "options: " + ", ".join(options))
                )
            if len(values) > 1 and all(v in options for v in values):
                problems.append(sweep_without_multirun(text, key, values, None))
            continue
        if override.is_sweep_override() and is_known_key(key):
            problems.append(sweep_without_multirun(text, key, values, value_kind(key)))
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
