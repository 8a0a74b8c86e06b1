"""Convert checkpoints between HF safetensors and Megatron's torch_dist format, in one process on the host.

    python -m rlpipe.tools.convert hf-to-torch-dist --hf HF_DIR --out CKPT_DIR [--iteration 0]
    python -m rlpipe.tools.convert torch-dist-to-hf --ckpt CKPT_DIR --hf-config HF_DIR --out OUT_DIR

torch_dist stores each tensor by its global shape, so one written here (TP=1, PP=1) loads into any layout.
Going back, HF_DIR supplies config.json and the tokenizer files, copied next to the exported weights. The
conversion is exact: the same HF <-> Megatron mapping the trainer uses (`rlpipe.train.weights`), in fp32.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from rlpipe.train.distributed import init_single_process, teardown
from rlpipe.train.hf_export import export_hf
from rlpipe.train.spec import single_process_spec


def hf_to_torch_dist(hf_dir: Path, out_dir: Path, iteration: int = 0) -> Path:
    """Write an HF checkpoint's weights as a torch_dist checkpoint; returns the iteration folder."""
    from rlpipe.train.trainer import MegatronTrainer  # megatron import: only when a conversion runs

    trainer = MegatronTrainer(single_process_spec(Path(hf_dir)))
    trainer.load_hf(Path(hf_dir))
    return trainer.save_torch_dist(Path(out_dir), iteration)


def torch_dist_to_hf(ckpt_dir: Path, hf_config_dir: Path, out_dir: Path) -> Path:
    """Export a torch_dist checkpoint as HF safetensors plus HF_CONFIG_DIR's config / tokenizer files."""
    from rlpipe.train.trainer import MegatronTrainer

    trainer = MegatronTrainer(single_process_spec(Path(hf_config_dir)))
    trainer.load_torch_dist(Path(ckpt_dir))
    return export_hf(trainer.hf_named_tensors(), Path(hf_config_dir), Path(out_dir))


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m rlpipe.tools.convert", description=__doc__.split("\n")[0])
    commands = parser.add_subparsers(dest="command", required=True)
    to_dist = commands.add_parser("hf-to-torch-dist", help="HF safetensors -> torch_dist")
    to_dist.add_argument("--hf", type=Path, required=True, help="HF model folder (config.json, *.safetensors)")
    to_dist.add_argument("--out", type=Path, required=True, help="torch_dist checkpoint folder to write")
    to_dist.add_argument("--iteration", type=int, default=0, help="iteration number of the written checkpoint")
    to_hf = commands.add_parser("torch-dist-to-hf", help="torch_dist -> HF safetensors")
    to_hf.add_argument("--ckpt", type=Path, required=True, help="torch_dist folder (tracker file or iter_*)")
    to_hf.add_argument("--hf-config", type=Path, required=True, help="HF folder giving config.json and tokenizer")
    to_hf.add_argument("--out", type=Path, required=True, help="HF folder to write")
    args = parser.parse_args(argv)
    init_single_process()
    try:
        if args.command == "hf-to-torch-dist":
            print(hf_to_torch_dist(args.hf, args.out, args.iteration))
        else:
            print(torch_dist_to_hf(args.ckpt, args.hf_config, args.out))
    finally:
        teardown()


if __name__ == "__main__":
    main()
