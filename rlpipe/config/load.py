"""From CLI overrides to a `Resolved` run: key check -> Hydra compose -> pydantic -> resolve.

Every step reports all of its problems at once as a `ConfigError`; none of them imports torch, Ray,
Megatron or SGLang, so a bad config fails in well under a second.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from pydantic import ValidationError

from rlpipe.config.errors import ConfigError
from rlpipe.config.keys import check_overrides, is_group, repeated_overrides, shadowed_options
from rlpipe.config.mistakes import hydra_problem
from rlpipe.config.resolve import Resolved, resolve
from rlpipe.config.schema import RunConfig
from rlpipe.config.validation import problems_from_validation

CONF_DIR = Path(__file__).resolve().parents[1] / "conf"  # shipped in the package (the checkout's conf/ links here)


def search_path(config_dirs: Sequence[Path] = (), cwd: Path | None = None) -> tuple[Path, ...]:
    """Where config groups are looked for, in order: the shipped conf/, then ./conf (a project's own experiments,
    e.g. written by `rlpipe import -o conf/experiment/NAME.yaml`), then each `--config-dir`; each folder once."""
    candidates = [CONF_DIR, (cwd or Path.cwd()) / "conf", *config_dirs]
    out: list[Path] = []
    for folder in candidates:
        if folder.is_dir() and all(folder.resolve() != seen.resolve() for seen in out):
            out.append(folder)
    return tuple(out)


def hydra_overrides(overrides: list[str], conf_dirs: Sequence[Path]) -> list[str]:
    """Plain `key=value` on a schema key becomes `++key=value`: the YAMLs need not list every field, and
    the key was already checked against the schema (Hydra's struct mode would reject it otherwise). Config folders
    after the first join Hydra's search path."""
    out = []
    for text in overrides:
        key = text.split("=", 1)[0]
        plain = "=" in text and not key.startswith(("+", "~")) and not is_group(conf_dirs, key)
        out.append(f"++{text}" if plain else text)
    extra = ",".join(f"file://{d.resolve()}" for d in conf_dirs[1:])
    return [*out, f"hydra.searchpath=[{extra}]"] if extra else out


def check_composable(overrides: list[str], conf_dirs: Sequence[Path]) -> None:
    """Raise ConfigError for every override key that is not in the schema or the groups, and every config file
    another one hides, before Hydra sees them."""
    problems = shadowed_options(conf_dirs) + check_overrides(overrides, conf_dirs)
    if problems:
        raise ConfigError(problems)


def compose(overrides: list[str], conf_dir: Path = CONF_DIR, extra_dirs: Sequence[Path] = ()) -> dict[str, Any]:
    """Hydra composition of conf/config.yaml with the overrides, as a plain dict; `extra_dirs` are more folders of
    groups and experiments (see `search_path`)."""
    conf_dirs = (conf_dir, *extra_dirs)
    check_composable(overrides, conf_dirs)
    from hydra import compose as hydra_compose
    from hydra import initialize_config_dir
    from hydra.errors import HydraException
    from omegaconf import OmegaConf
    from omegaconf.errors import OmegaConfBaseException

    try:
        with initialize_config_dir(config_dir=str(conf_dir), version_base=None, job_name="rlpipe"):
            cfg = hydra_compose(config_name="config", overrides=hydra_overrides(overrides, conf_dirs))
        container = OmegaConf.to_container(cfg, resolve=True)
    except (HydraException, OmegaConfBaseException) as exc:
        raise ConfigError([hydra_problem(str(exc), overrides)]) from None
    assert isinstance(container, dict)
    container.pop("hydra", None)
    return container  # type: ignore[return-value]


def validate(raw: dict[str, Any]) -> RunConfig:
    try:
        return RunConfig.model_validate(raw)
    except ValidationError as exc:
        raise ConfigError(problems_from_validation(exc)) from None


def load(
    overrides: list[str], conf_dir: Path = CONF_DIR, check_paths: bool = True, extra_dirs: Sequence[Path] = ()
) -> Resolved:
    """The whole path from CLI words to the resolved run; raises ConfigError with every problem found."""
    run = resolve(validate(compose(overrides, conf_dir, extra_dirs)), check_paths=check_paths)
    return dataclasses.replace(run, warnings=(*repeated_overrides(overrides), *run.warnings))
