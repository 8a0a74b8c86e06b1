"""`--info`: Hydra's own report on the composition (config search path, defaults list and tree, the composed config
before rlpipe's schema and resolver), for Hydra users who debug a config that way.

Hydra prints it from `Hydra.show_info`, the code behind its own `--info` flag; it is not public API, which is why
hydra-core is pinned (pyproject.toml). rlpipe's overrides are translated as for a run, so the report shows what the
run would compose.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from rlpipe.config.load import CONF_DIR, check_composable, hydra_overrides


def show_info(topic: str, overrides: list[str], extra_dirs: Sequence[Path] = ()) -> int:
    """Print Hydra's `--info TOPIC` for these overrides; raises ConfigError for overrides that would not compose."""
    from hydra import initialize_config_dir
    from hydra.core.global_hydra import GlobalHydra

    conf_dirs = (CONF_DIR, *extra_dirs)
    check_composable(overrides, conf_dirs)
    with initialize_config_dir(config_dir=str(CONF_DIR), version_base=None, job_name="rlpipe"):
        hydra = GlobalHydra.instance().hydra
        assert hydra is not None
        hydra.show_info(topic, config_name="config", overrides=hydra_overrides(overrides, conf_dirs))
    return 0
