"""Trainer memory and step time: full fine-tuning vs LoRA at several ranks, on one CPU process.

    python bench/lora_memory.py                       # a ~45M-parameter Qwen2 shape, ranks 8 / 32 / 128
    python bench/lora_memory.py --hidden 128 --layers 2 --ffn 256 --vocab 512 --ranks 4 --steps 1   # smoke size

Each configuration runs in a fresh subprocess, back to back (machines here are shared: compare within one run):
it builds the model at random weights (HF folder, then MegatronTrainer with Adam), takes `--steps` optimizer steps
on the same batch and reports
    trainable parameters      what gets gradients
    optimizer state           bytes of Adam's moments (and fp32 main copies, if any) actually allocated
    gradient buffers          bytes of the DDP gradient buffers
    peak RSS                  the subprocess's maximum resident set (model, activations, everything)
    step time                 median seconds per optimizer step after the first
with ratios against full fine-tuning. The optimizer state must shrink in proportion to the trainable parameters.
"""

from __future__ import annotations

import argparse
import json
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
ALL = ("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj")


def measure(args: argparse.Namespace, rank: int) -> dict[str, float]:
    """One configuration in this process (rank 0: full fine-tuning)."""
    import torch
    from transformers import Qwen2Config, Qwen2ForCausalLM

    from rlpipe.train.distributed import init_single_process
    from rlpipe.train.spec import LoraSpec, single_process_spec
    from rlpipe.train.trainer import MegatronTrainer

    torch.manual_seed(0)
    config = Qwen2Config(
        vocab_size=args.vocab, hidden_size=args.hidden, intermediate_size=args.ffn, num_hidden_layers=args.layers,
        num_attention_heads=args.hidden // 64 or 1, num_key_value_heads=max(1, args.hidden // 256),
        max_position_embeddings=args.seq_len * 2, tie_word_embeddings=False,
    )  # fmt: skip
    folder = Path(args.workdir) / "model"
    if not (folder / "model.safetensors").exists():
        Qwen2ForCausalLM(config).save_pretrained(folder)
    init_single_process()
    lora = LoraSpec(rank, 2.0 * rank, 0.0, ALL) if rank else None
    spec = single_process_spec(folder, optimizer="adam", lr=1e-4, micro_batch_size=args.batch, lora=lora)
    trainer = MegatronTrainer(spec)
    trainer.load_hf(folder)
    generator = torch.Generator().manual_seed(1)
    seqs = torch.randint(0, args.vocab, (args.batch, args.seq_len), generator=generator).tolist()
    starts = [args.seq_len // 2] * args.batch

    def loss_fn(indices, log_probs, entropies):
        loss = -torch.cat(log_probs).mean() / len(seqs) * len(indices)
        return loss, {"loss": loss.detach()}

    times = []
    for _ in range(args.steps + 1):
        t0 = time.perf_counter()
        trainer.train_step(seqs, starts, loss_fn)
        times.append(time.perf_counter() - t0)
    trainable = sum(p.numel() for p in trainer.model.parameters() if p.requires_grad)
    inner = getattr(trainer.optimizer, "chained_optimizers", [trainer.optimizer])  # megatron's wrappers
    states = [state for wrapper in inner for state in wrapper.optimizer.state.values()]  # torch Adam's, per param
    optimizer_bytes = sum(t.numel() * t.element_size() for st in states for t in st.values() if t.dim())
    grad_bytes = sum(b.grad_data.numel() * b.grad_data.element_size() for b in trainer.model.buffers)
    return {
        "rank": rank,
        "params": sum(p.numel() for p in trainer.model.parameters()),
        "trainable": trainable,
        "optimizer_bytes": optimizer_bytes,
        "grad_bytes": grad_bytes,
        "peak_rss_bytes": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024,
        "step_s": statistics.median(times[1:]) if len(times) > 1 else times[0],
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--hidden", type=int, default=768)
    parser.add_argument("--layers", type=int, default=6)
    parser.add_argument("--ffn", type=int, default=2048)
    parser.add_argument("--vocab", type=int, default=8192)
    parser.add_argument("--batch", type=int, default=4)
    parser.add_argument("--seq-len", type=int, default=128)
    parser.add_argument("--steps", type=int, default=3)
    parser.add_argument("--ranks", type=int, nargs="+", default=[8, 32, 128])
    parser.add_argument("--workdir", default=None)
    parser.add_argument("--one", type=int, default=None, help=argparse.SUPPRESS)  # subprocess: measure this rank
    args = parser.parse_args()
    if args.one is not None:
        print(json.dumps(measure(args, args.one)))
        return
    with tempfile.TemporaryDirectory(dir=args.workdir) as workdir:
        shape = ("hidden", "layers", "ffn", "vocab", "batch", "seq_len", "steps")
        forwarded = [word for key in shape for word in (f"--{key.replace('_', '-')}", str(getattr(args, key)))]
        forwarded += ["--workdir", str(Path(workdir).resolve())]  # the subprocess runs from the repository
        rows = []
        for rank in [0, *args.ranks]:  # 0: full fine-tuning, the baseline, run first
            done = subprocess.run(
                [sys.executable, __file__, *forwarded, "--one", str(rank)],
                capture_output=True, text=True, check=True, cwd=ROOT,
            )  # fmt: skip
            rows.append(json.loads(done.stdout.strip().splitlines()[-1]))
    full = rows[0]
    shape = f"hidden {args.hidden}, {args.layers} layers, ffn {args.ffn}, vocab {args.vocab}"
    print(f"model: {full['params'] / 1e6:.1f} M parameters ({shape}); batch {args.batch} x {args.seq_len} tokens; "
          "Adam, fp32, 1 CPU process")  # fmt: skip
    print("| run | trainable | optimizer state | gradient buffers | peak RSS | step time |")
    print("|---|---:|---:|---:|---:|---:|")
    for row in rows:
        name = "full fine-tuning" if row["rank"] == 0 else f"LoRA r={row['rank']}"

        def cell(key: str, unit: float, fmt: str, suffix: str, row=row) -> str:
            return f"{row[key] / unit:{fmt}} {suffix} ({row[key] / full[key]:.3f}x)"

        print(f"| {name} | {cell('trainable', 1e6, '.2f', 'M')} | {cell('optimizer_bytes', 2**20, '.1f', 'MiB')} | "
              f"{cell('grad_bytes', 2**20, '.1f', 'MiB')} | {cell('peak_rss_bytes', 2**20, '.0f', 'MiB')} | "
              f"{cell('step_s', 1, '.3f', 's')} |")  # fmt: skip
    for row in rows[1:]:
        ratio_state = row["optimizer_bytes"] / full["optimizer_bytes"]
        ratio_params = row["trainable"] / full["trainable"]
        print(f"r={row['rank']}: optimizer state / full = {ratio_state:.4f}, trainable / full = {ratio_params:.4f}")


if __name__ == "__main__":
    main()
