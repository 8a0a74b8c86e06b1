"""A resolved run as a Miles launch script (`python launch.py --miles`): the arrays, then the train line.

Each field goes to the flag its schema `json_schema_extra["miles"]` names. A value equal to Miles' own default
(`MILES_DEFAULTS`) is left out; everything else is spelled, derived values included, so Miles validates them again.

Quoting and secrets: every word of the script goes through `_bash_word`, the one place that writes a value into
bash: `shlex.quote`, so no config string can run code; a secret (a secret-named key such as sglang.extra.api_key,
credentials inside a URL, see rlpipe.config.secrets) is written as `"${RLPIPE_SECRET_<FLAG>:?}"` instead, and the
header names each such variable with the value redacted. Comment lines are redacted and kept to one line.

Departures: `sglang.log_level` is exported only when it differs from rlpipe's default (`warning`, quieter than
SGLang's `info`), since it changes no result.
"""

from __future__ import annotations

import json
import shlex
from typing import Any

from pydantic import BaseModel

from rlpipe.config.miles.flags import (
    ARRAYS,
    EXPORT_WHEN_CHANGED,
    EXPRESSED_OTHERWISE,
    GROUP_ARRAY,
    KEY_ARRAY,
    MILES_DEFAULTS,
    MILES_FIXED,
    OPTIONAL_ARRAYS,
    REQUIRED_ARCH,
    SCALED_FLAGS,
    field_value,
    miles_flag,
    miles_forced,
    schema_leaves,
    secret_env_name,
)
from rlpipe.config.resolve import SAMPLING_KEYS, Resolved
from rlpipe.config.schema import RunConfig
from rlpipe.config.secrets import REDACTED, is_secret_key, redact, redact_text


class _Secret(str):
    """A word the exported script must not spell (the value of a secret-named key): `_bash_word` writes an
    environment-variable reference instead. Equal to the real word, so `miles_arrays` still means the real run."""


def _fmt(value: Any) -> str:
    """A flag value as Miles' scripts write it: whole floats without the `.0` (10000, 1), a mapping as JSON (as
    the SGLang launcher passes it), others as str."""
    if isinstance(value, float) and value.is_integer() and abs(value) < 1e15:
        return str(int(value))
    if isinstance(value, dict):
        return json.dumps(value)
    return str(value)


def _flag_args(flag: str, key: str | None, value: Any) -> list[str]:
    """The generic rule: None/False/[] -> nothing, True -> bare flag, Miles' default -> nothing, else flag value.
    The values of a secret-named key are marked `_Secret`."""
    if value is None or value is False or value == []:
        return []
    if value is True:
        return [flag]
    if key in MILES_DEFAULTS and value == MILES_DEFAULTS[key]:
        return []
    values = list(map(_fmt, value)) if isinstance(value, list) else [_fmt(value)]
    return [flag, *(_Secret(v) if key and is_secret_key(key) else v for v in values)]


def _train_iters(cfg: RunConfig) -> int | None:
    """The optimizer steps of the whole run, as Miles sets Megatron's train_iters."""
    ro = cfg.rollout
    if not (ro.num_rollout and ro.batch_size and ro.n_samples and ro.global_batch_size):
        return None
    return ro.num_rollout * ro.batch_size * ro.n_samples // ro.global_batch_size


def _field_args(cfg: RunConfig, key: str, flag: str) -> list[str]:
    """The flags one field becomes; the special cases first, then the generic rule."""
    value, model = field_value(cfg, key), cfg.model
    if key == "model.num_query_groups":
        if value is None or value == model.num_attention_heads:
            return []  # plain multi-head attention is Megatron's default
        return ["--group-query-attention", flag, _fmt(value)]
    derived_kv = (
        model.hidden_size // model.num_attention_heads if model.hidden_size and model.num_attention_heads else None
    )
    if key == "model.kv_channels" and value == derived_kv:
        return []  # Megatron derives exactly this
    if key == "optim.lr_decay_iters" and value == _train_iters(cfg):
        return []  # Megatron decays over train_iters, which Miles sets to the whole run
    if key == "model.rotary_interleaved":
        if not value:
            return []
        kept = "--no-rope-fusion" in cfg.miles.extra_args  # an imported script's own, written back with the rest
        return [flag] if kept else [flag, "--no-rope-fusion"]  # Megatron rejects rope fusion with interleaved RoPE
    if key == "model.add_bias_linear":
        return [flag] if value is False else []  # --disable-bias-linear; None/True is Megatron's default
    if key in ("algo.grpo_std_normalization", "perf.bias_swiglu_fusion"):
        return [] if value else [flag]  # --disable-grpo-std-normalization, --no-bias-swiglu-fusion
    if key == "eval.datasets":
        pairs = [x for name, ds in value.items() for x in (name, ds.path)]
        return [flag, *pairs] if pairs else []
    if key == "sglang.extra":
        return [
            x for name, v in value.items() for x in _flag_args(f"--sglang-{name.replace('_', '-')}", f"{key}.{name}", v)
        ]
    if key in miles_forced(cfg.optim.optimizer):
        return []  # Miles sets these itself (_export_notes says where the run differs)
    if key == "rollout.num_rollout" and cfg.rollout.num_epoch is not None:
        return []  # Miles derives it from --num-epoch, and would ignore --num-epoch beside it
    if key in EXPORT_WHEN_CHANGED and value == dict(schema_leaves())[key].default:
        return []
    return _flag_args(flag, key, value)


def miles_arrays(run: Resolved) -> dict[str, list[str]]:
    """The Miles arrays of a resolved run, as the words bash would hold (unquoted), in ARRAYS order."""
    cfg = run.cfg
    arrays: dict[str, list[str]] = {name: [] for name in ARRAYS}
    for key, info in schema_leaves():
        flag = miles_flag(info)
        group = key.split(".")[0] if "." in key else ""
        if flag is None or group == "cluster" or (group == "lora" and not cfg.lora.rank):
            continue  # rlpipe-only, a train-line flag (miles_cluster_args), or LoRA's settings with LoRA off
        if group == "log" and key != "log.tensorboard" and not cfg.log.wandb and field_value(cfg, key) == info.default:
            continue  # wandb's defaults mean nothing with wandb off; a setting given anyway is kept (a round trip)
        arrays[KEY_ARRAY.get(key, GROUP_ARRAY[group])] += _field_args(cfg, key, flag)
    if not cfg.eval.before_train:
        arrays["EVAL_ARGS"].append("--skip-eval-before-train")
    for flag, (key, units) in SCALED_FLAGS.items():
        value = field_value(cfg, key)
        if value != dict(schema_leaves())[key].default:
            arrays["PERF_ARGS"] += [flag, str(value * units)]
    if _icepop(cfg):  # Miles' own IcePop is a TIS function
        arrays["GRPO_ARGS"] += ["--custom-tis-function-path", MILES_ICEPOP]
    arrays["MISC_ARGS"] += _pass_through_words(cfg.miles.extra_args)
    if arrays["MODEL_ARGS"]:
        arrays["MODEL_ARGS"].append("--use-rotary-position-embeddings")
    return arrays


MILES_ICEPOP = "miles.backends.training_utils.loss_hub.corrections.icepop_function"


def _icepop(cfg: RunConfig) -> bool:
    """Token-level masked TIS: what Miles' icepop_function computes within [--tis-clip-low, --tis-clip]."""
    return cfg.algo.use_tis and cfg.algo.tis_mode == "mask" and cfg.algo.tis_level == "token"


def _pass_through_words(words: list[str]) -> list[str]:
    """miles.extra_args as export words; a secret-named flag's values are marked `_Secret`."""
    out: list[str] = []
    flag = ""
    for word in words:
        flag = word if word.startswith("--") else flag
        out.append(_Secret(word) if word is not flag and is_secret_key(flag) else word)
    return out


def miles_cluster_args(run: Resolved) -> list[str]:
    """The placement flags written on the train line itself, as Miles' scripts do."""
    cl = run.cfg.cluster
    args = ["--actor-num-nodes", str(cl.actor_num_nodes), "--actor-num-gpus-per-node", str(cl.actor_num_gpus_per_node)]
    if cl.colocate:
        args.append("--colocate")  # Miles ignores --rollout-num-gpus here and offloads both ways unless told not to
        args += [
            f"--no-{name}" for name in ("offload-train", "offload-rollout") if not getattr(cl, name.replace("-", "_"))
        ]
    else:
        if cl.rollout_num_gpus is not None:
            args += ["--rollout-num-gpus", str(cl.rollout_num_gpus)]
        args += [f"--{name}" for name in ("offload-train", "offload-rollout") if getattr(cl, name.replace("-", "_"))]
    return args


def _export_notes(cfg: RunConfig) -> list[str]:
    """Comment lines for what the arrays cannot say: rlpipe-only values, per-dataset eval overrides, unset arch."""
    notes = []
    for key, info in schema_leaves():
        if miles_flag(info) is not None or key in EXPRESSED_OTHERWISE or (key == "algo.tis_mode" and _icepop(cfg)):
            continue
        value = field_value(cfg, key)
        expected = MILES_FIXED.get(key, info.default)
        if value != expected:
            shown = value.model_dump() if isinstance(value, BaseModel) else value
            notes.append(f"#   {key} = {redact(shown, key)!r}: no Miles flag")
    for name, ds in cfg.eval.datasets.items():
        for k in SAMPLING_KEYS:
            level = getattr(cfg.eval, k)
            inherited = level if level is not None else (1 if k == "n_samples" else getattr(cfg.rollout, k))
            if getattr(ds, k) != inherited:
                notes.append(
                    f"#   eval.datasets.{name}.{k} = {getattr(ds, k)!r}: Miles' flags give every eval dataset "
                    f"{inherited!r} (use --eval-config for per-dataset values)"
                )
    notes += [
        f"#   {key} = {field_value(cfg, key)!r}, but Miles trains with {forced!r} whatever the flags say"
        for key, forced in miles_forced(cfg.optim.optimizer).items()
        if field_value(cfg, key) != forced
    ]
    notes += [
        f"#   model.{k} is unset (rlpipe reads it from the HF checkpoint): add it to MODEL_ARGS"
        for k in REQUIRED_ARCH
        if getattr(cfg.model, k) is None
    ]
    return ["# Not expressed by the flags below:", *notes] if notes else []


def _comment(line: str) -> str:
    """A comment line safe to write: secrets redacted, and newlines and other control characters escaped, so that
    no config string (a run name, a dataset name) can end the comment and start a command."""
    text = redact_text(line)
    return "".join(c if c.isprintable() else c.encode("unicode_escape").decode("ascii") for c in text)


def _bash_word(word: str, flag: str, secrets: dict[str, str]) -> str:
    """One word as bash source: quoted with shlex.quote (no expansion, no splitting, no globbing), or, for a
    secret, a reference to an environment variable that must be set, recorded in `secrets` with the value
    redacted. The one place the export writes a config value into bash."""
    shown = REDACTED if isinstance(word, _Secret) else redact(word)
    if not isinstance(word, _Secret) and shown == word:
        return shlex.quote(word)
    env = secret_env_name(flag, secrets)
    secrets[env] = f"{redact_text(flag)} {shown}" if flag and flag is not word else shown
    return f'"${{{env}:?}}"'


def _bash_lines(words: list[str], secrets: dict[str, str]) -> list[str]:
    """Words grouped one flag and its values per line, each written by `_bash_word`. A secret value starts no line
    of its own even when it begins with `--`."""
    lines: list[list[str]] = []
    flag = ""
    for word in words:
        if word.startswith("--") and not isinstance(word, _Secret):
            flag = word
            lines.append([])
        elif not lines:
            lines.append([])
        lines[-1].append(_bash_word(word, flag, secrets))
    return [" ".join(line) for line in lines]


def export_miles(run: Resolved) -> str:
    """A bash launch script for Miles equivalent to the resolved run: the arrays, then the train.py line. Values
    are quoted and secrets left to environment variables (see the module docstring)."""
    cfg = run.cfg
    secrets: dict[str, str] = {}
    body, used = [], []
    for name, words in miles_arrays(run).items():
        if not words and name in OPTIONAL_ARRAYS:
            continue
        used.append(name)
        body += [f"{name}=(", *(f"   {line}" for line in _bash_lines(words, secrets)), ")", ""]
    script = "train_async.py" if cfg.rollout.mode == "async" else "train.py"
    cluster = _bash_lines(miles_cluster_args(run), secrets)
    body.append(" \\\n   ".join([f"python3 {script}", *cluster, *(f'"${{{name}[@]}}"' for name in used)]))
    head = [
        f"# Miles launch script for the rlpipe run `{cfg.run_name}` (rlpipe.config.miles.export_miles).",
        "# Run it from Miles' repository root, on a node where Ray is started (ray start --head).",
        *_export_notes(cfg),
    ]
    if secrets:
        head += ["# Secrets are not written here: export these variables (the values redacted below) first:"]
        head += [f"#   {env}  ({shown})" for env, shown in secrets.items()]
    return "\n".join(["#!/bin/bash", *map(_comment, head), "", *body]) + "\n"
