"""Convert checkpoints between HF safetensors and Megatron's torch_dist format, in one process on the host.

    python -m rlpipe.tools.convert hf-to-torch-dist --hf HF_DIR --out CKPT_DIR [--iteration 0] [--overwrite]
    python -m rlpipe.tools.convert torch-dist-to-hf --ckpt CKPT_DIR --hf-config HF_DIR --out OUT_DIR [--overwrite]

torch_dist stores each tensor by its global shape, so one written here (TP=1, PP=1) loads into any layout.
Going back, HF_DIR supplies config.json and the tokenizer files, copied next to the exported weights. The
conversion is exact: the same HF <-> Megatron mapping the trainer uses (`rlpipe.train.weights`), in the weights' own
dtype (bf16 stays bf16; any other mix goes through fp32, which holds each exactly).

The weights pass through one model's worth of parameters and nothing more: no optimizer or gradient buffers (a
trainer's would hold the model three times over), the HF files read tensor by tensor, the HF output written a file
at a time (`rlpipe.train.hf_export`).

The paths are checked first, before torch or Megatron is imported: an input that is missing or the wrong kind of
folder, an output that is a file, lies inside an input (or holds one), cannot be created, or is a non-empty folder
without --overwrite. Every problem is printed in one message, each naming its flag and path, and the exit code is 2.
The output is built in a hidden sibling folder and renamed into place, so it appears whole or not at all; its
folders and files get the usual modes (0777 / 0666 minus the umask), not a temporary folder's 0700.
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any

from rlpipe.config.files import TRACKER_FILE, not_creatable_in  # both torch-free
from rlpipe.train.spec import single_process_spec  # plain values: no torch

if TYPE_CHECKING:
    import torch
    from megatron.core.models.gpt import GPTModel

EXIT_BAD_PATHS = 2
TOKENIZER_FILES = ("tokenizer.json", "tokenizer.model", "vocab.json", "tokenizer_config.json")


def render_problems(problems: list[str]) -> str:
    """The one message for every path problem found, each line naming its flag and path."""
    n = len(problems)
    head = f"rlpipe convert: {n} problem{'s' if n != 1 else ''} with the paths (nothing was written):"
    return "\n".join([head, *(f"  - {p}" for p in problems)])


# ------------------------------------------------------------------------------------------------ path checks
def hf_folder_problems(flag: str, path: Path, need_weights: bool) -> list[str]:
    """What keeps `path` from being an HF model folder: it must hold config.json (a JSON object with a model_type)
    and, where the weights are read (`need_weights`), *.safetensors files. Cheap: nothing is loaded."""
    if not path.exists():
        return [f"{flag} {path}: does not exist"]
    if not path.is_dir():
        return [f"{flag} {path}: is a file, not an HF model folder"]
    problems = []
    config = path / "config.json"
    if not config.is_file():
        problems.append(f"{flag} {path}: has no config.json, so it is not an HF model folder")
    else:
        try:
            content = json.loads(config.read_text(encoding="utf-8"))
        except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
            content = None
            problems.append(f"{flag} {config}: cannot be read as JSON ({exc})")
        else:
            if not isinstance(content, dict) or not content.get("model_type"):
                problems.append(f"{flag} {config}: names no model_type, so it is not an HF model config")
    if need_weights and next(path.glob("*.safetensors"), None) is None:
        problems.append(f"{flag} {path}: has no *.safetensors weights")
    return problems


def torch_dist_problems(flag: str, path: Path) -> list[str]:
    """What keeps `path` from being a torch_dist checkpoint: a folder with a tracker file naming an existing
    iter_* folder, or an iteration folder itself, holding Megatron's metadata.json and torch's .metadata."""
    if not path.exists():
        return [f"{flag} {path}: does not exist"]
    if not path.is_dir():
        return [f"{flag} {path}: is a file, not a torch_dist checkpoint folder"]
    folder = path
    if not (path / "metadata.json").is_file():
        tracker = path / TRACKER_FILE
        if not tracker.is_file():
            return [f"{flag} {path}: is not a torch_dist checkpoint (it has neither {TRACKER_FILE} nor metadata.json)"]
        try:
            text = tracker.read_text().strip()
        except (OSError, UnicodeDecodeError) as exc:
            return [f"{flag} {tracker}: cannot be read ({exc})"]
        if not text.isdigit():
            return [f"{flag} {tracker}: holds {text[:40]!r}, not an iteration number"]
        folder = path / f"iter_{int(text):07d}"
        if not folder.is_dir():
            return [f"{flag} {tracker}: names {folder.name}, which is missing"]
    absent = [name for name in ("metadata.json", ".metadata") if not (folder / name).is_file()]
    if absent:
        return [f"{flag} {folder}: is not a complete torch_dist checkpoint (no {', '.join(absent)})"]
    return []


def output_problems(flag: str, out: Path, inputs: dict[str, Path], overwrite: bool) -> list[str]:
    """What keeps `out` from being written: it must not be or lie inside an input, nor hold one (replacing it would
    delete the input); it must be a folder (or not exist), empty unless `overwrite`, and its parent creatable and
    writable (the new folder is built beside it and renamed into place)."""
    target = out.resolve()
    for in_flag, path in inputs.items():
        source = path.resolve()
        if target == source or source in target.parents:
            where = "is the input" if target == source else "is inside the input"
            return [f"{flag} {out}: {where} {in_flag} {path}; write the output elsewhere"]
        if target in source.parents:
            return [f"{flag} {out}: holds the input {in_flag} {path}, which replacing it would delete"]
    if target.exists():
        if not target.is_dir():
            return [f"{flag} {out}: is an existing file; name a folder to write"]
        try:
            occupied = next(target.iterdir(), None) is not None
        except OSError as exc:
            return [f"{flag} {out}: cannot be read ({exc.strerror})"]
        if occupied and not overwrite:
            return [f"{flag} {out}: is a non-empty folder; pass --overwrite to replace it, or name a new folder"]
    why = not_creatable_in(target.parent)
    return [f"{flag} {out}: cannot be created: {why}"] if why else []


def path_problems(args: argparse.Namespace) -> list[str]:
    """Every problem with the paths of a parsed command line (empty: go ahead)."""
    if args.command == "hf-to-torch-dist":
        problems = hf_folder_problems("--hf", args.hf, need_weights=True)
        if args.iteration < 0:
            problems.append(f"--iteration {args.iteration}: must be 0 or more")
        return problems + output_problems("--out", args.out, {"--hf": args.hf}, args.overwrite)
    problems = torch_dist_problems("--ckpt", args.ckpt) + hf_folder_problems("--hf-config", args.hf_config, False)
    inputs = {"--ckpt": args.ckpt, "--hf-config": args.hf_config}
    return problems + output_problems("--out", args.out, inputs, args.overwrite)


def _warn_without_tokenizer(hf_config: Path) -> None:
    """A weights-only --hf-config is allowed, but its output will lack a tokenizer too: say so."""
    if hf_config.is_dir() and not any((hf_config / name).is_file() for name in TOKENIZER_FILES):
        print(
            f"rlpipe convert: note: --hf-config {hf_config} has no tokenizer files, so the output will have none",
            file=sys.stderr,
        )


def hf_to_torch_dist(hf_dir: Path, out_dir: Path, iteration: int = 0) -> Path:
    """Write an HF checkpoint's weights as a torch_dist checkpoint; returns the iteration folder. The checkpoint is
    built in a hidden sibling of `out_dir` and renamed into place whole."""
    import torch

    from rlpipe.train import dist_ckpt  # megatron import: only when a conversion runs
    from rlpipe.train.hf_export import readable_temp_dir, replace_folder
    from rlpipe.train.weights import hf_to_megatron, read_hf_state

    state = read_hf_state(Path(hf_dir))
    module, hf_config = _staging_model(Path(hf_dir), {t.dtype for t in state.values()})  # dtypes: no data read
    params = dict(module.named_parameters())
    into = {name: p.detach() for name, p in params.items() if p.device.type == "cpu"}  # converted in place
    with torch.no_grad():
        for name, tensor in hf_to_megatron(state, hf_config, tp_rank=0, tp_size=1, into=into):
            param = params.pop(name)
            if name not in into:
                param.copy_(tensor)
    if params:
        raise KeyError(f"HF checkpoint {hf_dir} has no source for Megatron parameters {sorted(params)}")
    out_dir = Path(out_dir)
    out_dir.parent.mkdir(parents=True, exist_ok=True)
    tmp = readable_temp_dir(out_dir)
    try:
        folder = dist_ckpt.save_model(module, tmp, iteration)
        replace_folder(tmp, out_dir)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return out_dir / folder.name


def torch_dist_to_hf(ckpt_dir: Path, hf_config_dir: Path, out_dir: Path) -> Path:
    """Export a torch_dist checkpoint as HF safetensors plus HF_CONFIG_DIR's config / tokenizer files (written
    atomically by `export_hf`)."""
    from rlpipe.train import dist_ckpt
    from rlpipe.train.hf_export import export_hf
    from rlpipe.train.weights import megatron_to_hf

    module, hf_config = _staging_model(Path(hf_config_dir), dist_ckpt.stored_model_dtypes(Path(ckpt_dir)))
    dist_ckpt.load_model(module, Path(ckpt_dir))
    return export_hf(megatron_to_hf(module.named_parameters(), hf_config), Path(hf_config_dir), Path(out_dir))


def _staging_model(hf_config_dir: Path, dtypes: set[torch.dtype]) -> tuple[GPTModel, Any]:
    """The (GPTModel, HF config) the weights pass through: the whole model (TP = PP = 1) in the dtype that holds
    every one of `dtypes` exactly (bf16 if they all are, else fp32), its parameters allocated but not initialised
    (each is overwritten; untouched memory costs nothing until then), without the trainer's optimizer and gradient
    buffers."""
    import dataclasses

    import torch
    from megatron.core import tensor_parallel
    from transformers import AutoConfig

    from rlpipe.train.cpu_shim import apply_cpu_patches
    from rlpipe.train.model import build_gpt_model, transformer_config_from_hf

    apply_cpu_patches()
    spec = single_process_spec(hf_config_dir, params_dtype="bf16" if dtypes == {torch.bfloat16} else "fp32")
    hf_config = AutoConfig.from_pretrained(hf_config_dir)
    tensor_parallel.model_parallel_cuda_manual_seed(spec.seed)
    config = dataclasses.replace(transformer_config_from_hf(hf_config, spec), perform_initialization=False)
    return build_gpt_model(hf_config, config), hf_config


def main(argv: list[str] | None = None, prog: str = "python -m rlpipe.tools.convert") -> None:
    """Parse, check every path (exit 2 with one message listing the problems), then convert."""
    args = _parser(prog).parse_args(argv)
    problems = path_problems(args)
    if problems:
        print(render_problems(problems), file=sys.stderr)
        raise SystemExit(EXIT_BAD_PATHS)
    if args.command == "torch-dist-to-hf":
        _warn_without_tokenizer(args.hf_config)
    from rlpipe.train.distributed import init_single_process, teardown  # torch and megatron: only from here on

    init_single_process()
    try:
        if args.command == "hf-to-torch-dist":
            print(hf_to_torch_dist(args.hf, args.out, args.iteration))
        else:
            print(torch_dist_to_hf(args.ckpt, args.hf_config, args.out))
    finally:
        teardown()


def _parser(prog: str) -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog=prog, description=__doc__.split("\n")[0])
    commands = parser.add_subparsers(dest="command", required=True)
    overwrite = "replace OUT if it is a non-empty folder (it is swapped for the new one only once that is complete)"
    to_dist = commands.add_parser("hf-to-torch-dist", help="HF safetensors -> torch_dist")
    to_dist.add_argument("--hf", type=Path, required=True, help="HF model folder (config.json, *.safetensors)")
    to_dist.add_argument("--out", type=Path, required=True, help="torch_dist checkpoint folder to write")
    to_dist.add_argument("--iteration", type=int, default=0, help="iteration number of the written checkpoint")
    to_dist.add_argument("--overwrite", action="store_true", help=overwrite)
    to_hf = commands.add_parser("torch-dist-to-hf", help="torch_dist -> HF safetensors")
    to_hf.add_argument("--ckpt", type=Path, required=True, help="torch_dist folder (tracker file or iter_*)")
    to_hf.add_argument("--hf-config", type=Path, required=True, help="HF folder giving config.json and tokenizer")
    to_hf.add_argument("--out", type=Path, required=True, help="HF folder to write")
    to_hf.add_argument("--overwrite", action="store_true", help=overwrite)
    return parser


if __name__ == "__main__":
    main()
