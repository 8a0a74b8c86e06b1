"""The plan's memory estimate against a real training step of rlpipe's Megatron trainer on this machine.

For each config: build the trainer (fp32, Adam, one process), take one step (Adam creates its state), then profile a
second step with torch's memory profiler (`torch.profiler` with profile_memory; its timeline of tensor creations
and frees) and take the peak of what the step allocated beyond what already existed. Compared:

    optimizer   bytes of Adam's state tensors after the first step   vs  plan: optimizer
    step peak   the profiled peak of the second step                 vs  plan: activations + log-prob head

The plan is `rlpipe.plan.memory.train_memory` on the same config, without the CUDA runtime term (a CPU process has
none). Goal (issue 15): every row within 15 %. Where CUDA is available the trainer runs there and the step peak is
torch.cuda.max_memory_allocated beyond what was allocated before the step (goal there: 10 %), with the step's time.

    python bench/plan_vs_measured.py      # ~1 minute on 2 cores
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

import torch
from torch.profiler import ProfilerActivity, profile
from torch.profiler._memory_profiler import Action
from transformers import AutoModelForCausalLM, Glm4Config, LlamaConfig, Qwen2Config, Qwen3Config, Qwen3MoeConfig

from rlpipe.config import load
from rlpipe.config.hf import hf_architecture
from rlpipe.plan.memory import train_memory
from rlpipe.train.distributed import init_single_process, teardown
from rlpipe.train.spec import single_process_spec
from rlpipe.train.trainer import MegatronTrainer

SHAPE = {
    "vocab_size": 4096, "hidden_size": 256, "num_hidden_layers": 4, "intermediate_size": 704,
    "num_attention_heads": 8, "head_dim": 32, "max_position_embeddings": 512, "tie_word_embeddings": False,
}  # fmt: skip
OTHER_SHAPE = {"hidden_size": 384, "num_attention_heads": 6, "head_dim": 64, "intermediate_size": 1024}
SEQ, MICRO = 256, 4  # 4 samples of 256 tokens (128 prompt + 128 response) per micro-batch
CONFIGS = {  # name -> (HF config, TrainerSpec overrides)
    "dense MHA (Llama)": (LlamaConfig(**SHAPE, num_key_value_heads=8), {}),
    "dense GQA (Qwen2)": (Qwen2Config(**SHAPE, num_key_value_heads=2), {}),
    "MoE (Qwen3-MoE, 8 experts, top-2)": (
        Qwen3MoeConfig(**SHAPE, num_key_value_heads=2, num_experts=8, num_experts_per_tok=2, moe_intermediate_size=176),
        {},
    ),
    "dense GQA, full recompute": (
        Qwen2Config(**SHAPE, num_key_value_heads=2),
        {"recompute_granularity": "full", "recompute_method": "uniform", "recompute_num_layers": 1},
    ),
    # Not used to derive the layer inventory: another shape, QK norms, GLM4's post-norms, recompute chunks of 2.
    "QK norm (Qwen3), wider heads": (Qwen3Config(**(SHAPE | OTHER_SHAPE), num_key_value_heads=2), {}),
    "post-norms (GLM4), recompute 2 layers": (
        Glm4Config(**(SHAPE | OTHER_SHAPE), num_key_value_heads=2, pad_token_id=0),
        {"recompute_granularity": "full", "recompute_method": "uniform", "recompute_num_layers": 2},
    ),
}


def _loss(indices: list[int], log_probs: list[torch.Tensor], entropies: list[torch.Tensor]):
    loss = -torch.stack([lp.sum() for lp in log_probs]).sum() / 1000.0
    return loss, {"loss": loss.detach()}


def _peak_of(prof: profile) -> int:
    """The most bytes the profiled region had allocated at once beyond what existed before it."""
    live = peak = 0
    for _, action, _, size in prof._memory_profile().timeline:
        if action == Action.CREATE:
            live += size
        elif action == Action.DESTROY:
            live -= size
        peak = max(peak, live)
    return peak


def _plan(folder: Path, spec: dict) -> dict[str, int]:
    cfg = load([], check_paths=False).cfg.model_dump()
    hf = json.loads((folder / "config.json").read_text())
    cfg["model"] |= hf_architecture(hf) | {"untie_embeddings_and_output_weights": not hf["tie_word_embeddings"]}
    cfg["rollout"] |= {"max_prompt_len": SEQ // 2, "max_response_len": SEQ // 2, "global_batch_size": MICRO}
    cfg["perf"] |= {"micro_batch_size": MICRO, "use_dynamic_batch_size": False, "bf16": False}
    cfg["perf"] |= {k: spec.get(k) for k in ("recompute_granularity", "recompute_method", "recompute_num_layers")}
    cfg["optim"]["optimizer"] = "adam"
    topology = {"device": "cpu", "actor_gpus": 1, "data_parallel": 1, "rollout_gpus": 0, "num_engines": 1}
    (stage,) = train_memory(cfg, topology, overhead=0)
    return {"optimizer": stage.optimizer, "step": stage.activations + stage.transient}


def measure(name: str, workdir: Path) -> dict[str, object]:
    hf_config, overrides = CONFIGS[name]
    torch.manual_seed(0)
    folder = workdir / name.split()[0]
    AutoModelForCausalLM.from_config(hf_config).save_pretrained(folder)
    spec = {"optimizer": "adam", "lr": 1e-4, "micro_batch_size": MICRO, **overrides}
    trainer = MegatronTrainer(single_process_spec(folder, **spec))
    trainer.load_hf(folder)
    generator = torch.Generator().manual_seed(1)
    seqs = [torch.randint(0, SHAPE["vocab_size"], (SEQ,), generator=generator).tolist() for _ in range(MICRO)]
    starts = [SEQ // 2] * MICRO
    trainer.train_step(seqs, starts, _loss)  # Adam's state appears in the first step
    state = trainer.optimizer.optimizer.state
    optimizer = sum(t.numel() * t.element_size() for s in state.values() for t in s.values() if torch.is_tensor(t))
    if torch.cuda.is_available():  # the allocator's own peak, and the step's time
        torch.cuda.synchronize()
        before = torch.cuda.memory_allocated()
        torch.cuda.reset_peak_memory_stats()
        start = time.perf_counter()
        trainer.train_step(seqs, starts, _loss)
        torch.cuda.synchronize()
        seconds, peak = time.perf_counter() - start, torch.cuda.max_memory_allocated() - before
    else:
        activities = [ProfilerActivity.CPU]
        with profile(activities=activities, profile_memory=True, record_shapes=True, with_stack=True) as prof:
            trainer.train_step(seqs, starts, _loss)
        seconds, peak = None, _peak_of(prof)
    planned = _plan(folder, spec)
    return {
        "config": name,
        "optimizer": (optimizer, planned["optimizer"]),
        "step": (peak, planned["step"]),
        "s": seconds,
    }


def main() -> int:
    argparse.ArgumentParser(description=__doc__.split("\n")[0]).parse_args()
    torch.set_num_threads(2)
    init_single_process()
    rows = []
    try:
        with tempfile.TemporaryDirectory() as tmp:
            rows = [measure(name, Path(tmp)) for name in CONFIGS]
    finally:
        teardown()
    print("| config | term | measured (MiB) | plan (MiB) | plan / measured | within 15 % |")
    print("|---|---|---:|---:|---:|---|")
    worst = 0.0
    for row in rows:
        for term in ("optimizer", "step"):
            measured, planned = row[term]  # type: ignore[misc]
            ratio = planned / measured
            worst = max(worst, abs(ratio - 1))
            ok = "yes" if abs(ratio - 1) <= 0.15 else "**no**"
            print(f"| {row['config']} | {term} | {measured / 2**20:.1f} | {planned / 2**20:.1f} | {ratio:.2f} | {ok} |")
        if row["s"] is not None:
            print(f"| {row['config']} | step time | {row['s']:.3f} s | | | |")
    print(f"\nworst deviation: {worst:.0%}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
