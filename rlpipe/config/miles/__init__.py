"""Miles interop: a resolved run as a Miles launch script, and a Miles/slime launch script as an experiment.

Export (`export_miles`, `python launch.py --miles`): the eight arrays of a Miles script (MODEL_ARGS ... SGLANG_ARGS,
plus MISC_ARGS and WANDB_ARGS as Miles' own scripts have them) and the `python3 train.py` line with the cluster
flags. Each field goes to the flag its schema `json_schema_extra["miles"]` names. A value equal to Miles' own
default (`MILES_DEFAULTS`, read from Miles' and Megatron's argument parsers) is left out; everything else is spelled,
derived values included, so Miles validates them again.

Import (`import_miles`, `python -m rlpipe.config.miles import SCRIPT`): the bash is read (`shell`), the flags of its
train line mapped back to schema keys with Miles' defaults where rlpipe's differ (`importer`).

Modules: `flags` (the flag table, shared), `shell` (reading bash), `export`, `importer`, `cli`.

Quoting and secrets: every word of the script goes through `_bash_word`, the one place that writes a value into
bash: `shlex.quote`, so no config string can run code; a secret (a secret-named key such as sglang.extra.api_key,
credentials inside a URL, see rlpipe.config.secrets) is written as `"${RLPIPE_SECRET_<FLAG>:?}"` instead, and the
header names each such variable with the value redacted. Comment lines are redacted and kept to one line.

Departures: `sglang.log_level` is exported only when it differs from rlpipe's default (`warning`, quieter than
SGLang's `info`), since it changes no result. Miles forces `--bf16` and the distributed optimizer on whatever the
flags say; rlpipe maps those flags one to one and leaves the recipe to say what it means.
"""

from rlpipe.config.miles.cli import main
from rlpipe.config.miles.export import export_miles, miles_arrays, miles_cluster_args
from rlpipe.config.miles.flags import MEGATRON_MODEL_SWITCHES, Unmapped, classify, flag_fields
from rlpipe.config.miles.importer import ImportResult, import_miles, to_experiment_yaml
from rlpipe.config.miles.shell import BashSyntaxError, lex

__all__ = [
    "MEGATRON_MODEL_SWITCHES",
    "BashSyntaxError",
    "ImportResult",
    "Unmapped",
    "classify",
    "export_miles",
    "flag_fields",
    "import_miles",
    "lex",
    "main",
    "miles_arrays",
    "miles_cluster_args",
    "to_experiment_yaml",
]
