"""Configuration: schema, composition, resolution, errors, Miles import/export.

The only package that reads overrides; everything else receives the frozen `Resolved` run.
"""

from rlpipe.config.errors import ConfigError, Problem
from rlpipe.config.load import CONF_DIR, load
from rlpipe.config.resolve import Resolved, Topology
from rlpipe.config.schema import RunConfig

__all__ = ["CONF_DIR", "ConfigError", "Problem", "Resolved", "RunConfig", "Topology", "load"]
