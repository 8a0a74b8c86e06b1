"""rlpipe vs TRL's GRPOTrainer on the same tiny GRPO job, interleaved iteration by iteration in one process.

    python bench/vs_trl.py [--iterations 100] [--skip 5] [--profile]

What is compared (the default demo job, `conf/experiment/tiny-cpu.yaml`):
  1. rlpipe's own supervised warm-up runs once (Megatron trainer, 40 steps); the warmed-up weights go through
     the trainer -> engine weight sync and are saved as an HF folder, so both RL runs start from the same weights
     and each builds a fresh Adam state.
  2. GRPO for `--iterations` steps on each side: 8 prompts x 8 samples, one optimizer step per rollout, Adam
     lr 5e-4 (constant, no weight decay, grad-norm clip 1.0), clip 0.2 / 0.28, no KL, temperature 1, at most 8
     new tokens, reward = `rlpipe.reward.exact_match.exact_match_score` on token ids (the same function on both
     sides). Both sides see the same prompts in the same order: TRL gets rlpipe's shuffled prompt stream as its
     dataset with `shuffle_dataset=False`, and its chat-templated prompt ids are checked equal to rlpipe's.
     rlpipe: its own components in-process (Loop's rollout function, `rl_update` on the MegatronTrainer, the
     HFEngine, the weight sync, the metrics record), one iteration = the body of `Loop.train`.
     TRL: `GRPOTrainer.train()` with `loss_type="grpo"` (per-sequence token mean, then mean over the 64
     sequences: rlpipe's per-sample reduction exactly, as the whole step is one micro-batch in both), and no
     logging / reporting / saving / eval.
  3. Interleaving: a TRL callback runs one rlpipe iteration at the end of every TRL step, so both share the
     machine's load at the same moments. TRL's time for step k is end-of-callback(k-1) -> end-of-step(k), so
     it includes TRL's dataloader and its own bookkeeping.

Known differences that remain (none changes the algorithm): rlpipe recomputes old log-probs with a forward
pass, TRL reuses the detached current ones (identical when generation and training weights agree, one
iteration per rollout); GRPO std epsilon 1e-6 (rlpipe) vs 1e-4 (TRL); different sampling RNG streams.

Prints seconds per iteration (median and mean after `--skip` iterations), the ratio rlpipe / TRL, and mean
sampled reward per 10 iterations; writes `outputs/bench_vs_trl/{reward_curves.png,results.json}`.
`--profile` adds cProfile of both sides (timings from such a run are inflated; do not report them).
"""

from __future__ import annotations

import argparse
import cProfile
import json
import os
import pstats
import statistics
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))  # run as a script from anywhere: rlpipe is not an installed package
OUT = Path("outputs/bench_vs_trl")  # relative to the repo root, like every rlpipe output_dir


def parse_args() -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--iterations", type=int, default=100, help="GRPO iterations on each side")
    p.add_argument("--skip", type=int, default=5, help="first iterations left out of the timing statistics")
    p.add_argument("--profile", action="store_true", help="cProfile both sides; print the top functions")
    args = p.parse_args()
    if args.iterations <= args.skip:
        p.error("--iterations must exceed --skip")
    return args


# --------------------------------------------------------------------------------------------- rlpipe side
def resolved_run(iterations: int):
    """The default demo job, with checkpoints, evaluation and the progress bar off (TRL does none either)."""
    from rlpipe.config import load

    return load([
        f"rollout.num_rollout={iterations}", f"output_dir={OUT}", "run_name=rlpipe",
        "ckpt.load=null", "ckpt.save=null", "eval.interval=null", "eval.before_train=false", "log.progress=false",
    ])  # fmt: skip


def warm_up_and_export(run, warm_dir: Path) -> None:
    """rlpipe's supervised warm-up (Loop.warmup on fresh roles), then the weights saved as an HF folder.

    Export goes through the same trainer -> engine weight sync the RL loop uses, so the folder holds exactly the
    weights rlpipe's engine would sample from.
    """
    import torch
    from safetensors.torch import load_file

    from rlpipe.loop import Loop
    from rlpipe.metrics import MetricsLogger
    from rlpipe.rollout.hf_engine import HFEngine
    from rlpipe.rollout.role import RolloutRole
    from rlpipe.train.role import TrainerRole

    cfg = run.cfg
    trainer = TrainerRole(cfg)
    engine = HFEngine(cfg.ckpt.hf_checkpoint, seed=cfg.rollout.seed)
    run_dir = OUT / "warmup"
    run_dir.mkdir(parents=True, exist_ok=True)
    loop = Loop(run, trainer, RolloutRole(cfg, engine), run_dir)
    loop.resume()  # no ckpt.load: the tiny HF checkpoint's fresh weights
    loop.metrics = MetricsLogger(run_dir, cfg.log, cfg.run_name, resume_from=0)
    loop.warmup()
    loop.sync_weights()
    loop.metrics.close()
    engine.model.save_pretrained(warm_dir)
    engine.tokenizer.save_pretrained(warm_dir, save_jinja_files=False)
    saved = load_file(warm_dir / "model.safetensors")
    for name, tensor in trainer.hf_named_tensors():  # the folder must hold the trainer's weights, bit for bit
        assert torch.equal(saved[name], tensor), name


@dataclass
class RlpipeSide:
    """rlpipe's RL loop, one iteration per call, starting from the warmed-up folder with a fresh optimizer."""

    loop: object  # rlpipe.loop.Loop
    times: list[float] = field(default_factory=list)  # wall seconds per iteration
    parts: list[tuple[float, float, float]] = field(default_factory=list)  # (rollout, train, sync) seconds
    rewards: list[float] = field(default_factory=list)  # mean sampled reward per iteration

    @classmethod
    def build(cls, run, warm_dir: Path) -> RlpipeSide:
        from rlpipe.loop import Loop
        from rlpipe.metrics import MetricsLogger
        from rlpipe.rollout.hf_engine import HFEngine
        from rlpipe.rollout.role import RolloutRole
        from rlpipe.train.role import TrainerRole

        cfg = run.cfg
        trainer = TrainerRole(cfg)
        trainer.trainer.load_hf(warm_dir)
        engine = HFEngine(warm_dir, seed=cfg.rollout.seed)
        run_dir = OUT / "rlpipe"
        run_dir.mkdir(parents=True, exist_ok=True)
        loop = Loop(run, trainer, RolloutRole(cfg, engine), run_dir)
        loop.metrics = MetricsLogger(run_dir, cfg.log, cfg.run_name, resume_from=0)
        loop.sync_weights()  # the engine already holds these weights; Loop.train syncs here too
        return cls(loop)

    def iteration(self, rollout_id: int) -> None:
        """One rollout -> rl_update -> weight sync -> metrics record: the body of `Loop.train`."""
        loop = self.loop
        t0 = time.perf_counter()
        samples = loop.rollout.generate(rollout_id)
        if loop.offload:
            loop.rollout.offload()
        t1 = time.perf_counter()
        metrics = loop.trainer.rl_update(samples)
        t2 = time.perf_counter()
        loop.sync_weights()
        t3 = time.perf_counter()
        metrics |= {"time_rollout": t1 - t0, "time_train": t2 - t1, "time_sync": t3 - t2}
        loop.metrics.log("train", rollout_id, metrics)
        self.times.append(time.perf_counter() - t0)
        self.parts.append((t1 - t0, t2 - t1, t3 - t2))
        self.rewards.append(metrics["reward_mean"])


# ------------------------------------------------------------------------------------------------ TRL side
@dataclass
class TrlRecord:
    """What the TRL side measured: filled by the interleaving callback and by the reward function."""

    starts: list[float] = field(default_factory=list)  # perf_counter at the start of each step
    times: list[float] = field(default_factory=list)  # wall seconds per step
    rewards: list[float] = field(default_factory=list)  # mean sampled reward per step
    scored: list[float] = field(default_factory=list)  # perf_counter when the step's rewards were computed

    def rollout_times(self) -> list[float]:
        """Step start -> rewards computed: TRL's rollout phase (data, templating, generation, scoring)."""
        return [b - a for a, b in zip(self.starts, self.scored, strict=True)]


def prompt_stream(run, engine, n_prompts: int) -> list:
    """The first `n_prompts` prompts rlpipe's RL loop will draw, as Samples: a second RolloutRole builds the
    same dataset (file, template, shuffle, seed) and is only read from."""
    from rlpipe.rollout.role import RolloutRole

    return RolloutRole(run.cfg, engine).dataset.next_batch(n_prompts)


def check_trl_prompt_ids(tokenizer, prompts: list) -> None:
    """TRL templates conversational prompts itself (apply_chat_template, tokenize=True): same ids as rlpipe's?"""
    ids = tokenizer.apply_chat_template(
        conversation=[s.prompt for s in prompts], add_generation_prompt=True, tokenize=True, return_dict=True
    )["input_ids"]
    mismatched = [i for i, (a, s) in enumerate(zip(ids, prompts, strict=True)) if list(a) != s.prompt_tokens]
    assert not mismatched, f"TRL would see different prompt ids for prompts {mismatched[:5]}"


def exact_match_reward(tokenizer, record: TrlRecord) -> Callable[..., list[float]]:
    """A TRL reward function over completion ids with rlpipe's exact-match rule; logs each batch's mean and
    when scoring finished (TRL has then generated and scored: the end of its rollout phase)."""
    from rlpipe.data.tokenizer import special_token_ids
    from rlpipe.reward.exact_match import exact_match_score

    eos, specials = tokenizer.eos_token_id, special_token_ids(tokenizer)

    def exact_match(prompts, completions, completion_ids, label, **_kwargs) -> list[float]:
        scores = [
            exact_match_score(ids, lab, eos, specials, tokenizer.decode)
            for ids, lab in zip(completion_ids, label, strict=True)
        ]
        record.rewards.append(sum(scores) / len(scores))
        record.scored.append(time.perf_counter())
        return scores

    return exact_match


def trl_trainer(run, warm_dir: Path, prompts: list, iterations: int, record: TrlRecord, callback):
    """GRPOTrainer with the rlpipe job's knobs; logging, reporting, saving and evaluation off."""
    from datasets import Dataset
    from transformers import AutoModelForCausalLM
    from trl import GRPOConfig, GRPOTrainer

    from rlpipe.data.tokenizer import load_tokenizer

    cfg = run.cfg
    ro, algo, op = cfg.rollout, cfg.algo, cfg.optim
    tokenizer = load_tokenizer(warm_dir)
    check_trl_prompt_ids(tokenizer, prompts)
    args = GRPOConfig(
        output_dir=str(OUT / "trl"),
        per_device_train_batch_size=ro.batch_size * ro.n_samples,  # 64 completions per step, one micro-batch
        gradient_accumulation_steps=1,
        num_generations=ro.n_samples,
        num_iterations=1,
        max_steps=iterations,
        max_completion_length=ro.max_response_len,
        temperature=ro.temperature,
        top_p=ro.top_p,
        top_k=0,  # TRL's "no top-k" (rlpipe's -1)
        beta=0.0,
        epsilon=algo.eps_clip,
        epsilon_high=algo.eps_clip_high,
        loss_type="grpo",
        scale_rewards="group",
        learning_rate=op.lr,
        lr_scheduler_type="constant",
        warmup_steps=0,
        weight_decay=op.weight_decay,
        adam_beta1=op.adam_beta1,
        adam_beta2=op.adam_beta2,
        adam_epsilon=op.adam_eps,
        max_grad_norm=op.clip_grad,
        seed=cfg.seed,
        shuffle_dataset=False,  # the dataset already is rlpipe's shuffled stream
        use_cpu=True,
        bf16=False,  # TRL defaults to bf16 where supported; rlpipe's job trains in fp32
        activation_checkpointing=False,  # TRL defaults to recomputing activations; rlpipe's job does not
        dataloader_num_workers=0,
        report_to="none",
        logging_steps=iterations + 1,  # never: rlpipe logs a jsonl line, TRL would print a dict every step
        disable_tqdm=True,
        save_strategy="no",
        eval_strategy="no",
        log_completions=False,
    )
    dataset = Dataset.from_list([{"prompt": s.prompt, "label": s.label} for s in prompts])
    model = AutoModelForCausalLM.from_pretrained(str(warm_dir))
    trainer = GRPOTrainer(
        model=model,
        reward_funcs=exact_match_reward(tokenizer, record),
        args=args,
        train_dataset=dataset,
        processing_class=tokenizer,
        callbacks=[callback],
    )
    from accelerate.utils import DistributedType

    # The Megatron trainer's gloo group of one must not make accelerate wrap TRL's model in DDP.
    assert trainer.accelerator.distributed_type == DistributedType.NO, trainer.accelerator.distributed_type
    return trainer


def interleaving_callback(rlpipe: RlpipeSide, record: TrlRecord, profiles: dict[str, cProfile.Profile] | None):
    """A TrainerCallback: after each TRL step, time it, then run one rlpipe iteration outside TRL's clock.

    TRL's step k runs from the end of this callback at step k-1 (train start for k=0) to on_step_end(k), so its
    dataloader and bookkeeping between steps count for TRL and the rlpipe iteration does not.
    """
    from transformers import TrainerCallback

    class Interleave(TrainerCallback):
        def on_train_begin(self, args, state, control, **kwargs):
            record.starts.append(time.perf_counter())
            _toggle(profiles, "trl", True)

        def on_step_end(self, args, state, control, **kwargs):
            _toggle(profiles, "trl", False)
            record.times.append(time.perf_counter() - record.starts[-1])
            _toggle(profiles, "rlpipe", True)
            rlpipe.iteration(state.global_step - 1)
            _toggle(profiles, "rlpipe", False)
            if state.global_step < state.max_steps:
                record.starts.append(time.perf_counter())
            _toggle(profiles, "trl", True)

        def on_train_end(self, args, state, control, **kwargs):
            _toggle(profiles, "trl", False)

    return Interleave()


def _toggle(profiles: dict[str, cProfile.Profile] | None, side: str, on: bool) -> None:
    if profiles is not None:
        profiles[side].enable() if on else profiles[side].disable()


# -------------------------------------------------------------------------------------------------- report
def time_stats(times: list[float], skip: int) -> dict[str, float]:
    kept = times[skip:]
    return {"median": statistics.median(kept), "mean": statistics.fmean(kept), "n": len(kept)}


def per_window(values: list[float], width: int = 10) -> list[float]:
    """Means over consecutive windows of `width` iterations (the last one may be shorter)."""
    return [statistics.fmean(values[i : i + width]) for i in range(0, len(values), width)]


def plot(rl_rewards: list[float], trl_rewards: list[float], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")  # files only, no display
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4))
    for name, rewards in (("rlpipe", rl_rewards), ("TRL GRPOTrainer", trl_rewards)):
        (raw,) = ax.plot(range(len(rewards)), rewards, alpha=0.3)
        windows = per_window(rewards)
        centers = [10 * i + 4.5 for i in range(len(windows))]
        ax.plot(centers, windows, marker="o", color=raw.get_color(), label=f"{name} (mean per 10 iterations)")
    ax.set(xlabel="GRPO iteration", ylabel="mean sampled reward", title="reverse-3-digits, 8 prompts x 8 samples")
    ax.set_ylim(0, 1)
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def report(rl: RlpipeSide, trl: TrlRecord, skip: int) -> dict:
    r, t = time_stats(rl.times, skip), time_stats(trl.times, skip)
    parts = {k: statistics.median(p[i] for p in rl.parts[skip:]) for i, k in enumerate(("rollout", "train", "sync"))}
    trl_rollout = statistics.median(trl.rollout_times()[skip:])
    trl_parts = {"rollout": trl_rollout, "train": t["median"] - trl_rollout}
    print(f"\nseconds per iteration over iterations {skip}..{len(rl.times) - 1} ({r['n']} each, interleaved)")
    print(f"{'':8} {'median':>8} {'mean':>8}")
    print(f"{'rlpipe':8} {r['median']:8.4f} {r['mean']:8.4f}")
    print(f"{'TRL':8} {t['median']:8.4f} {t['mean']:8.4f}")
    print(f"{'ratio':8} {r['median'] / t['median']:8.3f} {r['mean'] / t['mean']:8.3f}   (rlpipe / TRL; goal <= 0.5)")
    print("rlpipe median parts: " + ", ".join(f"{k} {v:.4f}s" for k, v in parts.items()))
    print("TRL median parts:    " + ", ".join(f"{k} {v:.4f}s" for k, v in trl_parts.items()) + "  (train = the rest)")
    print("\nmean sampled reward per 10 iterations")
    print(f"{'iters':>9} {'rlpipe':>7} {'TRL':>7}")
    for i, (a, b) in enumerate(zip(per_window(rl.rewards), per_window(trl.rewards), strict=True)):
        print(f"{f'{10 * i}-{min(10 * i + 9, len(rl.rewards) - 1)}':>9} {a:7.3f} {b:7.3f}")
    return {
        "rlpipe_s_per_iter": r,
        "trl_s_per_iter": t,
        "ratio_median": r["median"] / t["median"],
        "ratio_mean": r["mean"] / t["mean"],
        "rlpipe_parts_median_s": parts,
        "trl_parts_median_s": trl_parts,
        "rlpipe_rewards": rl.rewards,
        "trl_rewards": trl.rewards,
    }


def print_profile(profile: cProfile.Profile, side: str) -> None:
    for order, top in (("cumulative", 30), ("tottime", 20)):
        print(f"\n===== cProfile: {side}, top {top} by {order} time =====")
        pstats.Stats(profile).sort_stats(order).print_stats(top)


def main() -> int:
    args = parse_args()
    os.chdir(REPO)  # the demo's paths (.cache/rlpipe, outputs/) are relative to the repo root
    run = resolved_run(args.iterations)
    from rlpipe.run import _quiet_third_party

    _quiet_third_party()
    import torch

    from rlpipe.data.demo import build_demo_assets
    from rlpipe.train import distributed

    torch.set_num_threads(1)  # what rlpipe's run_job does on CPU; applies to TRL in this process as well
    build_demo_assets(run.cfg)
    warm_dir = OUT / "warm_hf"
    distributed.init_single_process()
    try:
        t0 = time.perf_counter()
        warm_up_and_export(run, warm_dir)
        print(f"warm-up ({run.cfg.warmup.steps} sft steps, rlpipe) and export: {time.perf_counter() - t0:.1f}s")
        rlpipe = RlpipeSide.build(run, warm_dir)
        prompts = prompt_stream(run, rlpipe.loop.rollout.engine, args.iterations * run.cfg.rollout.batch_size)
        profiles = {"rlpipe": cProfile.Profile(), "trl": cProfile.Profile()} if args.profile else None
        trl = TrlRecord()
        trainer = trl_trainer(
            run, warm_dir, prompts, args.iterations, trl, interleaving_callback(rlpipe, trl, profiles)
        )
        t0 = time.perf_counter()
        trainer.train()
        print(f"{args.iterations} interleaved iterations per side: {time.perf_counter() - t0:.1f}s")
        rlpipe.loop.metrics.close()
    finally:
        distributed.teardown()
    assert len(trl.times) == len(trl.scored) == len(trl.starts) == len(rlpipe.times) == args.iterations
    results = report(rlpipe, trl, args.skip)
    plot(rlpipe.rewards, trl.rewards, OUT / "reward_curves.png")
    (OUT / "results.json").write_text(json.dumps(results, indent=2))
    print(f"\nwrote {OUT / 'reward_curves.png'} and {OUT / 'results.json'}")
    if profiles is not None:
        for side, profile in profiles.items():
            print_profile(profile, side)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
