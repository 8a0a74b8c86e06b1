"""Miles interop: a resolved run as a Miles launch script, and a Miles/slime launch script as an experiment.

Export (`export_miles`, `python launch.py --miles`): the eight arrays of a Miles script (MODEL_ARGS ... SGLANG_ARGS,
plus MISC_ARGS and WANDB_ARGS as Miles' own scripts have them) and the `python3 train.py` line with the cluster
flags. Each field goes to the flag its schema `json_schema_extra["miles"]` names. A value equal to Miles' own
default (`MILES_DEFAULTS`, read from Miles' and Megatron's argument parsers) is left out; everything else is spelled,
derived values included, so Miles validates them again.

Import (`import_miles`, `python -m rlpipe.config.miles import SCRIPT`): a small reader for the bash these scripts
use (arrays, `+=`, `source`, `\\` continuations, comments, quotes, simple variables) collects the flags the train
line passes, maps each back to its schema key, applies Megatron's own derivations (kv_channels, num_query_groups)
and writes Miles' defaults wherever rlpipe's group defaults differ, so the experiment means what the script meant.
Flags with no rlpipe field are listed, never dropped: Miles/slime flags, Megatron flags, unknown flags.

Quoting and secrets: every word of the script goes through `_bash_word`, the one place that writes a value into
bash: `shlex.quote`, so no config string can run code; a secret (a secret-named key such as sglang.extra.api_key,
credentials inside a URL, see rlpipe.config.secrets) is written as `"${RLPIPE_SECRET_<FLAG>:?}"` instead, and the
header names each such variable with the value redacted. Comment lines are redacted and kept to one line.

Departures: `sglang.log_level` is exported only when it differs from rlpipe's default (`warning`, quieter than
SGLang's `info`), since it changes no result. Miles forces `--bf16` and the distributed optimizer on whatever the
flags say; rlpipe maps those flags one to one and leaves the recipe to say what it means.
"""

from __future__ import annotations

import argparse
import ast
import difflib
import importlib.util
import json
import re
import shlex
import sys
import types
import typing
from collections.abc import Iterator
from dataclasses import dataclass, field
from functools import cache
from pathlib import Path
from typing import Annotated, Any, Literal

import yaml
from pydantic import BaseModel, TypeAdapter, ValidationError
from pydantic.fields import FieldInfo

from rlpipe.config.load import CONF_DIR
from rlpipe.config.resolve import SAMPLING_KEYS, Resolved
from rlpipe.config.schema import RunConfig
from rlpipe.config.secrets import REDACTED, is_secret_key, redact, redact_text

# ------------------------------------------------------------------------------------------ the flag table
ARRAYS: tuple[str, ...] = (
    "MODEL_ARGS",
    "CKPT_ARGS",
    "ROLLOUT_ARGS",
    "EVAL_ARGS",
    "PERF_ARGS",
    "GRPO_ARGS",
    "OPTIMIZER_ARGS",
    "SGLANG_ARGS",
    "MISC_ARGS",
    "WANDB_ARGS",
)
OPTIONAL_ARRAYS = ("MISC_ARGS", "WANDB_ARGS")  # written only when they hold something
GROUP_ARRAY = {
    "model": "MODEL_ARGS",
    "ckpt": "CKPT_ARGS",
    "rollout": "ROLLOUT_ARGS",
    "eval": "EVAL_ARGS",
    "perf": "PERF_ARGS",
    "algo": "GRPO_ARGS",
    "optim": "OPTIMIZER_ARGS",
    "sglang": "SGLANG_ARGS",
    "log": "WANDB_ARGS",
    "debug": "MISC_ARGS",
    "": "MISC_ARGS",  # top-level fields (seed)
}
# Where Miles' own scripts (scripts/run-glm4-9B.sh) put these, rather than by schema group.
KEY_ARRAY = {
    "model.attention_dropout": "MISC_ARGS",
    "model.hidden_dropout": "MISC_ARGS",
    "log.tensorboard": "MISC_ARGS",
}

# Miles' (or Megatron's, where Miles keeps it) default of each flag, from miles/utils/arguments.py and
# megatron/training/arguments.py. Export leaves a value out when it equals this; import writes this wherever the
# script leaves the flag out and rlpipe's composed default differs. Flags not listed are always spelled.
MILES_DEFAULTS: dict[str, Any] = {
    "seed": 1234,
    "model.rotary_percent": 1.0,
    "model.attention_dropout": 0.1,  # Megatron's; Miles' scripts pass 0.0 in MISC_ARGS
    "model.hidden_dropout": 0.1,
    "rollout.input_key": "input",
    "rollout.label_key": None,
    "rollout.metadata_key": "metadata",
    "rollout.seed": 42,
    "rollout.n_samples": 1,
    "rollout.global_batch_size": None,
    "rollout.num_steps_per_rollout": None,
    "rollout.max_response_len": 1024,
    "rollout.top_p": 1.0,
    "rollout.top_k": -1,
    "eval.n_samples": 1,
    "perf.sequence_parallel": False,
    "perf.micro_batch_size": 1,
    "perf.bias_swiglu_fusion": True,  # Megatron's; --no-bias-swiglu-fusion turns it off
    "algo.loss_type": "policy_loss",
    "algo.kl_loss_type": "k1",
    "algo.kl_coef": 0.0,
    "algo.eps_clip_high": None,  # Miles then uses eps_clip
    "algo.tis_clip": 2.0,
    "algo.tis_clip_low": 0.0,
    "algo.gamma": 1.0,
    "algo.lambd": 1.0,
    "algo.value_clip": 0.2,
    "algo.num_critic_only_steps": 0,
    "optim.lr_decay_style": "linear",
    "optim.weight_decay": 0.01,
    "optim.min_lr": 0.0,
    "optim.lr_warmup_iters": 0,
    "optim.adam_beta2": 0.999,
    "optim.adam_eps": 1e-8,
    "optim.clip_grad": 1.0,
    "cluster.actor_num_gpus_per_node": 8,
    "cluster.rollout_num_gpus": None,
    "log.wandb_mode": "online",
}
# rlpipe-only fields whose value is fixed by running under Miles at all.
MILES_FIXED: dict[str, Any] = {"rollout.engine": "sglang", "cluster.backend": "ray", "cluster.accelerator": "cuda"}
# Exported only when changed from rlpipe's default (see the module docstring).
EXPORT_WHEN_CHANGED = frozenset({"sglang.log_level"})
# Fields written by hand below rather than by the generic one-flag rule.
SPECIAL_KEYS = frozenset(
    {
        "algo.grpo_std_normalization",
        "perf.bias_swiglu_fusion",
        "model.add_bias_linear",
        "eval.datasets",
        "sglang.extra",
        "cluster.offload_train",
        "cluster.offload_rollout",
    }
)
# rlpipe-only fields the export expresses some other way (script name, flag) or that do not change the run.
EXPRESSED_OTHERWISE = frozenset(
    {"run_name", "output_dir", "model.name", "rollout.mode", "eval.before_train", "sglang.version", "log.progress"}
)
# Miles picks the weight-sync path from the layout, as rlpipe's `auto` does.
EXPRESSED_OTHERWISE |= {"cluster.weight_sync"}
# Flags rlpipe derives itself: accepted on import, reported as implied.
IMPLIED_FLAGS: dict[str, str] = {
    "--group-query-attention": "derived from model.num_query_groups < model.num_attention_heads",
    "--use-rotary-position-embeddings": "rlpipe models always use RoPE",
    "--no-rope-fusion": "Megatron's rope fusion does not support interleaved RoPE; rlpipe runs unfused",
}
# Megatron's value for a model switch its flags leave out (store_true flags, and add_bias_linear unless
# --disable-bias-linear). Import applies these when the script spells the architecture (--num-layers).
MEGATRON_MODEL_SWITCHES: dict[str, bool] = {
    "swiglu": False,
    "untie_embeddings_and_output_weights": False,
    "add_qkv_bias": False,
    "qk_layernorm": False,
    "add_bias_linear": True,
}
REQUIRED_ARCH = ("num_layers", "hidden_size", "ffn_hidden_size", "num_attention_heads", "vocab_size")
DROPOUT_KEYS = ("model.attention_dropout", "model.hidden_dropout")

Key = tuple[str, ...]


@dataclass(frozen=True)
class FlagField:
    """One schema field exported as one flag: `key` is dotted, `annotation` carries the field's bounds."""

    key: str
    flag: str
    annotation: Any


def _miles_flag(info: FieldInfo) -> str | None:
    extra = info.json_schema_extra
    return extra.get("miles") if isinstance(extra, dict) else None  # type: ignore[return-value]


def _leaves() -> Iterator[tuple[str, FieldInfo]]:
    """(dotted key, field) for every field of the eight groups, cluster, log and the top level."""
    for name, info in RunConfig.model_fields.items():
        sub = info.annotation
        if isinstance(sub, type) and issubclass(sub, BaseModel):
            for leaf, leaf_info in sub.model_fields.items():
                yield f"{name}.{leaf}", leaf_info
        else:
            yield name, info


@cache
def flag_fields() -> dict[str, FlagField]:
    """Flag -> field for every field mapped by the generic rule (one flag; bool -> bare flag)."""
    table: dict[str, FlagField] = {}
    for key, info in _leaves():
        flag = _miles_flag(info)
        if flag is None or key in SPECIAL_KEYS:
            continue
        if flag in table:
            raise RuntimeError(f"schema maps {flag} twice: {table[flag].key} and {key}")
        table[flag] = FlagField(
            key, flag, Annotated[info.annotation, *info.metadata] if info.metadata else info.annotation
        )
    return table


def _get(cfg: RunConfig, key: str) -> Any:
    node: Any = cfg
    for part in key.split("."):
        node = getattr(node, part)
    return node


# ------------------------------------------------------------------------------------------------- export
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
    value, model = _get(cfg, key), cfg.model
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
        return [flag, "--no-rope-fusion"] if value else []  # Megatron rejects rope fusion with interleaved RoPE
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
    if key in EXPORT_WHEN_CHANGED and value == dict(_leaves())[key].default:
        return []
    return _flag_args(flag, key, value)


def miles_arrays(run: Resolved) -> dict[str, list[str]]:
    """The Miles arrays of a resolved run, as the words bash would hold (unquoted), in ARRAYS order."""
    cfg = run.cfg
    arrays: dict[str, list[str]] = {name: [] for name in ARRAYS}
    for key, info in _leaves():
        flag = _miles_flag(info)
        group = key.split(".")[0] if "." in key else ""
        if flag is None or group == "cluster":
            continue  # rlpipe-only, or a train-line flag (miles_cluster_args)
        if group == "log" and key != "log.tensorboard" and not cfg.log.wandb:
            continue  # wandb settings mean nothing with wandb off
        arrays[KEY_ARRAY.get(key, GROUP_ARRAY[group])] += _field_args(cfg, key, flag)
    if not cfg.eval.before_train:
        arrays["EVAL_ARGS"].append("--skip-eval-before-train")
    if arrays["MODEL_ARGS"]:
        arrays["MODEL_ARGS"].append("--use-rotary-position-embeddings")
    return arrays


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
    for key, info in _leaves():
        if _miles_flag(info) is not None or key in EXPRESSED_OTHERWISE:
            continue
        value = _get(cfg, key)
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


def _secret_env(flag: str, taken: dict[str, str]) -> str:
    """A fresh variable name for a secret value of `flag`: RLPIPE_SECRET_<FLAG>[_<n>] (from the flag, never the
    value)."""
    stem = "RLPIPE_SECRET_" + (re.sub(r"[^A-Za-z0-9]+", "_", redact_text(flag)).strip("_").upper() or "ARG")
    name, n = stem, 1
    while name in taken:
        n += 1
        name = f"{stem}_{n}"
    return name


def _bash_word(word: str, flag: str, secrets: dict[str, str]) -> str:
    """One word as bash source: quoted with shlex.quote (no expansion, no splitting, no globbing), or, for a
    secret, a reference to an environment variable that must be set, recorded in `secrets` with the value
    redacted. The one place the export writes a config value into bash."""
    shown = REDACTED if isinstance(word, _Secret) else redact(word)
    if not isinstance(word, _Secret) and shown == word:
        return shlex.quote(word)
    env = _secret_env(flag, secrets)
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


# ----------------------------------------------------------------------------------------- reading bash
class BashSyntaxError(ValueError):
    """The script uses bash this reader does not follow (an unclosed quote or substitution)."""


def _line_of(text: str, i: int) -> int:
    return text.count("\n", 0, i) + 1


def _scan_dquote(text: str, i: int) -> int:
    """Index just past the double-quoted string opening at text[i]."""
    j = i + 1
    while j < len(text):
        if text[j] == "\\":
            j += 2
        elif text[j] == '"':
            return j + 1
        elif text.startswith("$(", j):
            j = _scan_closing(text, j + 1, "(", ")")
        else:
            j += 1
    raise BashSyntaxError(f"unclosed double quote from line {_line_of(text, i)}")


def _scan_closing(text: str, i: int, open_: str, close: str) -> int:
    """Index just past the `close` matching the `open_` at text[i], quotes and nesting respected."""
    depth, j = 0, i
    while j < len(text):
        c = text[j]
        if c == "\\":
            j += 2
            continue
        if c == "'":
            end = text.find("'", j + 1)
            if end < 0:
                break
            j = end + 1
            continue
        if c == '"':
            j = _scan_dquote(text, j)
            continue
        depth += (c == open_) - (c == close)
        j += 1
        if depth == 0:
            return j
    raise BashSyntaxError(f"unclosed `{open_}` from line {_line_of(text, i)}")


def lex(text: str) -> list[list[str]]:
    """Split bash into statements of raw words (quotes kept); `(` and `)` are words of their own.

    Newlines end statements except inside `( ... )` (array bodies); `;`, `&&`, `||`, `|`, `&` end them too.
    Comments and `\\`-newline continuations are dropped; `$(...)`, `${...}` and quotes stay inside their word."""
    statements: list[list[str]] = []
    words: list[str] = []
    buf: list[str] = []
    depth, i, n = 0, 0, len(text)

    def end_word() -> None:
        if buf:
            words.append("".join(buf))
            buf.clear()

    def end_statement() -> None:
        end_word()
        if words:
            statements.append(words.copy())
            words.clear()

    while i < n:
        c = text[i]
        if c == "\\":
            if text.startswith("\n", i + 1):
                i += 2  # line continuation
                continue
            buf.append(text[i : i + 2])
            i += 2
        elif c == "'":
            end = text.find("'", i + 1)
            if end < 0:
                raise BashSyntaxError(f"unclosed single quote from line {_line_of(text, i)}")
            buf.append(text[i : end + 1])
            i = end + 1
        elif c == '"':
            end = _scan_dquote(text, i)
            buf.append(text[i:end])
            i = end
        elif c == "$" and text.startswith(("(", "{"), i + 1):
            end = _scan_closing(text, i + 1, text[i + 1], ")" if text[i + 1] == "(" else "}")
            buf.append(text[i:end])
            i = end
        elif c == "#" and not buf:
            end = text.find("\n", i)
            i = n if end < 0 else end
        elif c in " \t\r":
            end_word()
            i += 1
        elif c == "\n":
            end_word() if depth else end_statement()
            i += 1
        elif c in "()":
            end_word()
            words.append(c)
            depth = depth + 1 if c == "(" else max(0, depth - 1)
            i += 1
        elif c == "&" and text.startswith(">", i + 1):
            buf.append("&>")
            i += 2
        elif c in ";|&":
            end_word() if depth else end_statement()
            i += 2 if text[i : i + 2] in ("&&", "||") else 1
        else:
            buf.append(c)
            i += 1
    end_statement()
    return statements


_VAR = re.compile(r"\$(?:\{(\w+)(?::?-([^}]*))?\}|([A-Za-z_]\w*))")
_ARRAY_REF = re.compile(r'"?\$\{(\w+)\[@\]\}"?')


def expand(raw: str, env: dict[str, str], quoted: bool = False) -> str:
    """Bash's quote removal and `$VAR` / `${VAR}` / `${VAR:-default}` expansion of one word.

    Unknown variables and `$(...)` stay as written (they need a shell); there is no word splitting."""
    out, i = [], 0
    while i < len(raw):
        c = raw[i]
        if c == "\\":
            nxt = raw[i + 1 : i + 2]
            out.append(nxt if not quoted or nxt in '"\\$`' else c + nxt)
            i += 2
        elif c == "'" and not quoted:
            end = raw.index("'", i + 1)
            out.append(raw[i + 1 : end])
            i = end + 1
        elif c == '"' and not quoted:
            end = _scan_dquote(raw, i)
            out.append(expand(raw[i + 1 : end - 1], env, quoted=True))
            i = end
        elif raw.startswith("$(", i):
            end = _scan_closing(raw, i + 1, "(", ")")
            out.append(raw[i:end])
            i = end
        elif c == "$" and (m := _VAR.match(raw, i)):
            name, default = m[1] or m[3], m[2]
            out.append(env[name] if name in env else expand(default, env) if default is not None else m[0])
            i = m.end()
        else:
            out.append(c)
            i += 1
    return "".join(out)


@dataclass
class Unmapped:
    """A flag the import could not apply, and why. kind: miles (a Miles/slime flag rlpipe has no field for),
    megatron (a Megatron-LM flag), unknown (neither), invalid (a mapped flag with a bad value), unresolved
    (a `source`d file that was not found)."""

    flag: str
    values: tuple[str, ...]
    kind: Literal["miles", "megatron", "unknown", "invalid", "unresolved"]
    reason: str

    def __str__(self) -> str:
        values = (REDACTED,) if self.values and is_secret_key(self.flag) else tuple(map(redact, self.values))
        return " ".join((self.flag, *map(shlex.quote, values))) + f"  ({self.kind}: {self.reason})"


@dataclass
class _Script:
    """What reading a script's statements in order leaves behind: variables, arrays, the train line."""

    base_dir: Path | None
    conf_dir: Path
    env: dict[str, str] = field(default_factory=dict)
    arrays: dict[str, list[str]] = field(default_factory=dict)
    train: tuple[str, list[str]] | None = None  # (train.py | train_async.py, the words after it)
    model: str | None = None
    unresolved: list[Unmapped] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    def words(self, raws: list[str]) -> list[str]:
        """Expanded words; `${ARR[@]}` splices the array."""
        out = []
        for raw in raws:
            m = _ARRAY_REF.fullmatch(raw)
            if m and m[1] not in self.arrays:
                self.notes.append(f"${{{m[1]}[@]}} is used but never defined; it adds no flags")
            out += self.arrays.get(m[1], []) if m else [expand(raw, self.env)]
        return out

    def read(self, text: str, depth: int = 0) -> None:
        for statement in lex(text):
            self.statement(statement, depth)

    def statement(self, words: list[str], depth: int) -> None:
        while words and words[0] in ("then", "else", "do", "{", "export"):
            words = words[1:]  # statements inside if/for blocks, and exported assignments, count too
        if len(words) >= 2 and (m := re.fullmatch(r"([A-Za-z_]\w*)(\+?)=", words[0])) and words[1] == "(":
            close = words.index(")", 2) if ")" in words[2:] else len(words)
            items = self.words(words[2:close])
            self.arrays[m[1]] = (self.arrays.get(m[1], []) if m[2] else []) + items
            return
        while words and (m := re.fullmatch(r"([A-Za-z_]\w*)=(.*)", words[0], re.S)):
            value = expand(m[2], self.env)
            if "$(" in value:
                self.env.pop(m[1], None)  # a command's output: unknown here
            else:
                self.env[m[1]] = value
            words = words[1:]
        if not words:
            return
        if words[0] in ("source", ".") and len(words) > 1:
            self.source(expand(words[1], self.env), depth)
            return
        names = [Path(expand(w, self.env)).name for w in words]
        for script in ("train.py", "train_async.py"):
            if script in names:
                if self.train is not None:
                    self.notes.append(f"more than one train line; used the last ({script})")
                self.train = (script, self.words(words[names.index(script) + 1 :]))

    def source(self, path: str, depth: int) -> None:
        """Read a sourced file (a leading unknown variable such as ${SCRIPT_DIR} means base_dir); a models
        file that is not found still names the model group when conf/model/<name>.yaml exists."""
        rel = re.sub(r"^\$\{?\w+\}?/", "", path)
        file = Path(rel)
        if not file.is_absolute() and self.base_dir is not None:
            file = self.base_dir / file
        stem = Path(rel).name.removesuffix(".sh")
        if (self.conf_dir / "model" / f"{stem}.yaml").is_file():
            self.model = stem
        if "$" not in rel and file.is_file() and depth < 8:
            self.read(file.read_text(), depth + 1)
        elif self.model != stem:
            where = f"conf/model/{stem}.yaml does not exist either"
            self.unresolved.append(Unmapped("source", (path,), "unresolved", f"file not found; {where}"))


# ------------------------------------------------------------------------------------- flag classification
# Megatron-LM training flags that are not fields of megatron-core's config dataclasses (scanned below).
MEGATRON_TRAINING_FLAGS = """
spec accumulate_allreduce_grads_in_fp32 train_iters train_samples log_interval eval_iters seq_length ckpt_format
no_load_optim no_load_rng no_save_optim no_save_rng finetune tokenizer_type tokenizer_model make_vocab_size_divisible_by
position_embedding_type use_rotary_position_embeddings group_query_attention use_flash_attn transformer_impl
use_mcore_models use_dist_ckpt dist_ckpt_strictness lr_warmup_fraction distributed_backend distributed_timeout_minutes
use_checkpoint_args recompute_activations fp16 padded_vocab_size data_path split init_method_std
override_opt_param_scheduler use_legacy_models mock_data no_create_attention_mask_in_dataloader log_throughput
timing_log_level
"""
_MEGATRON_CONFIG_FILES = (
    "core/transformer/transformer_config.py",
    "core/model_parallel_config.py",
    "core/optimizer/optimizer_config.py",
    "core/distributed/distributed_data_parallel_config.py",
)


@cache
def _megatron_names() -> frozenset[str]:
    """Snake-case names Megatron spells as flags: megatron-core's config fields (read as source, not imported:
    no torch) plus MEGATRON_TRAINING_FLAGS."""
    names = set(MEGATRON_TRAINING_FLAGS.split())
    spec = importlib.util.find_spec("megatron")
    for root in (spec.submodule_search_locations or []) if spec else []:
        for rel in _MEGATRON_CONFIG_FILES:
            path = Path(root) / rel
            if path.is_file():
                for node in ast.walk(ast.parse(path.read_text())):
                    if isinstance(node, ast.AnnAssign) and isinstance(node.target, ast.Name):
                        names.add(node.target.id)
    return frozenset(names)


def _is_megatron(flag: str) -> bool:
    snake = flag.removeprefix("--").replace("-", "_")
    bare = re.sub(r"^(no|disable)_", "", snake)
    return bool({snake, bare, f"apply_{bare}", f"use_{bare}"} & _megatron_names())


@cache
def _miles_names() -> frozenset[str]:
    return frozenset(MILES_FLAGS.split())


def classify(flag: str) -> tuple[Literal["miles", "megatron", "unknown"], str]:
    """Which kind of flag rlpipe has no field for, and a reason to show."""
    if flag.removeprefix("--") in _miles_names():
        return "miles", "a Miles/slime flag with no rlpipe field"
    if _is_megatron(flag):
        return "megatron", "a Megatron-LM flag with no rlpipe field"
    known = [
        *flag_fields(),
        *(f"--{n}" for n in _miles_names()),
        *(f"--{n.replace('_', '-')}" for n in _megatron_names()),
    ]
    near = difflib.get_close_matches(flag, known, n=1, cutoff=0.8)
    return "unknown", f"not a Miles, slime or Megatron flag{f'; did you mean {near[0]}?' if near else ''}"


# ------------------------------------------------------------------------------------------- flags -> keys
def _union_args(annotation: Any) -> tuple[Any, ...]:
    if typing.get_origin(annotation) is Annotated:
        annotation = typing.get_args(annotation)[0]
    if typing.get_origin(annotation) in (typing.Union, types.UnionType):
        return typing.get_args(annotation)
    return (annotation,)


def _coerce(field_: FlagField, values: list[str]) -> Any:
    """The flag's words as the field's type, bounds checked (pydantic), literals matched case-insensitively."""
    kinds = _union_args(field_.annotation)
    if bool in kinds:
        if values:
            raise ValueError(f"takes no value, got {' '.join(values)}")
        return True
    if any(typing.get_origin(k) is list for k in kinds):
        return TypeAdapter(field_.annotation).validate_python(values)
    if len(values) != 1:
        raise ValueError(f"takes one value, got {len(values)}")
    value: Any = values[0]
    for kind in kinds:
        if typing.get_origin(kind) is Literal:
            value = next((lit for lit in typing.get_args(kind) if str(lit).lower() == value.lower()), value)
    return TypeAdapter(field_.annotation).validate_python(value)


def _scalar(text: str) -> Any:
    """An SGLang flag value: int, float, true/false, else the string."""
    for cast in (int, float):
        try:
            return cast(text)
        except ValueError:
            pass
    return text.lower() == "true" if text.lower() in ("true", "false") else text


def split_flags(words: list[str]) -> list[tuple[str, list[str]]]:
    """Words as (flag, the values that follow it); `--flag=value` is split; stray leading words get flag ''."""
    out: list[tuple[str, list[str]]] = []
    for word in words:
        if word.startswith("--"):
            flag, eq, value = word.partition("=")
            out.append((flag, [value] if eq else []))
        elif out:
            out[-1][1].append(word)
        else:
            out.append(("", [word]))
    return out


# Bare flags with a fixed meaning: flag -> ((key, value), ...)
_BARE: dict[str, tuple[tuple[str, Any], ...]] = {
    "--disable-grpo-std-normalization": (("algo.grpo_std_normalization", False),),
    "--disable-bias-linear": (("model.add_bias_linear", False),),
    "--no-bias-swiglu-fusion": (("perf.bias_swiglu_fusion", False),),
    "--skip-eval-before-train": (("eval.before_train", False),),
    "--offload": (("cluster.offload_train", True), ("cluster.offload_rollout", True)),
    "--offload-train": (("cluster.offload_train", True),),
    "--no-offload-train": (("cluster.offload_train", False),),
    "--offload-rollout": (("cluster.offload_rollout", True),),
    "--no-offload-rollout": (("cluster.offload_rollout", False),),
}


@dataclass
class _Mapper:
    """Applies flags in order (a later flag wins, as in argparse) to a flat {key path: value}."""

    values: dict[Key, Any] = field(default_factory=dict)
    unmapped: list[Unmapped] = field(default_factory=list)
    implied: list[str] = field(default_factory=list)
    seen: set[str] = field(default_factory=set)

    def set(self, key: str, value: Any) -> None:
        self.values[tuple(key.split("."))] = value

    def invalid(self, flag: str, values: list[str], why: str) -> None:
        self.unmapped.append(Unmapped(flag, tuple(values), "invalid", why))

    def apply(self, flag: str, values: list[str]) -> None:
        self.seen.add(flag)
        table = flag_fields()
        if not flag:
            self.unmapped.append(Unmapped(" ".join(values), (), "unknown", "words before the first flag"))
        elif flag in IMPLIED_FLAGS or (flag == "--position-embedding-type" and values == ["rope"]):
            self.implied.append(f"{' '.join([flag, *values])}: {IMPLIED_FLAGS.get(flag, 'rlpipe models use RoPE')}")
        elif flag in _BARE:
            if values:
                self.invalid(flag, values, "takes no value")
            for key, value in _BARE[flag]:
                self.set(key, value)
        elif flag == "--eval-prompt-data":
            pairs = ["aime", *values] if len(values) == 1 else values  # Miles' legacy one-path form
            if not pairs or len(pairs) % 2:
                self.invalid(flag, values, "expects name path [name path ...]")
                return
            self.set("eval.datasets", {pairs[i]: {"path": pairs[i + 1]} for i in range(0, len(pairs), 2)})
        elif flag in table:
            try:
                self.set(table[flag].key, _coerce(table[flag], values))
            except (ValueError, ValidationError) as exc:
                message = exc.errors()[0]["msg"] if isinstance(exc, ValidationError) else str(exc)
                self.invalid(flag, values, f"{table[flag].key}: {message}")
        elif flag.startswith("--sglang-") and flag.removeprefix("--") not in _miles_names():
            name = flag.removeprefix("--sglang-").replace("-", "_")
            parsed = [_scalar(v) for v in values]
            self.values[("sglang", "extra", name)] = True if not values else parsed[0] if len(parsed) == 1 else parsed
        else:
            kind, reason = classify(flag)
            self.unmapped.append(Unmapped(flag, tuple(values), kind, reason))

    def megatron_derivations(self) -> None:
        """What Megatron derives from the architecture flags, made explicit (it is what the script meant)."""
        hidden, heads = self.values.get(("model", "hidden_size")), self.values.get(("model", "num_attention_heads"))
        if hidden and heads and ("model", "kv_channels") not in self.values:
            self.values[("model", "kv_channels")] = hidden // heads
        if heads and "--group-query-attention" not in self.seen:
            if self.values.get(("model", "num_query_groups"), heads) != heads:
                self.implied.append("--num-query-groups: ignored by Megatron without --group-query-attention")
            self.values[("model", "num_query_groups")] = heads
        if ("model", "num_layers") in self.values:
            for name, value in MEGATRON_MODEL_SWITCHES.items():
                self.values.setdefault(("model", name), value)


# ----------------------------------------------------------------------------------------------- import
@dataclass
class ImportResult:
    """An imported script: `config` is the experiment body (a `defaults` list choosing the model group, then
    the groups); `unmapped` the flags not applied; `implied` flags rlpipe derives itself; `notes` the rest."""

    config: dict[str, Any]
    unmapped: list[Unmapped]
    implied: list[str]
    notes: list[str]
    model: str  # the conf/model group chosen (auto: everything from the HF checkpoint)


def _lookup(node: Any, path: Key) -> Any:
    for part in path:
        node = node.get(part) if isinstance(node, dict) else None
    return node


def _nest(flat: dict[Key, Any]) -> dict[str, Any]:
    order = {name: i for i, name in enumerate(RunConfig.model_fields)}
    out: dict[str, Any] = {}
    for path, value in sorted(flat.items(), key=lambda item: order.get(item[0][0], len(order))):
        node = out
        for part in path[:-1]:
            node = node.setdefault(part, {})
        node[path[-1]] = value
    return out


def import_miles(text: str, *, base_dir: Path | None, conf_dir: Path = CONF_DIR) -> ImportResult:
    """Read a Miles/slime bash launch script into an rlpipe experiment (see the module docstring).

    base_dir: the script's folder, where `source "${SCRIPT_DIR}/models/X.sh"` is looked up."""
    script = _Script(base_dir, conf_dir)
    script.read(text)
    if script.train is not None:
        words = script.train[1]
    else:
        words = [w for array in script.arrays.values() for w in array]
        script.notes.append("no train.py line: took the flags of every array, in the order they were defined")
    mapper = _Mapper()
    for flag, values in split_flags(words):
        mapper.apply(flag, values)
    mapper.megatron_derivations()
    model = script.model or "auto"
    if script.train is not None:
        if script.train[0] == "train_async.py":
            mapper.set("rollout.mode", "async")
        _miles_defaults(mapper.values, model, conf_dir)
    config = {"defaults": [{"override /model": model}], **_nest(mapper.values)}
    return ImportResult(config, [*script.unresolved, *mapper.unmapped], mapper.implied, script.notes, model)


def _miles_defaults(values: dict[Key, Any], model: str, conf_dir: Path) -> None:
    """Write Miles' default (and Miles' fixed facts) for each flag the script left out where rlpipe's own
    composed default differs. Architecture keys stay with the model group / HF checkpoint."""
    from rlpipe.config.load import compose, validate

    base = validate(compose(["experiment=none", f"model={model}"], conf_dir)).model_dump()  # schema defaults too
    wandb = values.get(("log", "wandb"), False)
    for key, miles_value in {**MILES_DEFAULTS, **MILES_FIXED}.items():
        path = tuple(key.split("."))
        if path in values or (path[0] == "model" and key not in DROPOUT_KEYS) or (path[0] == "log" and not wandb):
            continue
        if _lookup(base, path) != miles_value:
            values[path] = miles_value


def to_experiment_yaml(result: ImportResult, name: str) -> str:
    """The imported config as conf/experiment/<name>.yaml, the flags not applied listed in its header."""
    head = [
        "# @package _global_",
        "# Imported from a Miles launch script (python -m rlpipe.config.miles import ...); check it with",
        f"#   python launch.py +experiment={name} --cfg job",
    ]
    if result.unmapped:
        head += ["# Flags not applied (rlpipe has no field for them):", *(f"#   {u}" for u in result.unmapped)]
    if result.implied:
        head += ["# Flags rlpipe derives itself:", *(f"#   {line}" for line in result.implied)]
    head += [f"# Note: {note}" for note in result.notes]
    body = {"defaults": result.config["defaults"], "run_name": name}
    body.update((k, v) for k, v in result.config.items() if k != "defaults")
    return "\n".join(head) + "\n" + yaml.safe_dump(body, sort_keys=False, default_flow_style=False)


# ---------------------------------------------------------------------------------------------------- CLI
def main(argv: list[str] | None = None) -> int:
    """`import SCRIPT [-o conf/experiment/NAME.yaml] [--name NAME]` or `export [overrides...]`."""
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == ["export"]:  # exactly `python launch.py ... --miles`, overrides passed through untouched
        from rlpipe.cli import main as launch_main

        return launch_main([*argv[1:], "--miles"])
    parser = argparse.ArgumentParser(prog="python -m rlpipe.config.miles", description=__doc__.split("\n")[0])
    sub = parser.add_subparsers(dest="command", required=True)
    imp = sub.add_parser("import", help="a Miles/slime launch script -> an experiment YAML")
    imp.add_argument("script", type=Path)
    imp.add_argument("-o", "--output", type=Path, help="write here (e.g. conf/experiment/NAME.yaml), not stdout")
    imp.add_argument("--name", help="experiment / run name (default: the output or script file name)")
    sub.add_parser("export", help="the Miles script of a config: export [overrides...] (= launch.py --miles)")
    args = parser.parse_args(argv)
    try:
        result = import_miles(args.script.read_text(), base_dir=args.script.resolve().parent)
    except (OSError, BashSyntaxError) as exc:
        print(f"rlpipe: cannot import {args.script}: {exc}", file=sys.stderr)
        return 2
    name = args.name or (args.output or args.script).name.removesuffix(".yaml").removesuffix(".sh")
    text = to_experiment_yaml(result, name)
    if args.output:
        args.output.write_text(text)
        print(f"rlpipe: wrote {args.output}", file=sys.stderr)
    else:
        print(text, end="")
    if result.unmapped:
        print(f"rlpipe: {len(result.unmapped)} flag(s) not applied:", file=sys.stderr)
        for item in result.unmapped:
            print(f"  {item}", file=sys.stderr)
    return 0


# Every flag radixark/miles and THUDM/slime define themselves (snapshot of 2026-08-21), without the leading `--`:
# import tells these apart from Megatron's own flags and from unknown ones.
MILES_FLAGS = """
actor-num-gpus-per-node actor-num-nodes advantage-estimator allgather-cp allow-partial-train-step
apply-chat-template apply-chat-template-kwargs async-data-buffer-capacity-factor async-max-concurrent-samples
async-save async-unused-samples-handler attention-dropout balance-by-flops balance-data buffer-filter-path
calculate-per-token-loss chat-template-path check-lora-weight-equal
check-rematerialize-param-from-master-weight check-weight-update-allow-quant-error check-weight-update-equal
check-weight-update-selector check-weight-update-skip-list ci-check-model-hash ci-disable-kl-checker
ci-disable-logprobs-checker ci-disable-weight-update-checker ci-ft-test-actions
ci-inject-rollout-data-min-match-ratio ci-inject-rollout-data-path ci-inject-rollout-data-start-rollout-id
ci-load-grad-norm ci-metric-checker-key ci-metric-checker-threshold ci-save-grad-norm ci-save-model-hash
ci-test ci-train-rollout-logprob-abs-diff-threshold clip-grad colocate control-server-port critic-load
critic-lr critic-lr-warmup-iters critic-num-gpus-per-node critic-num-nodes critic-save
custom-advantage-function-path custom-async-data-buffer-path custom-config-path
custom-convert-samples-to-train-data-path custom-eval-rollout-log-function-path custom-generate-function-path
custom-loss-function-path custom-megatron-before-log-prob-hook-path custom-megatron-before-train-step-hook-path
custom-megatron-init-path custom-megatron-post-save-hook-path custom-model-provider-path
custom-pg-loss-reducer-function-path custom-reward-post-process-path custom-rm-path
custom-rollout-log-function-path custom-tis-function-path custom-update-weight-post-write-path
data-pad-size-multiplier data-source-path debug-deterministic-collective debug-disable-optimizer
debug-exit-after-rollout debug-rollout-only debug-skip-weight-update debug-train-only
delay-split-train-data-by-dp disable-compute-advantages-and-returns disable-grpo-std-normalization
disable-rewards-normalization disable-rollout-global-dataset disable-rollout-trim-samples
disable-wandb-random-suffix distributed-backend distributed-timeout-minutes dsa-attention-backend dump-details
dumper-dir dumper-enable dumper-fwd-bwd dumper-fwd-only dumper-inference dumper-source-patcher-config-inference
dumper-source-patcher-config-train dynamic-sampling-filter-path enable-event-analyzer enable-mtp-training
enable-witness entropy-coef env-report eps-clip eps-clip-c eps-clip-high eval-config eval-function-path
eval-hf-dir eval-input-key eval-interval eval-keep-snapshots eval-label-key eval-max-context-len
eval-max-in-flight eval-max-prompt-len eval-max-response-len eval-min-new-tokens eval-num-gpus
eval-num-gpus-per-engine eval-overflow-policy eval-prompt-data eval-reward-key eval-temperature eval-tool-key
eval-top-k eval-top-p exclude-modules experts-shared-outer-loras extra-high-precision-layers-hf
extra-high-precision-layers-megatron fetch-trajectory-retry-times freeze-indexer freeze-params-name-list
ft-components fully-async gamma get-mismatch-metrics global-batch-size group-rm hf-checkpoint hidden-dropout
http-proxy indep-dp input-key keep-old-actor kl-coef kl-loss-coef kl-loss-type label-key lambd
linear-attention-backend load load-debug-rollout-data load-debug-rollout-data-subsample load-forge-rollout-data
log-correct-samples log-multi-turn log-passrate log-probs-chunk-size log-probs-max-tokens-per-gpu
log-reward-category lora-adapter-path lora-alpha lora-base-cpu-backup lora-dropout lora-rank
lora-sync-from-tensor lora-train-only lora-type loss-mask-type loss-type low-memory-resume lr
mask-offpolicy-in-partial-rollout max-tokens-per-gpu max-weight-staleness megatron-config-path
megatron-deepgemm-forward-layers megatron-deepgemm-forward-modules megatron-deepgemm-moe-forward-layers
megatron-deepgemm-moe-forward-modules megatron-to-hf-mode memory-recorder memory-snapshot-dir
memory-snapshot-num-steps metadata-key mfu-peak-tflops micro-batch-size miles-dsa-topk-backend
miles-router-health-check-failure-threshold miles-router-max-connections miles-router-timeout
min-batch-collection-ratio mini-ft-controller-enable mini-ft-controller-poll-interval
mini-ft-controller-resume-delay mlflow-experiment-name mlflow-run-id mlflow-run-name mlflow-tracking-uri
model-name moe-input-jitter-eps moe-router-force-biased moe-router-force-load-balancing mooncake-replica-num
mooncake-store-init-kwargs mtp-loss-scaling-factor mtp-num-layers multi-lora-adapter multi-lora-api-port
multi-lora-backend-path multi-lora-disable-service-mode multi-lora-http-server-path multi-lora-idle-poll-s
multi-lora-max-adapter-global-batch-size multi-lora-max-coalesce-wait-s multi-lora-max-empty-wait-s
multi-lora-n-adapters multimodal-keys n-samples-per-eval-prompt n-samples-per-prompt no-save-optim
no-sglang-lora-use-virtual-experts normalize-advantages num-critic-only-steps num-epoch num-gpus-per-node
num-rollout num-steps-per-rollout object-store-backend observe-training-entropy offload offload-rollout
offload-rollout-level offload-train offload-train-disk-chunk-mb offload-train-disk-dir offload-train-target
only-train-params-name-list opd-kl-coef opd-log-prob-top-k opd-reward-weight-mode opd-teacher-ckpt-step
opd-teacher-key opd-teacher-load opd-teacher-urls opd-top-k-strategy opd-topk-per-position opd-type opsm-delta
over-sampling-batch-size p2p-transfer-num-workers p2p-transfer-timeout padded-vocab-size partial-rollout
pause-generation-mode pin-rollout-manager-to-head prefill-num-servers profile-target prometheus-port
prometheus-run-name prompt-data qkv-format qwen-gdn-backend recompute-logprobs-via-prefill
recompute-loss-function record-memory-history ref-ckpt-step ref-load ref-update-interval release-train
rematerialize-param-from-master-weight reset-optimizer-states reward-key rm-type rm-url
rollout-all-samples-process-path rollout-batch-size rollout-buffer-url rollout-data-postprocess-path
rollout-data-transport rollout-external rollout-external-engine-addrs rollout-function-path
rollout-health-check-first-wait rollout-health-check-interval rollout-health-check-timeout
rollout-max-context-len rollout-max-prompt-len rollout-max-response-len rollout-num-gpus
rollout-num-gpus-per-engine rollout-sample-filter-path rollout-sample-hook-path rollout-seed rollout-shuffle
rollout-skip-special-tokens rollout-stop rollout-stop-token-ids rollout-submission-granularity
rollout-task-type rollout-temperature rollout-top-k rollout-top-p save save-debug-event-data
save-debug-rollout-data save-debug-train-data save-debug-trajectory-data save-hf save-interval
save-local-weight-checksum save-trigger-sentinel seed session-message-matcher session-sample-picker-path
session-sample-postprocessor-path session-server-ip session-server-port skip-actor-forward-only
skip-eval-before-train start-rollout-id stream-optimizer-state-moment-dtype stream-optimizer-state-to-disk
target-modules tb-experiment-name tb-project-name tis-clip tis-clip-low tito-model tool-key train-backend
train-env-vars train-memory-margin-bytes true-on-policy-mode update-weight-buffer-size
update-weight-delta-checksum update-weight-delta-encoding update-weight-disk-dir update-weight-disk-keep-files
update-weight-local-checkpoint-dir update-weight-mode update-weight-transfer-mode update-weight-transport
update-weights-interval use-distributed-post use-dynamic-batch-size use-dynamic-global-batch-size
use-fault-tolerance use-indexer-replay use-kl-loss use-miles-router use-mlflow use-opd use-opsm use-prometheus
use-rollout-entropy use-rollout-indexer-replay use-rollout-logprobs use-rollout-routing-replay
use-routing-replay use-session-server use-stateless-adam use-tensorboard use-tis use-unbiased-kl use-wandb
value-clip wandb-always-use-train-step wandb-dir wandb-group wandb-host wandb-key wandb-mode wandb-project
wandb-run-id wandb-team witness-buffer-size
"""

if __name__ == "__main__":
    sys.exit(main())
