"""Resolution rules for every path a config names: the files it reads and the folders it writes.

Inputs are looked into (`rlpipe.config.files`): prompt and eval data, the HF checkpoint, reference, critic and teacher
weights, a checkpoint to resume. Outputs must be folders, or creatable under one: not a file, not on /proc, /sys or
/dev, within the system's name and path lengths, with only the placeholders rlpipe fills in. All of it runs in the
config phase, so a typo in a path costs a second, not a cluster start.

With `check_paths=False` (`--cfg job`, `--miles`: a plan printed for another machine) a missing input is a warning.
"""

from __future__ import annotations

import os
import string
from pathlib import Path

from rlpipe.config.files import (
    TRACKER_FILE,
    Finding,
    inspect_checkpoint_folder,
    inspect_hf_folder,
    inspect_prompt_file,
    not_creatable_in,
)
from rlpipe.config.hf import HF_FAMILY_FACTS
from rlpipe.config.state import Resolver

SPECIAL_FILE_SYSTEMS = ("/proc", "/sys", "/dev")
ALLOWED_UNDER_SPECIAL = ("/dev/shm",)  # a tmpfs people do write to
NAME_MAX, PATH_MAX = 255, 4096  # Linux's limits on a file name and a whole path, in bytes
# Folders rlpipe writes: config key -> the placeholders it fills in.
OUTPUT_FOLDERS: dict[str, tuple[str, ...]] = {"ckpt.save": (), "ckpt.save_hf": ("rollout_id",)}
OUTPUT_FILES: dict[str, tuple[str, ...]] = {"debug.save_rollout_data": ("rollout_id",)}
REWARDS_WITH_LABELS = ("exact_match", "math", "deepscaler", "dapo", "f1")


def _report(r: Resolver, key: str, findings: list[Finding], value: str) -> None:
    """Findings about a file are problems, or warnings when the config is only printed for another machine."""
    for finding in findings:
        r.path_problem(key, finding.message, finding.fix, value)


# ------------------------------------------------------------------------------------------------- inputs
def input_files(r: Resolver) -> None:
    """The model folder, prompt data and eval data exist and read as what they claim to be (files the demo writes
    at start are not looked into: they do not exist yet on a first run)."""
    built = r.d["demo"] is not None  # the demo's data is written at start; its checkpoint too, unless one is given
    hf = r.get("ckpt.hf_checkpoint")
    if hf is None:
        r.problem(
            "ckpt.hf_checkpoint",
            "no HuggingFace checkpoint given (tokenizer, config, initial weights)",
            "ckpt.hf_checkpoint=/path/to/model, or +experiment=tiny-cpu for the offline demo",
        )
    elif not r.derived("ckpt.hf_checkpoint") and not _bad_path(r, "ckpt.hf_checkpoint", hf):
        _report(r, "ckpt.hf_checkpoint", inspect_hf_folder(Path(hf), tuple(HF_FAMILY_FACTS)), hf)
    tokenizer = Path(hf) / "tokenizer.json" if hf and not built else None
    ro = r.d["rollout"]
    if ro["prompt_data"] is None:
        r.problem("rollout.prompt_data", "no prompt dataset given", "rollout.prompt_data=/path/to/prompts.jsonl")
    elif not built and not _bad_path(r, "rollout.prompt_data", ro["prompt_data"]):
        findings = inspect_prompt_file(
            Path(ro["prompt_data"]), ro["input_key"], ro["label_key"], ro["max_prompt_len"], tokenizer
        )
        _report(r, "rollout.prompt_data", findings, ro["prompt_data"])
    for name, ds in r.d["eval"]["datasets"].items():
        key = f"eval.datasets.{name}.path"
        if not built and not _bad_path(r, key, ds["path"]):
            input_key = ds.get("input_key") or r.d["eval"]["input_key"] or ro["input_key"]
            label_key = ds.get("label_key") or r.d["eval"]["label_key"]
            findings = inspect_prompt_file(Path(ds["path"]), input_key, label_key, ro["max_prompt_len"], tokenizer)
            _report(r, key, findings, ds["path"])


def weights_folders(r: Resolver) -> None:
    """ref_load / critic_load / the teacher: an HF folder or a torch_dist checkpoint each; ckpt.load, when it holds
    a checkpoint, a complete one."""
    estimator = r.get("algo.advantage_estimator")
    used = {
        "ckpt.ref_load": True,
        "ckpt.critic_load": estimator == "ppo",  # existence of these two: rlpipe.config.resolve._critic_and_teacher
        "algo.opd_teacher_load": estimator == "on_policy_distillation",
    }
    for key in [k for k, is_used in used.items() if is_used]:
        folder = r.get(key)
        if not folder or _bad_path(r, key, folder):
            continue
        path = Path(folder)
        if not path.exists():
            if key == "ckpt.ref_load":
                r.path_problem(key, "folder does not exist", "point it at the reference weights", folder)
        elif (path / "config.json").exists() or not _is_megatron(path):
            _report(r, key, inspect_hf_folder(path, tuple(HF_FAMILY_FACTS)), folder)
        else:
            _report(r, key, inspect_checkpoint_folder(path), folder)
    load = r.get("ckpt.load")
    if load and not _bad_path(r, "ckpt.load", load):
        _resume_folder(r, Path(load))


def _resume_folder(r: Resolver, load: Path) -> None:
    """ckpt.load: a complete checkpoint, or (said loudly) nothing yet. A folder that does not exist is fine only
    where this run saves its own checkpoints (load = save, Miles' restart-idempotent layout)."""
    save = r.get("ckpt.save")
    own = save is not None and os.path.normpath(save) == os.path.normpath(load)
    start = r.get("ckpt.ref_load") or r.get("ckpt.hf_checkpoint")
    if load.exists() and not load.is_dir():
        message, fix = "is a file, not a checkpoint folder", "point it at the folder of iter_* folders"
        r.problem("ckpt.load", message, fix, str(load))
    elif load.is_dir() and (load / TRACKER_FILE).exists():
        _report(r, "ckpt.load", inspect_checkpoint_folder(load), str(load))
    elif own:
        r.warn("ckpt.load", f"no checkpoint in {load} yet: starting fresh from {start}")
    elif not load.exists():
        r.path_problem(
            "ckpt.load",
            "folder does not exist, so there is nothing to resume",
            "point it at a checkpoint folder, or ckpt.load=null to start from ckpt.ref_load / ckpt.hf_checkpoint",
            str(load),
        )
    elif not (load / "metadata.json").exists():
        r.warn("ckpt.load", f"{load} holds no checkpoint: starting fresh from {start}")


def run_folder_name(r: Resolver) -> None:
    """run_name is one folder name: output_dir/run_name must not climb, nest, or carry control characters."""
    name = r.get("run_name")
    message = None
    if not name.strip():
        message = "is empty"
    elif "/" in name or "\\" in name:
        message = "contains a path separator (it names one folder inside output_dir)"
    elif any(ord(c) < 32 or ord(c) == 127 for c in name):
        message = "contains a control character (a newline or tab?)"
    elif name in (".", ".."):
        message = "names output_dir itself or its parent"
    elif len(os.fsencode(name)) > NAME_MAX:
        message = f"is {len(os.fsencode(name))} bytes long; folder names are limited to {NAME_MAX}"
    if message:
        r.problem("run_name", message, "run_name=my-run (letters, digits, - _ .)", name)


def _is_megatron(path: Path) -> bool:
    return (path / TRACKER_FILE).exists() or (path / "metadata.json").exists()


def labels_for_reward(r: Resolver) -> None:
    """A reward that compares with a label needs a label column."""
    ro = r.d["rollout"]
    if ro["custom_rm_path"] is None and ro["rm_type"] in REWARDS_WITH_LABELS and ro["label_key"] is None:
        r.problem(
            "rollout.label_key",
            f"rm_type {ro['rm_type']} compares each response with its label, but label_key is null",
            "rollout.label_key=<the column holding the answer> (e.g. label)",
        )


# ------------------------------------------------------------------------------------------------ outputs
def output_paths(r: Resolver) -> None:
    """Every folder and file rlpipe writes can be written: the run folder, checkpoints, HF copies, dumps, the
    demo cache."""
    run_dir = os.path.join(r.get("output_dir"), r.get("run_name"))
    targets = {"output_dir": (run_dir, True), "ckpt.save": (r.get("ckpt.save"), True)}
    if r.d["demo"] is not None:
        targets["demo.cache_dir"] = (r.d["demo"]["cache_dir"], True)
    for key, placeholders in {**OUTPUT_FOLDERS, **OUTPUT_FILES}.items():
        template = r.get(key)
        if template and key != "ckpt.save":
            filled = _fill(r, key, template, placeholders)
            if filled is not None:
                targets[key] = (filled, key in OUTPUT_FOLDERS)
    for key, (path, is_folder) in targets.items():
        if path and not _bad_path(r, key, path):
            message = _unwritable(Path(path), is_folder)
            if message:  # about this machine: only a warning when the config is printed for another
                r.path_problem(key, message, "choose a folder you can write to", path)


def _fill(r: Resolver, key: str, template: str, placeholders: tuple[str, ...]) -> str | None:
    """The template with its placeholders filled in for rollout 0; None (and a problem) for an unknown one."""
    try:
        fields = {name for _, name, _, _ in string.Formatter().parse(template) if name is not None}
    except ValueError as exc:  # an unmatched brace
        r.problem(key, f"is not a valid template ({exc})", "write placeholders as {rollout_id}", template)
        return None
    unknown = sorted(fields - set(placeholders))
    if unknown:
        known = ", ".join("{" + p + "}" for p in placeholders) or "none"
        r.problem(key, f"has unknown placeholder(s) {unknown}; rlpipe fills in {known}", "remove them", template)
        return None
    return template.format(**dict.fromkeys(placeholders, 0))


def _unwritable(path: Path, is_folder: bool) -> str | None:
    """Why rlpipe could not create `path` (a folder, or a file with `is_folder` False), or None."""
    path = Path(os.path.abspath(path))
    if path.exists():
        if is_folder and not path.is_dir():
            return f"{path} is a file, not a folder"
        if not is_folder and path.is_dir():
            return f"{path} is a folder, not a file"
        target = path if is_folder else path.parent
        return None if os.access(target, os.W_OK | os.X_OK) else f"{target} is not writable"
    why = not_creatable_in(path.parent)
    return f"{path} cannot be created: {why}" if why else None


def _bad_path(r: Resolver, key: str, path: str) -> bool:
    """Report (and return True for) a path no file system call should see: NUL bytes, an unexpanded ~, names or
    a whole path longer than the system allows, a place under /proc, /sys or /dev."""
    message = None
    if "\x00" in path:
        message = "contains a NUL byte"
    elif path.startswith("~"):
        message = "starts with ~, which rlpipe does not expand (a folder named ~ would be created)"
    else:
        absolute = os.path.abspath(path)
        long_name = next((p for p in Path(absolute).parts if len(os.fsencode(p)) > NAME_MAX), None)
        if len(os.fsencode(absolute)) >= PATH_MAX:
            message = f"is {len(os.fsencode(absolute))} bytes long; paths are limited to {PATH_MAX - 1}"
        elif long_name is not None:
            message = (
                f"has a name of {len(os.fsencode(long_name))} bytes ({long_name[:20]}...); the limit is {NAME_MAX}"
            )
        elif _special(absolute):
            message = "is on a special file system (/proc, /sys, /dev), not a place for files"
    if message is None:
        return False
    r.problem(key, message, "use a plain path (absolute, or relative to the launch folder)", path)
    return True


def _special(absolute: str) -> bool:
    def under(prefix: str) -> bool:
        return absolute == prefix or absolute.startswith(prefix + "/")

    return any(under(p) for p in SPECIAL_FILE_SYSTEMS) and not any(under(p) for p in ALLOWED_UNDER_SPECIAL)
