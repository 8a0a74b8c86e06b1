"""The training loop, readable top to bottom: warm-up, then for each rollout generate -> train -> sync.

    resume       the trainer restores its checkpoint (or loads fresh weights); the rollout side its data cursor
                 and partial-rollout buffer
    warmup       optional supervised steps on the prompt data's labels (same trainer, sft loss)
    per rollout  next rollout -> trainer.rl_update (num_steps_per_rollout optimizer steps)
                 -> one weight sync into the engine -> eval / checkpoint on their intervals -> metrics
    summary      reward first vs last rollouts, eval before vs after, metrics.jsonl and the reward PNG

Modes (each a config switch on this same loop):
    rollout.mode=sync    generate rollout k, then train on it: every sample is on-policy (staleness 0).
    rollout.mode=async   Miles' train_async: while the trainer trains on rollout k, a background thread
                         generates rollout k+1 with the weights of the last sync. The sync waits for that
                         generation first, so weights never change under a decode; rollout k+1 is therefore
                         one policy version behind when trained on. `rollout.max_staleness` bounds that lag for
                         every trained sample (`weight_version`); a rollout function that returns older samples
                         stops the run with an error rather than train on them silently.
    debug.rollout_only   generate, score and log; no trainer call (the engine keeps ckpt.hf_checkpoint).
    debug.train_only     train on saved rollouts (the rollout side reads them); no engine call, no eval.

The SFT job (algo.loss_type=sft_loss) is this loop too: each rollout is the next batch of conversations
(rlpipe.rollout.sft), trained with the supervised loss on the LR schedule. The engine, when there is one, serves only
generation-based eval: it gets the weights right before an evaluation, not after every rollout, and is offloaded
otherwise under colocate. Every evaluation also reports the held-out loss of the eval conversations (trainer side).

`trainer` and `rollout` are a `TrainerRole` and a `RolloutRole` in-process, or Ray groups of them that
answer the same calls (rlpipe.cluster). Under colocate the two time-slice the same devices: the rollout
side is offloaded while the trainer trains, and brought back before the weight sync.
"""

from __future__ import annotations

import random
import signal
import time
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from rlpipe.config import Resolved
from rlpipe.metrics import MetricsLogger
from rlpipe.rollout.role import Rollout, RolloutRole
from rlpipe.stop import GracefulStop, StopRequested

if TYPE_CHECKING:  # the Ray driver runs the loop without importing the trainer (Megatron) itself
    from rlpipe.train.role import TrainerRole


@dataclass
class Summary:
    """What the run achieved, for the end-of-run report and for tests."""

    first_rollout: int
    last_rollout: int
    reward_first: float  # mean sampled reward over the first (up to) 10 rollouts of this invocation
    reward_last: float  # ... and over the last 10
    eval_before: dict[str, float] = field(default_factory=dict)
    eval_after: dict[str, float] = field(default_factory=dict)
    # the same first/last means of the per-rollout numbers in TRACKED_KEYS the run has (multi-turn, SFT)
    tracked: dict[str, tuple[float, float]] = field(default_factory=dict)
    sft: bool = False  # the SFT job: its reward is not a number to report


# What the end-of-run report shows besides the reward: multi-turn rollouts' episode numbers
# (rlpipe.rollout.multi_turn.episode_metrics) and the SFT job's loss.
SAMPLED_EPISODE_KEYS = ("env/tool_success_rate", "env/turns_mean")
TRACKED_KEYS = ("sft_loss", *SAMPLED_EPISODE_KEYS)


class StalenessError(RuntimeError):
    """A rollout holds samples more policy versions old than rollout.max_staleness allows."""


class NonFiniteTraining(RuntimeError):
    """More optimizer steps had a NaN/inf loss or gradient than optim.max_nonfinite_steps allows."""


class Loop:
    """One run of the RL loop (sync or async, or a debug half of it) over a trainer and a rollout side."""

    def __init__(self, run: Resolved, trainer: TrainerRole, rollout: RolloutRole, run_dir: Path) -> None:
        self.run, self.cfg = run, run.cfg
        self.trainer, self.rollout = trainer, rollout
        self.run_dir = run_dir
        # Colocated: the engine's memory is released while the trainer trains, the trainer's while it generates.
        self.offload_rollout = run.cfg.cluster.offload_rollout
        self.offload_train = run.cfg.cluster.offload_train
        self.trains = not run.cfg.debug.rollout_only
        self.generates = not run.cfg.debug.train_only  # an engine is there to generate, sync and evaluate
        self.sft = run.cfg.sft_job  # the engine only evaluates; weights go to it on demand
        self.engine_current = False  # SFT: whether the engine holds the trainer's current weights
        self._eval_conversations: dict[str, Any] | None = None
        self.version = 0  # engine weight version that holds the trainer's current weights (after each sync)
        # Async: one worker generates the next rollout; `ahead` is it in flight, `cursor` the rollout side's
        # state where that rollout began (what a checkpoint taken now must hold to redo it on resume).
        self.pool = (
            ThreadPoolExecutor(1, thread_name_prefix="rlpipe-async") if run.cfg.rollout.mode == "async" else None
        )
        self.ahead: Future[Rollout] | None = None
        self.stop = GracefulStop()  # watches for SIGINT/SIGTERM while train() runs
        self.cursor: dict[str, Any] | None = None
        self.nonfinite_steps = 0  # optimizer steps skipped for a NaN/inf loss or gradient, this process's run

    def train(self) -> Summary:
        """The whole run; a first SIGINT/SIGTERM ends it at the next safe point with a checkpoint
        (`StopRequested`), a second one at once (KeyboardInterrupt)."""
        try:
            with self.stop:
                return self._train()
        finally:
            if self.pool is not None:
                self.pool.shutdown(cancel_futures=True)

    def _train(self) -> Summary:
        cfg = self.cfg
        total = cfg.rollout.num_rollout
        assert total is not None  # resolved
        start = self.resume() if self.trains else 0
        if start >= total:
            return Summary(start, total, float("nan"), float("nan"))
        self.metrics = MetricsLogger(self.run_dir, cfg.log, cfg.run_name, resume_from=start)
        if start == 0 and cfg.warmup is not None and self.trains:
            self.warmup()
        if self.trains and self.generates and not self.sft:
            self.sync_weights()
            if self.offload_train:
                self.trainer.offload()
        elif self.sft and self.generates and self.offload_rollout:
            self.rollout.offload()  # the trainer has the devices until an evaluation needs the engine
        eval_before = self.evaluate(start) if (start == 0 and cfg.eval.before_train) else {}
        rewards: list[float] = []
        tracked: dict[str, list[float]] = {}
        bar = _progress(range(start, total), start, total, cfg.log.progress)
        last_eval = last_save = None
        for rollout_id in bar:
            metrics = self.iteration(rollout_id, total)
            self.metrics.log("train", rollout_id, metrics)
            rewards.append(metrics["reward_mean"])
            for key in TRACKED_KEYS:
                if key in metrics:
                    tracked.setdefault(key, []).append(metrics[key])
            bar.set_postfix(_postfix(metrics), refresh=False)
            done = rollout_id + 1
            if cfg.eval.interval and done % cfg.eval.interval == 0:
                last_eval = (done, self.evaluate(done))
            if cfg.ckpt.save and self.trains and cfg.ckpt.save_interval and done % cfg.ckpt.save_interval == 0:
                self.save(done)
                last_save = done
            if self.stop.requested:
                bar.close()
                self.stop_after(done, saved=last_save == done)
        bar.close()
        if cfg.ckpt.save and self.trains and last_save != total:
            self.save(total)
        eval_after = last_eval[1] if last_eval and last_eval[0] == total else self.evaluate(total)
        self.metrics.plot()
        self.metrics.close()
        return Summary(
            start, total, _mean(rewards[:10]), _mean(rewards[-10:]), eval_before, eval_after,
            {key: (_mean(values[:10]), _mean(values[-10:])) for key, values in tracked.items()}, self.sft,
        )  # fmt: skip

    def iteration(self, rollout_id: int, total: int) -> dict[str, float]:
        """One rollout's life: generate -> (engine offloaded) -> train -> one weight sync; its metrics."""
        t0 = time.perf_counter()
        rollout = self.next_rollout(rollout_id, total)
        engine_in_loop = self.generates and not self.sft  # SFT: the engine stays out of the training rollouts
        if self.offload_rollout and engine_in_loop:
            self.rollout.offload()
        metrics = rollout.metrics | self.staleness(rollout)
        t1 = time.perf_counter()
        if self.trains:
            if self.offload_train and engine_in_loop:
                self.trainer.onload()
            metrics |= self.trainer.rl_update(rollout.samples)
            skipped = metrics.get("nonfinite_steps", 0.0) + metrics.get("critic_nonfinite_steps", 0.0)
            self.count_nonfinite(skipped, f"rollout {rollout_id}")
        t2 = time.perf_counter()
        if self.trains:
            self.engine_current = False  # trained since the last sync
        if self.trains and engine_in_loop:
            metrics["time_wait"] = self.wait_for_generation()
            self.sync_weights()  # once per rollout, however many optimizer steps ran
            if self.offload_train:  # after the sync: the weights are read from the trainer's device copy
                self.trainer.offload()
        t3 = time.perf_counter()
        return metrics | {"time_rollout": t1 - t0, "time_train": t2 - t1, "time_sync": t3 - t2}

    # ------------------------------------------------------------------------------------------ the phases
    def resume(self) -> int:
        """Next rollout id: the trainer's latest checkpoint under ckpt.load, else 0 with fresh weights."""
        start, state = self.trainer.init_weights()
        if start:
            self.rollout.load_state_dict(state)
            print(f"rlpipe: resumed from {self.cfg.ckpt.load} at rollout {start}")
        elif self.cfg.ckpt.load:
            print(f"rlpipe: no checkpoint in {self.cfg.ckpt.load}: starting fresh")
        return start

    def warmup(self) -> None:
        """Supervised steps on (prompt, label) pairs of the prompt data: RL from random weights plateaus."""
        cfg, warm = self.cfg, self.cfg.warmup
        assert warm is not None
        examples = self.rollout.sft_examples()
        rng = random.Random(cfg.seed)
        bar = _progress(range(warm.steps), 0, warm.steps, cfg.log.progress, desc="warm-up (sft)")
        for step in bar:
            chosen = [examples[i] for i in rng.sample(range(len(examples)), min(warm.batch_size, len(examples)))]
            metrics = self.trainer.sft_update(chosen, warm.lr)
            self.count_nonfinite(metrics.get("nonfinite_steps", 0.0), f"warm-up step {step}")
            self.metrics.log("warmup", step, metrics)
            bar.set_postfix(sft_loss=f"{metrics['sft_loss']:.3f}", refresh=False)
            if self.stop.requested:
                bar.close()
                raise StopRequested(
                    self.stop.signum,  # type: ignore[arg-type]
                    f"stopped during the supervised warm-up (step {step + 1} of {warm.steps}); nothing is saved "
                    "before the first rollout, so rerunning the same command starts over",
                )
        bar.close()

    def next_rollout(self, rollout_id: int, total: int) -> Rollout:
        """Sync: generate rollout `rollout_id` now. Async: take it from the background worker (generating it
        here only the first time) and start the next one, which runs while the caller trains."""
        if self.pool is None:
            return self.rollout.generate(rollout_id)
        rollout = self.ahead.result() if self.ahead is not None else self.rollout.generate(rollout_id)
        self.cursor = self.rollout.state_dict()  # the worker is idle: where rollout_id + 1 begins
        nxt = rollout_id + 1
        self.ahead = self.pool.submit(self.rollout.generate, nxt) if nxt < total else None
        return rollout

    def wait_for_generation(self) -> float:
        """Async: let the generation in flight finish before a weight sync (Miles' train_async does the same),
        so no sample mixes two policies. Returns the seconds waited: 0 when generation outpaced training."""
        if self.ahead is None:
            return 0.0
        t0 = time.perf_counter()
        self.ahead.exception()  # waits; an error surfaces from .result() at the next rollout
        return time.perf_counter() - t0

    def staleness(self, rollout: Rollout) -> dict[str, float]:
        """Policy versions between each sample's generating weights and the weights it is trained from."""
        if not (self.trains and self.generates) or self.sft:
            return {}
        lags = [self.version - s.weight_version for s in rollout.samples]
        bound = self.cfg.rollout.max_staleness
        if max(lags) > bound:
            raise StalenessError(
                f"a rollout holds samples {max(lags)} policy versions old but rollout.max_staleness is {bound}; "
                "raise rollout.max_staleness, or have the rollout function drop or regenerate stale samples"
            )
        return {"staleness_versions_mean": sum(lags) / len(lags), "staleness_versions_max": float(max(lags))}

    def count_nonfinite(self, skipped: float, where: str) -> None:
        """Add the optimizer steps the trainer skipped for a NaN/inf loss or gradient; stop once there are more
        than optim.max_nonfinite_steps (the skipped steps never touched the weights, so the last checkpoint and
        the current weights are both sound)."""
        self.nonfinite_steps += int(skipped)
        allowed = self.cfg.optim.max_nonfinite_steps
        if skipped and self.nonfinite_steps > allowed:
            raise NonFiniteTraining(
                f"{where}: an optimizer step had a NaN or inf loss or gradient ({self.nonfinite_steps} such "
                f"step(s) so far, optim.max_nonfinite_steps={allowed}); the step was skipped and the run stopped. "
                "Look at the mismatch_* and tis_* metrics in metrics.jsonl for extreme engine/trainer ratios, "
                "lower optim.lr, or allow skipping with optim.max_nonfinite_steps=N"
            )

    def sync_weights(self) -> None:
        """The trainer's weights into the engine, once (brought back first if it was offloaded); with
        lora.sync=adapter only the LoRA adapters, served on the engine's own copy of the frozen base."""
        if self.offload_rollout:
            self.rollout.onload()
        if self.cfg.lora_adapter_sync:
            self.version = self.rollout.update_adapter(self.trainer.adapter_named_tensors())
        else:
            self.version = self.rollout.update_weights(self.trainer.hf_named_tensors())
        self.engine_current = True

    def evaluate(self, rollout_id: int) -> dict[str, float]:
        """Each eval dataset's metrics under the engine's current weights (nothing in train-only runs); the SFT
        job's also the eval loss of every eval dataset's conversations, and its engine gets the weights first."""
        results = self.eval_loss() if self.sft and self.trains else {}
        if self.generates:
            if self.sft:
                results |= self.sft_generation_eval(rollout_id)
            else:
                results |= self.rollout.evaluate(rollout_id)
        if results:
            self.metrics.log("eval", rollout_id, results)
        return results

    def eval_loss(self) -> dict[str, float]:
        """The trainer's held-out loss and perplexity on each eval dataset's conversations (the SFT job)."""
        if self._eval_conversations is None:
            self._eval_conversations = self.rollout.eval_conversations()
        return {
            f"{name}/{key}": value
            for name, samples in self._eval_conversations.items()
            for key, value in self.trainer.eval_loss(samples).items()
        }

    def sft_generation_eval(self, rollout_id: int) -> dict[str, float]:
        """The SFT job's generation-based eval: the engine gets the current weights (onloaded under colocate, the
        trainer offloaded meanwhile), evaluates, and gives the devices back."""
        if not self.engine_current:
            self.sync_weights()  # onloads the engine first when it was offloaded
        elif self.offload_rollout:
            self.rollout.onload()
        if self.offload_train:
            self.trainer.offload()
        results = self.rollout.evaluate(rollout_id)
        if self.offload_rollout:
            self.rollout.offload()
        if self.offload_train:
            self.trainer.onload()
        return results

    def stop_after(self, done: int, saved: bool) -> None:
        """End the run after `done` rollouts because a signal asked: save there (unless just saved), then say how
        to go on."""
        cfg = self.cfg
        if cfg.ckpt.save and self.trains:
            if not saved:
                self.save(done)
            then = f"checkpoint saved in {cfg.ckpt.save}; rerun the same command to resume from rollout {done}"
        else:
            then = "no checkpoint is written (ckpt.save is not set), so rerunning starts over"
        self.metrics.close()
        signum = self.stop.signum
        assert signum is not None
        raise StopRequested(
            signum,
            f"stopped by {signal.Signals(signum).name} after rollout {done} of {cfg.rollout.num_rollout}: {then}",
        )

    def save(self, next_rollout: int) -> None:
        """Checkpoint (atomic): trainer state plus the rollout side's state, tagged with the next rollout to run.
        Async has already generated `next_rollout`; the state from before it makes a resume redo it."""
        state = self.cursor if self.pool is not None and self.cursor is not None else self.rollout.state_dict()
        self.trainer.save(next_rollout, state)


def _mean(values: list[float]) -> float:
    return sum(values) / len(values) if values else float("nan")


def _postfix(metrics: dict[str, float]) -> dict[str, str]:
    if "sft_loss" in metrics:  # the SFT job: its reward is 0 by construction
        shown = {"loss": metrics["sft_loss"]}
    else:
        shown = {"reward": metrics["reward_mean"], "kl": metrics.get("kl_loss"), "ent": metrics.get("entropy")}
    out = {k: f"{v:.3f}" for k, v in shown.items() if v is not None}
    if "env/tool_success_rate" in metrics:  # multi-turn: how many tool calls worked
        out["tools"] = f"{metrics['env/tool_success_rate']:.2f}"
    if "mismatch_logprob_abs_diff_max" in metrics:  # engine vs trainer: how far from on-policy the samples are
        out["lp_diff"] = f"{metrics['mismatch_logprob_abs_diff_max']:.1e}"
    out["t(r/t/s)"] = f"{metrics['time_rollout']:.2f}/{metrics['time_train']:.2f}/{metrics['time_sync']:.2f}s"
    return out


def _progress(items: range, initial: int, total: int, enabled: bool, desc: str = "rollouts"):
    from tqdm import tqdm

    return tqdm(items, initial=initial, total=total, desc=desc, disable=not enabled, dynamic_ncols=True)
