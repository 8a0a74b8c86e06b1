"""From CLI overrides to a `Resolved` run: key check -> Hydra compose -> pydantic -> resolve.

Every step reports all of its problems at once as a `ConfigError`; none of them imports torch, Ray,
Megatron or SGLang, so a bad config fails in well under a second.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

from pydantic import ValidationError

from rlpipe.config.errors import ConfigError, Problem
from rlpipe.config.keys import check_overrides, repeated_overrides
from rlpipe.config.resolve import Resolved, resolve
from rlpipe.config.schema import RunConfig
from rlpipe.config.validation import problems_from_validation

CONF_DIR = Path(__file__).resolve().parents[2] / "conf"


def _hydra_overrides(overrides: list[str], conf_dir: Path) -> list[str]:
    """Plain `key=value` on a schema key becomes `++key=value`: the YAMLs need not list every field, and
    the key was already checked against the schema (Hydra's struct mode would reject it otherwise)."""
    out = []
    for text in overrides:
        key = text.split("=", 1)[0]
        plain = "=" in text and not key.startswith(("+", "~")) and not (conf_dir / key).is_dir()
        out.append(f"++{text}" if plain else text)
    return out


def compose(overrides: list[str], conf_dir: Path = CONF_DIR) -> dict[str, Any]:
    """Hydra composition of conf/config.yaml with the overrides, as a plain dict."""
    problems = check_overrides(overrides, conf_dir)
    if problems:
        raise ConfigError(problems)
    from hydra import compose as hydra_compose
    from hydra import initialize_config_dir
    from hydra.errors import HydraException
    from omegaconf import OmegaConf
    from omegaconf.errors import OmegaConfBaseException

    try:
        with initialize_config_dir(config_dir=str(conf_dir), version_base=None, job_name="rlpipe"):
            cfg = hydra_compose(config_name="config", overrides=_hydra_overrides(overrides, conf_dir))
        container = OmegaConf.to_container(cfg, resolve=True)
    except (HydraException, OmegaConfBaseException) as exc:
        raise ConfigError([Problem("overrides", str(exc).splitlines()[0], "check the override syntax")]) from None
    assert isinstance(container, dict)
    container.pop("hydra", None)
    return container  # type: ignore[return-value]


def validate(raw: dict[str, Any]) -> RunConfig:
    try:
        return RunConfig.model_validate(raw)
    except ValidationError as exc:
        raise ConfigError(problems_from_validation(exc)) from None


def load(overrides: list[str], conf_dir: Path = CONF_DIR, check_paths: bool = True) -> Resolved:
    """The whole path from CLI words to the resolved run; raises ConfigError with every problem found."""
    run = resolve(validate(compose(overrides, conf_dir)), check_paths=check_paths)
    return dataclasses.replace(run, warnings=(*repeated_overrides(overrides), *run.warnings))
