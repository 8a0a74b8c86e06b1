"""A Miles/slime launch script as an rlpipe experiment (`python -m rlpipe.config.miles import SCRIPT`).

The flags the train line passes are mapped back to schema keys, Megatron's own derivations applied (kv_channels,
num_query_groups), and Miles' defaults written wherever rlpipe's group defaults differ, so the experiment means
what the script meant. Flags with no rlpipe field are listed, never dropped: Miles/slime flags, Megatron flags,
unknown flags.
"""

from __future__ import annotations

import os
import types
import typing
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Annotated, Any, Literal

import yaml
from pydantic import TypeAdapter, ValidationError

from rlpipe.config.load import CONF_DIR
from rlpipe.config.miles.expansion import show_missing
from rlpipe.config.miles.flags import (
    DROPOUT_KEYS,
    ENGINE_TP_FLAGS,
    IMPLIED_FLAGS,
    LAUNCHER_SGLANG_FLAGS,
    MEGATRON_MODEL_SWITCHES,
    MILES_DEFAULTS,
    MILES_FIXED,
    PLUGIN_EQUIVALENTS,
    PLUGIN_MISSING,
    PLUGIN_SETTINGS,
    RM_TYPE_EQUIVALENTS,
    RM_TYPE_MISSING,
    SCALED_FLAGS,
    FlagField,
    Key,
    Unmapped,
    classify,
    flag_fields,
    miles_flag_names,
    miles_forced,
    secret_env_name,
)
from rlpipe.config.miles.shell import Script, lex
from rlpipe.config.schema import RunConfig
from rlpipe.config.secrets import is_secret_key


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
        elif flag == "--custom-tis-function-path":
            self.tis_function(flag, values)
        elif flag == "--advantage-estimator" and values == ["cispo"]:  # slime names CISPO an estimator
            self.set("algo.advantage_estimator", "grpo")
            self.set("algo.policy_loss", "cispo")
            self.implied.append(f"{flag} cispo: rlpipe's algo.policy_loss=cispo over GRPO advantages")
        elif flag in SCALED_FLAGS:
            key, units = SCALED_FLAGS[flag]
            try:
                amount = int(values[0]) if len(values) == 1 else None
            except ValueError:
                amount = None
            if amount is None or amount <= 0:
                self.invalid(flag, values, f"{key}: expects one positive whole number")
                return
            self.set(key, -(-amount // units))  # whole units, rounded up
        elif flag in table:
            try:
                self.set(table[flag].key, _coerce(table[flag], values))
            except (ValueError, ValidationError) as exc:
                message = exc.errors()[0]["msg"] if isinstance(exc, ValidationError) else str(exc)
                self.invalid(flag, values, f"{table[flag].key}: {message}")
        elif flag in ENGINE_TP_FLAGS:
            self.engine_tp(flag, values)
        elif (
            flag.startswith("--sglang-")
            and flag not in LAUNCHER_SGLANG_FLAGS
            and flag.removeprefix("--") not in miles_flag_names()
        ):
            name = flag.removeprefix("--sglang-").replace("-", "_")
            parsed = [_scalar(v) for v in values]
            self.values[("sglang", "extra", name)] = True if not values else parsed[0] if len(parsed) == 1 else parsed
        else:
            kind, reason = classify(flag)
            self.unmapped.append(Unmapped(flag, tuple(values), kind, reason))

    def translate_plugins(self) -> None:
        """Miles/slime plug-in paths and reward names as rlpipe's: its own function where it has one, a setting
        where that is what the plug-in does, else the flag is kept for the export and named with what to do."""
        for key, flag in PLUGIN_KEYS.items():
            path = self.values.get(tuple(key.split(".")))
            package, _, rest = str(path).partition(".")
            if path is None or package not in ("slime", "miles"):
                continue
            if rest in PLUGIN_EQUIVALENTS:
                self.set(key, PLUGIN_EQUIVALENTS[rest])
                self.implied.append(f"{flag} {path}: rlpipe's own is {PLUGIN_EQUIVALENTS[rest]}")
                continue
            del self.values[tuple(key.split("."))]
            if rest in PLUGIN_SETTINGS:
                setting, value = PLUGIN_SETTINGS[rest]
                self.set(setting, value)
                self.implied.append(f"{flag} {path}: in rlpipe, {setting}={value}")
            else:
                why = PLUGIN_MISSING.get(rest, "a Miles/slime plug-in rlpipe has no equivalent of")
                self.unmapped.append(Unmapped(flag, (str(path),), "miles", why))
        from rlpipe.reward import REWARD_TYPES  # the reward hub's names (its modules load lazily)

        rm_type = self.values.get(("rollout", "rm_type"))
        if rm_type in RM_TYPE_EQUIVALENTS:
            self.set("rollout.rm_type", RM_TYPE_EQUIVALENTS[rm_type])
        elif rm_type is not None and rm_type not in REWARD_TYPES:
            del self.values[("rollout", "rm_type")]
            self.unmapped.append(Unmapped("--rm-type", (rm_type,), "miles", RM_TYPE_MISSING.format(name=rm_type)))

    def tis_function(self, flag: str, values: list[str]) -> None:
        """Miles/slime's built-in TIS functions are rlpipe's algo.tis_mode; any other is a plug-in to port."""
        path = values[0] if len(values) == 1 else ""
        package, _, rest = path.partition(".")
        mode = TIS_FUNCTIONS.get(rest) if package in ("slime", "miles") else None
        if mode is None:
            why = "a custom TIS function: rlpipe's corrections are algo.tis_level / algo.tis_mode (TIS, IcePop, MIS)"
            self.unmapped.append(Unmapped(flag, tuple(values), "miles", why))
            return
        self.set("algo.tis_mode", mode)
        self.implied.append(f"{flag} {path}: rlpipe's algo.tis_mode={mode}")

    def engine_tp(self, flag: str, values: list[str]) -> None:
        """--sglang-tp-size N is what slime/Miles derive from --rollout-num-gpus-per-engine (rlpipe's
        sglang.rollout_num_gpus_per_engine): the same setting, and two different values of it a contradiction."""
        key = ("sglang", "rollout_num_gpus_per_engine")
        if len(values) != 1 or not values[0].isdigit() or int(values[0]) < 1:
            self.invalid(flag, values, "expects one positive whole number")
        elif key in self.values and self.values[key] != int(values[0]):
            self.invalid(
                flag, values, f"contradicts --rollout-num-gpus-per-engine {self.values[key]} (the same setting)"
            )
        else:
            self.values[key] = int(values[0])
            self.implied.append(f"{flag} {values[0]}: the GPUs per engine, rlpipe's sglang.rollout_num_gpus_per_engine")

    def megatron_derivations(self) -> None:
        """What Megatron derives from the architecture flags, made explicit (it is what the script meant); and
        --no-rope-fusion beside --rotary-interleaved is what Megatron requires, which the export writes itself."""
        if "--rotary-interleaved" in self.seen:
            fusion = [u for u in self.unmapped if u.flag == "--no-rope-fusion"]
            self.unmapped = [u for u in self.unmapped if u not in fusion]
            self.implied += ["--no-rope-fusion: Megatron's rope fusion does not take interleaved RoPE"] * bool(fusion)
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


# Miles/slime's built-in TIS functions (the part after the package) -> rlpipe's algo.tis_mode.
TIS_FUNCTIONS = {
    "backends.megatron_utils.loss.vanilla_tis_function": "truncate",  # slime
    "backends.megatron_utils.loss.icepop_function": "mask",
    "backends.training_utils.loss_hub.corrections.vanilla_tis_function": "truncate",  # Miles
    "backends.training_utils.loss_hub.corrections.icepop_function": "mask",
}

# The dotted-path fields an import may fill from a Miles/slime flag: key -> its flag.
PLUGIN_KEYS = {
    "rollout.dynamic_sampling_filter_path": "--dynamic-sampling-filter-path",
    "rollout.buffer_filter_path": "--buffer-filter-path",
    "rollout.rollout_function_path": "--rollout-function-path",
    "rollout.custom_rm_path": "--custom-rm-path",
    "algo.custom_loss_function_path": "--custom-loss-function-path",
}


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


class UnsetVariables(ValueError):
    """The train line uses variables that have no value: name -> a flag that uses it. Give them and import again."""

    def __init__(self, missing: dict[str, str], printed_by: Mapping[str, str] | None = None) -> None:
        self.missing = missing
        self.printed_by = printed_by = dict(printed_by or {})
        names = [name for name in missing if name.isidentifier()]
        words = [word for word in missing if not word.isidentifier()]
        parts = []
        if names:
            uses = "; ".join(
                f"{name} (in {missing[name]}; the script sets it to the output of {printed_by[name]}, a command rlpipe "
                "does not run: run it where the script runs and give what it prints)"
                if name in printed_by
                else f"{name} (in {missing[name]})"
                for name in names
            )
            asks = " ".join(f"--set {name}=..." for name in names)
            parts.append(f"uses variables with no value here: {uses}. Give each one: {asks} (or export it)")
        if words:
            shown = "; ".join(words)
            parts.append(f"has words only a command rlpipe does not run can compute: {shown}. Edit the script")
        super().__init__("the script's train line " + "; and it ".join(parts))


class MissingSources(ValueError):
    """The train line uses arrays nothing defined, and the script sources files not found here (the model's flags,
    usually): give the folder holding them and import again."""

    def __init__(self, sources: list[str], arrays: list[str]) -> None:
        self.sources = sources
        used = ", ".join(f"${{{name}[@]}}" for name in arrays)
        super().__init__(
            f"the script sources {', '.join(sources)}, not found here, and its train line uses {used}, which "
            "nothing defined (they are likely set there). Give the folder holding the file: --source-dir DIR "
            "(e.g. your slime/Miles checkout's scripts/models)"
        )


def import_miles(
    text: str,
    *,
    base_dir: Path | None,
    conf_dir: Path = CONF_DIR,
    variables: Mapping[str, str] | None = None,
    script_name: str = "launch.sh",
    source_dirs: tuple[Path, ...] = (),
) -> ImportResult:
    """Read a Miles/slime launch script, or a flat command line (`ray job submit ... -- python3 train.py ...`, or
    train.py's flags alone), into an rlpipe experiment (see the module docstring).

    base_dir: the script's folder (`${BASH_SOURCE[0]}` is base_dir/script_name, `source` paths are relative to it);
    variables: the environment the script runs in (the variables it expects from outside, `--set NAME=VALUE`); as in
    bash, the script's own assignments replace them and `${X:-default}` keeps them. A train line that still uses a
    variable with no value raises UnsetVariables: nothing unexpanded reaches the experiment; `source_dirs`: where a
    sourced file missing at its path is looked for by name (MissingSources when it is nowhere and the train line
    needs what it defines)."""
    script_path = base_dir / script_name if base_dir else None
    script = Script(base_dir, conf_dir, dict(variables or {}), script_path, source_dirs)
    script.read(text)
    if script.missing:
        raise UnsetVariables(script.missing, script.printed_by)
    if script.lost_sources and script.train_undefined:
        raise MissingSources(script.lost_sources, script.train_undefined)
    if script.train is not None:
        words = script.train[1]
    elif script.arrays:
        words = [w for array in script.arrays.values() for w in array]
        script.notes.append("no train.py line: took the flags of every array, in the order they were defined")
    else:
        words = [w for statement in lex(text) for w in script.expand(statement)]  # the flags alone
        script.notes.append("no train.py line and no arrays: read the text as train.py's flags")
    mapper = _Mapper()
    for flag, values in split_flags(words):
        mapper.apply(flag, values)
    mapper.megatron_derivations()
    mapper.translate_plugins()
    if ("sglang", "version") not in mapper.values and (version := sglang_version_for(mapper.values, script.notes)):
        mapper.set("sglang.version", version)
    extra = pass_through(mapper.unmapped, script.notes)
    if extra:
        mapper.set("miles.extra_args", extra)
    model = script.model or "auto"
    if script.train is not None:
        if script.train[0] == "train_async.py":
            mapper.set("rollout.mode", "async")
        _miles_defaults(mapper.values, model, conf_dir)
        if ("rollout", "max_response_len") not in mapper.values:
            script.notes.append(
                "--rollout-max-response-len is unset: Miles then lets responses run to the context length; rlpipe "
                "needs a number and uses 1024 (set rollout.max_response_len)"
            )
    config = {"defaults": [{"override /model": model}], **_nest(mapper.values)}
    return ImportResult(config, [*script.unresolved, *mapper.unmapped], mapper.implied, script.notes, model)


def sglang_version_for(values: dict[Key, Any], notes: list[str]) -> str | None:
    """The SGLang version an imported script's --sglang-* flags are for, when rlpipe's default (the newest list)
    does not know them all: the newest checked-in version that does (slime pins 0.5.15.post1, Miles builds on
    0.5.16; their scripts use flags later SGLang releases renamed or dropped). None: the default knows them, or no
    version knows them all (the config check then names the unknown ones)."""
    from rlpipe.rollout.sglang.server_args import check_key, known_versions, list_path, read_list

    keys = [path[2] for path in values if path[:2] == ("sglang", "extra")]
    if not keys:
        return None
    versions = list(reversed(known_versions()))  # newest first

    def knows(version: str) -> bool:
        names = read_list(list_path(version))
        return all(check_key(key, names).field is not None for key in keys)

    if knows(versions[0]):
        return None
    chosen = next((v for v in versions[1:] if knows(v)), None)
    if chosen is not None:
        notes.append(
            f"sglang.version={chosen}: the newest SGLang release whose launch flags include every --sglang-* "
            "flag of the script (set sglang.version to the one you run)"
        )
    return chosen


def pass_through(unmapped: list[Unmapped], notes: list[str]) -> list[str]:
    """The flags rlpipe has no field for, with their values, for `miles.extra_args`: rlpipe runs without them and
    the --miles export writes them back. A secret value (a secret-named flag's) is not written into the experiment:
    it becomes a reference to an environment variable, as in the export."""
    words: list[str] = []
    taken: dict[str, str] = {}
    for item in unmapped:
        if item.kind not in ("miles", "megatron", "unknown") or not item.flag.startswith("--"):
            continue
        if is_secret_key(item.flag) and item.values:
            env = secret_env_name(item.flag, taken)
            taken[env] = item.flag
            notes.append(f"{item.flag}'s value is not written here: export {env} before running or exporting")
            words += [item.flag, *(f"${{oc.env:{env},''}}" for _ in item.values)]
        else:
            words += [item.flag, *item.values]
    return words


def _miles_defaults(values: dict[Key, Any], model: str, conf_dir: Path) -> None:
    """Write Miles' default (and Miles' fixed facts) for each flag the script left out where rlpipe's own
    composed default differs. Architecture keys stay with the model group / HF checkpoint."""
    from rlpipe.config.load import compose, validate

    base = validate(compose(["experiment=none", f"model={model}"], conf_dir)).model_dump()  # schema defaults too
    wandb = values.get(("log", "wandb"), False)
    optimizer = values.get(("optim", "optimizer"), MILES_DEFAULTS.get("optim.optimizer", "adam"))
    for key, miles_value in {**MILES_DEFAULTS, **MILES_FIXED, **miles_forced(optimizer)}.items():
        path = tuple(key.split("."))
        if path in values or (path[0] == "model" and key not in DROPOUT_KEYS) or (path[0] == "log" and not wandb):
            continue
        if _lookup(base, path) != miles_value:
            values[path] = miles_value


def schema_line(output: Path) -> str:
    """The header line that points an editor (the YAML language server) at the experiment JSON schema, by a path
    relative to the file `output` (written after `# @package _global_`: Hydra reads only the `# @` lines that open
    a file)."""
    from rlpipe.config.json_schema import EXPERIMENT, schema_dir

    return f"# yaml-language-server: $schema={os.path.relpath(schema_dir() / EXPERIMENT, output.resolve().parent)}"


def to_experiment_yaml(result: ImportResult, name: str, output: Path | None = None) -> str:
    """The imported config as conf/experiment/<name>.yaml, the flags not applied listed in its header; with the
    file it is written to (`output`), the header also names the experiment JSON schema for editors."""
    head = [
        "# @package _global_",
        *([schema_line(output)] if output is not None else []),
        "# Imported from a Miles launch script (python -m rlpipe.config.miles import ...); check it with",
        f"#   python launch.py +experiment={name} --cfg job",
    ]
    if result.unmapped:
        head += ["# Flags not applied (rlpipe has no field for them):", *(f"#   {u}" for u in result.unmapped)]
    if result.implied:
        head += ["# Flags rlpipe derives itself:", *(f"#   {line}" for line in result.implied)]
    head += [f"# Note: {note}" for note in result.notes]
    head = [show_missing(line) for line in head]  # a marker of an unexpanded word, in a message, as ${NAME}
    body = {"defaults": result.config["defaults"], "run_name": name}
    body.update((k, v) for k, v in result.config.items() if k != "defaults")
    return "\n".join(head) + "\n" + yaml.safe_dump(body, sort_keys=False, default_flow_style=False)
