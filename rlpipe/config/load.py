"""From CLI overrides to a `Resolved` run: key check -> Hydra compose -> pydantic -> resolve.

Every step reports all of its problems at once as a `ConfigError`; none of them imports torch, Ray,
Megatron or SGLang, so a bad config fails in well under a second.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from pydantic import ValidationError

from rlpipe.config.errors import ConfigError, Problem
from rlpipe.config.keys import check_overrides, suggest
from rlpipe.config.resolve import Resolved, resolve
from rlpipe.config.schema import RunConfig

CONF_DIR = Path(__file__).resolve().parents[2] / "conf"

# pydantic error type -> the rule in the user's words
_FRIENDLY = {
    "int_parsing": "expected a whole number",
    "int_from_float": "expected a whole number, not a fraction",
    "float_parsing": "expected a number",
    "bool_parsing": "expected true or false",
    "string_type": "expected a string",
    "greater_than": "must be greater than {gt}",
    "greater_than_equal": "must be at least {ge}",
    "less_than": "must be less than {lt}",
    "less_than_equal": "must be at most {le}",
    "literal_error": "must be one of {expected}",
    "missing": "is required",
    "dict_type": "expected a mapping of keys to values",
    "list_type": "expected a list",
}


def problems_from_validation(exc: ValidationError) -> list[Problem]:
    """pydantic's errors, translated: dotted key, what is wrong, how to fix it."""
    problems = []
    for err in exc.errors():
        loc = [str(p) for p in err["loc"] if not str(p).startswith(("function-", "tagged-union"))]
        key = ".".join(loc)
        if err["type"] == "extra_forbidden":
            problems.append(Problem(key, "unknown key", suggest(key)))
            continue
        template = _FRIENDLY.get(err["type"])
        message = template.format(**err.get("ctx", {})) if template else err["msg"]
        problems.append(Problem(key, message, f"set {key} to a valid value", err.get("input")))
    return problems


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
    return resolve(validate(compose(overrides, conf_dir)), check_paths=check_paths)
