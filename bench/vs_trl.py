"""rlpipe vs TRL's GRPOTrainer on the same tiny GRPO job, taking turns iteration by iteration in one process.

    python bench/vs_trl.py [--iterations 100] [--skip 5] [--profile] [--workdir DIR] [rlpipe override ...]

What is compared (the default demo job, `conf/experiment/tiny-cpu.yaml`):
  1. rlpipe's own supervised warm-up runs once (`Loop.warmup`, Megatron trainer, 40 steps); the weights go
     through the trainer -> engine weight sync and are saved as an HF folder. Both RL runs start from that
     folder, each with a fresh Adam state.
  2. GRPO for `--iterations` steps on each side: 8 prompts x 8 samples, one optimizer step per rollout, Adam
     lr 5e-4 (constant, no weight decay, grad-norm clip 1.0), clip 0.2 / 0.28, no KL, temperature 1, at most 8
     new tokens, reward = `rlpipe.reward.exact_match.exact_match_score` on token ids (the same function on both
     sides). Both see the same prompts in the same order: TRL gets rlpipe's shuffled prompt stream as its
     dataset with `shuffle_dataset=False`, and its chat-templated prompt ids are checked equal to rlpipe's.
     rlpipe: the default job as `python launch.py ckpt.hf_checkpoint=<warm folder> warmup=null` would run it,
     i.e. `Loop.train()` over a TrainerRole (MegatronTrainer) and a RolloutRole (HFEngine), in-process.
     TRL: `GRPOTrainer.train()` with `loss_type="grpo"` (per-sequence token mean, then the mean over the 64
     sequences: rlpipe's per-sample reduction exactly, as each step is one micro-batch on both sides), fp32,
     no activation checkpointing (TRL's defaults are bf16 and checkpointing; rlpipe's job uses neither), and no
     logging / reporting / saving / eval.
  3. Turns: rlpipe's loop runs in a second thread and the two sides strictly alternate (TRL step k, rlpipe
     iteration k, TRL step k+1, ...), never overlapping, so both meet the shared machine's load at the same
     moments. TRL step k is timed from the end of rlpipe's iteration k-1 (train start for k=0) to TRL's
     on_step_end(k), so TRL's dataloader and bookkeeping count for TRL; rlpipe iteration k from the moment
     `Loop.next_rollout(k)` gets its turn to the end of that iteration's weight sync (what follows, a metrics
     line and the progress bar, is off the clock).

Known differences that remain (none changes the algorithm): rlpipe recomputes old log-probs with a forward
pass, TRL reuses the detached current ones (identical here: generation and training weights agree and there is
one optimizer step per rollout); GRPO std epsilon 1e-6 (rlpipe) vs 1e-4 (TRL); different sampling RNG streams.

Prints seconds per iteration (median and mean after `--skip` iterations), the ratio rlpipe / TRL, each side's
rollout / train split, and mean sampled reward per 10 iterations; writes
`outputs/bench_vs_trl/{reward_curves.png,results.json}` under `--workdir` (default: the repo root, where the demo's
`.cache/rlpipe` also lands; the smoke test points it at a tmp dir). `--profile` adds cProfile of both sides
(timings from such a run are inflated by the profiler; do not report them).
"""

from __future__ import annotations

import argparse
import cProfile
import json
import os
import pstats
import statistics
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))  # run as a script from anywhere: rlpipe is not an installed package
OUT = Path("outputs/bench_vs_trl")  # relative to --workdir (the repo root by default), like every rlpipe output_dir
WARM_DIR = OUT / "warm_hf"


def parse_args() -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--iterations", type=int, default=100, help="GRPO iterations on each side")
    p.add_argument("--skip", type=int, default=5, help="first iterations left out of the timing statistics")
    p.add_argument("--profile", action="store_true", help="cProfile both sides; print the top functions")
    p.add_argument(
        "--workdir", type=Path, default=REPO, help="folder the outputs and the demo cache go under (default: repo root)"
    )
    p.add_argument(
        "overrides", nargs="*", help="config overrides for the RL run, e.g. rollout.mode=async; TRL reads the same"
    )
    args = p.parse_args()
    if args.iterations <= args.skip:
        p.error("--iterations must exceed --skip")
    return args


def resolved_run(iterations: int, *overrides: str):
    """The default demo job with checkpoints, periodic eval and the progress bar off (TRL does none either)."""
    from rlpipe.config import load

    return load([
        f"rollout.num_rollout={iterations}", f"output_dir={OUT}", "ckpt.load=null", "ckpt.save=null",
        "eval.interval=null", "eval.before_train=false", "log.progress=false", *overrides,
    ])  # fmt: skip


# ------------------------------------------------------------------------------------------------- turns
class Turns:
    """Two threads that strictly alternate: exactly one side runs at a time.

    `switch(me, other)` hands the turn over and blocks until it comes back. Once the rlpipe thread has ended
    (`finish`), waits return at once and raise if the rlpipe side failed (`check`).
    """

    def __init__(self) -> None:
        self._go = {"trl": threading.Event(), "rlpipe": threading.Event()}
        self.finished = False
        self.error: BaseException | None = None

    def wait(self, me: str) -> None:
        if not self.finished:
            self._go[me].wait()
            self._go[me].clear()
        self.check()

    def check(self) -> None:
        if self.error is not None:
            raise RuntimeError("the rlpipe side failed; its traceback is above") from self.error

    def switch(self, me: str, other: str) -> None:
        if self.finished:
            return
        self._go[other].set()
        self.wait(me)

    def finish(self, error: BaseException | None) -> None:
        self.error, self.finished = error, True  # both before the events: a woken waiter must see them
        for event in self._go.values():
            event.set()


# --------------------------------------------------------------------------------------------- rlpipe side
def warm_up_and_export(run, warm_dir: Path) -> None:
    """rlpipe's supervised warm-up (Loop.warmup on fresh roles), then the weights saved as an HF folder.

    Export goes through the same trainer -> engine weight sync the RL loop uses, so the folder holds exactly the
    weights rlpipe's engine would sample from (checked against the trainer's, bit for bit).
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
    engine = HFEngine(cfg.ckpt.hf_checkpoint, seed=cfg.rollout.seed, device=run.topology.device)
    run_dir = OUT / cfg.run_name
    run_dir.mkdir(parents=True, exist_ok=True)
    loop = Loop(run, trainer, RolloutRole(cfg, engine), run_dir)
    loop.resume()  # no ckpt.load: the tiny HF checkpoint's fresh weights
    loop.metrics = MetricsLogger(run_dir, cfg.log, cfg.run_name, resume_from=0)  # what Loop.train sets up
    loop.warmup()
    loop.sync_weights()
    loop.metrics.close()
    engine.model.save_pretrained(warm_dir)
    engine.tokenizer.save_pretrained(warm_dir, save_jinja_files=False)
    saved = load_file(warm_dir / "model.safetensors")
    for name, tensor in trainer.hf_named_tensors():
        assert torch.equal(saved[name], tensor), name


def rlpipe_loop(run, turns: Turns, profile: cProfile.Profile | None):
    """rlpipe's Loop, built as `run_job` builds it, that takes turns with TRL and times its own iterations."""
    from rlpipe.loop import Loop
    from rlpipe.rollout.hf_engine import HFEngine
    from rlpipe.rollout.role import RolloutRole
    from rlpipe.train.role import TrainerRole

    class TurnTakingLoop(Loop):
        """Loop.train unchanged; each iteration first waits for its turn, and is timed up to its weight sync."""

        def __init__(self, *args, **kwargs) -> None:
            super().__init__(*args, **kwargs)
            self.starts: list[float] = []  # perf_counter when iteration k got its turn
            self.ends: list[float] = []  # perf_counter when iteration k's weight sync finished

        def next_rollout(self, rollout_id: int, total: int):
            turns.switch("rlpipe", "trl")  # TRL step `rollout_id` runs now
            self.starts.append(time.perf_counter())
            if profile is not None:
                profile.enable()
            return super().next_rollout(rollout_id, total)

        def sync_weights(self) -> None:
            super().sync_weights()
            if len(self.ends) < len(self.starts):  # the sync that closes an iteration, not the initial one
                if profile is not None:
                    profile.disable()
                self.ends.append(time.perf_counter())

    cfg = run.cfg
    engine = HFEngine(cfg.ckpt.hf_checkpoint, seed=cfg.rollout.seed, device=run.topology.device)
    run_dir = OUT / cfg.run_name
    run_dir.mkdir(parents=True, exist_ok=True)
    return TurnTakingLoop(run, TrainerRole(cfg), RolloutRole(cfg, engine), run_dir)


@dataclass
class RlpipeRecord:
    """rlpipe's per-iteration measurements: the loop's own clock plus its metrics.jsonl lines."""

    times: list[float]  # wall seconds per iteration
    rewards: list[float]  # mean sampled reward per iteration
    train: list[float]  # the loop's time_train (rl_update) per iteration
    sync: list[float]  # the loop's time_sync per iteration

    @classmethod
    def of(cls, loop) -> RlpipeRecord:
        from rlpipe.metrics import MetricsLogger

        lines = [r for r in MetricsLogger.read(loop.metrics.path) if r["phase"] == "train"]
        times = [b - a for a, b in zip(loop.starts, loop.ends, strict=True)]
        return cls(times, *([r[key] for r in lines] for key in ("reward_mean", "time_train", "time_sync")))

    def parts(self, skip: int) -> dict[str, float]:
        """Median seconds per phase; rollout is the rest (the loop's own time_rollout includes the turn wait)."""
        train, sync = statistics.median(self.train[skip:]), statistics.median(self.sync[skip:])
        return {"rollout": statistics.median(self.times[skip:]) - train - sync, "train": train, "sync": sync}


# ------------------------------------------------------------------------------------------------ TRL side
@dataclass
class TrlRecord:
    """TRL's per-step measurements: filled by the turn-taking callback and by the reward function."""

    starts: list[float] = field(default_factory=list)  # perf_counter when each step got its turn
    times: list[float] = field(default_factory=list)  # wall seconds per step
    rewards: list[float] = field(default_factory=list)  # mean sampled reward per step
    scored: list[float] = field(default_factory=list)  # perf_counter when the step's rewards were computed

    def parts(self, skip: int) -> dict[str, float]:
        """Median seconds from the step's start to its rewards (templating, generation, scoring), and the rest."""
        rollout = statistics.median([b - a for a, b in zip(self.starts, self.scored, strict=True)][skip:])
        return {"rollout": rollout, "train": statistics.median(self.times[skip:]) - rollout}


def check_trl_prompt_ids(tokenizer, prompts: list) -> None:
    """TRL templates conversational prompts itself (apply_chat_template, tokenize=True): same ids as rlpipe's?"""
    ids = tokenizer.apply_chat_template(
        conversation=[s.prompt for s in prompts], add_generation_prompt=True, tokenize=True, return_dict=True
    )["input_ids"]
    mismatched = [i for i, (a, s) in enumerate(zip(ids, prompts, strict=True)) if list(a) != s.prompt_tokens]
    assert not mismatched, f"TRL would see different prompt ids for prompts {mismatched[:5]}"


def exact_match_reward(tokenizer, record: TrlRecord) -> Callable[..., list[float]]:
    """A TRL reward function over completion ids with rlpipe's exact-match rule; records each batch's mean and
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


def turn_taking_callback(turns: Turns, record: TrlRecord, profile: cProfile.Profile | None):
    """A TrainerCallback: at the end of each TRL step, time it and hand the turn to rlpipe's iteration."""
    from transformers import TrainerCallback

    class TakeTurns(TrainerCallback):
        def on_train_begin(self, args, state, control, **kwargs):
            record.starts.append(time.perf_counter())
            if profile is not None:
                profile.enable()

        def on_step_end(self, args, state, control, **kwargs):
            if profile is not None:
                profile.disable()
            record.times.append(time.perf_counter() - record.starts[-1])
            turns.switch("trl", "rlpipe")  # rlpipe iteration `state.global_step - 1` runs now
            if state.global_step < state.max_steps:
                record.starts.append(time.perf_counter())
                if profile is not None:
                    profile.enable()

    return TakeTurns()


def trl_trainer(run, prompts: list, record: TrlRecord, callback):
    """GRPOTrainer with the rlpipe job's knobs, from the same HF folder; logging, saving and eval off."""
    from accelerate.utils import DistributedType
    from datasets import Dataset
    from transformers import AutoModelForCausalLM
    from trl import GRPOConfig, GRPOTrainer

    from rlpipe.data.tokenizer import load_tokenizer

    cfg = run.cfg
    ro, algo, op = cfg.rollout, cfg.algo, cfg.optim
    tokenizer = load_tokenizer(cfg.ckpt.hf_checkpoint)
    check_trl_prompt_ids(tokenizer, prompts)
    args = GRPOConfig(
        output_dir=str(OUT / "trl"),
        per_device_train_batch_size=ro.batch_size * ro.n_samples,  # 64 completions per step, one micro-batch
        gradient_accumulation_steps=1,
        num_generations=ro.n_samples,
        num_iterations=1,
        max_steps=ro.num_rollout,
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
        logging_steps=ro.num_rollout + 1,  # never: rlpipe writes a jsonl line, TRL would print a dict per step
        disable_tqdm=True,
        save_strategy="no",
        eval_strategy="no",
        log_completions=False,
    )
    trainer = GRPOTrainer(
        model=AutoModelForCausalLM.from_pretrained(cfg.ckpt.hf_checkpoint),
        reward_funcs=exact_match_reward(tokenizer, record),
        args=args,
        train_dataset=Dataset.from_list([{"prompt": s.prompt, "label": s.label} for s in prompts]),
        processing_class=tokenizer,
        callbacks=[callback],
    )
    # The Megatron trainer's gloo group of one must not make accelerate wrap TRL's model in DDP.
    assert trainer.accelerator.distributed_type == DistributedType.NO, trainer.accelerator.distributed_type
    return trainer


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


def report(rl: RlpipeRecord, trl: TrlRecord, skip: int) -> dict:
    r, t = time_stats(rl.times, skip), time_stats(trl.times, skip)
    print(f"\nseconds per iteration over iterations {skip}..{len(rl.times) - 1} ({r['n']} each, taking turns)")
    print(f"{'':8} {'median':>8} {'mean':>8}")
    print(f"{'rlpipe':8} {r['median']:8.4f} {r['mean']:8.4f}")
    print(f"{'TRL':8} {t['median']:8.4f} {t['mean']:8.4f}")
    print(f"{'ratio':8} {r['median'] / t['median']:8.3f} {r['mean'] / t['mean']:8.3f}   (rlpipe / TRL; goal <= 0.5)")
    print("median split, rlpipe: " + ", ".join(f"{k} {v:.4f}s" for k, v in rl.parts(skip).items()))
    print("median split, TRL:    " + ", ".join(f"{k} {v:.4f}s" for k, v in trl.parts(skip).items()))
    print("\nmean sampled reward per 10 iterations")
    print(f"{'iters':>9} {'rlpipe':>7} {'TRL':>7}")
    for i, (a, b) in enumerate(zip(per_window(rl.rewards), per_window(trl.rewards), strict=True)):
        print(f"{f'{10 * i}-{min(10 * i + 9, len(rl.rewards) - 1)}':>9} {a:7.3f} {b:7.3f}")
    return {
        "rlpipe_s_per_iter": r,
        "trl_s_per_iter": t,
        "ratio_median": r["median"] / t["median"],
        "ratio_mean": r["mean"] / t["mean"],
        "rlpipe_split_median_s": rl.parts(skip),
        "trl_split_median_s": trl.parts(skip),
        "rlpipe_rewards": rl.rewards,
        "trl_rewards": trl.rewards,
    }


def print_profile(profile: cProfile.Profile, side: str) -> None:
    for order, top in (("cumulative", 30), ("tottime", 20)):
        print(f"\n===== cProfile: {side}, top {top} by {order} time =====")
        pstats.Stats(profile).sort_stats(order).print_stats(top)


# ---------------------------------------------------------------------------------------------------- main
def main() -> int:
    args = parse_args()
    os.chdir(args.workdir)  # the demo's paths (.cache/rlpipe, outputs/) are relative to the launch folder
    warm_run = resolved_run(args.iterations, "run_name=warmup")
    from rlpipe.quiet import quiet_third_party

    quiet_third_party()
    import torch

    from rlpipe.data.demo import build_demo_assets
    from rlpipe.rollout.role import RolloutRole
    from rlpipe.train import distributed

    if warm_run.topology.device == "cpu":
        torch.set_num_threads(1)  # what rlpipe's run_job does on CPU; applies to TRL in this process as well
    build_demo_assets(warm_run.cfg)
    profiles = {"rlpipe": cProfile.Profile(), "trl": cProfile.Profile()} if args.profile else None
    turns, trl = Turns(), TrlRecord()
    distributed.init_single_process()
    try:
        t0 = time.perf_counter()
        warm_up_and_export(warm_run, WARM_DIR)
        print(f"warm-up ({warm_run.cfg.warmup.steps} sft steps, rlpipe) and export: {time.perf_counter() - t0:.1f}s")
        run = resolved_run(
            args.iterations, "run_name=rlpipe", f"ckpt.hf_checkpoint={WARM_DIR}", "warmup=null", *args.overrides
        )
        # rlpipe's prompt stream, read from a second RolloutRole over the same data (it generates nothing).
        prompts = RolloutRole(run.cfg, None).dataset.next_batch(args.iterations * run.cfg.rollout.batch_size)
        loop = rlpipe_loop(run, turns, profiles and profiles["rlpipe"])
        trainer = trl_trainer(run, prompts, trl, turn_taking_callback(turns, trl, profiles and profiles["trl"]))

        def rlpipe_thread() -> None:
            error = None
            try:
                loop.train()
            except BaseException as exc:  # handed to the TRL thread, which re-raises it
                error = exc
                raise
            finally:
                turns.finish(error)

        thread = threading.Thread(target=rlpipe_thread, name="rlpipe-loop", daemon=True)
        t0 = time.perf_counter()
        thread.start()  # rlpipe sets up (resume, first sync), then hands the first turn to TRL
        turns.wait("trl")
        trainer.train()
        thread.join()
        turns.check()
        print(f"{args.iterations} iterations per side, taking turns: {time.perf_counter() - t0:.1f}s")
    finally:
        distributed.teardown()
    rl = RlpipeRecord.of(loop)
    assert len(trl.times) == len(trl.scored) == len(trl.starts) == len(rl.times) == len(rl.rewards) == args.iterations
    results = report(rl, trl, args.skip)
    plot(rl.rewards, trl.rewards, OUT / "reward_curves.png")
    (OUT / "results.json").write_text(json.dumps(results, indent=2))
    print(f"\nwrote {OUT / 'reward_curves.png'} and {OUT / 'results.json'}")
    if profiles is not None:
        for side, profile in profiles.items():
            print_profile(profile, side)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
