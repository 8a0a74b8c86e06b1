"""The training loop, readable top to bottom: warm-up, then for each rollout generate -> train -> sync.

    resume       the trainer restores its checkpoint (or loads fresh weights); the rollout side its data cursor
    warmup       optional supervised steps on the prompt data's labels (same trainer, sft loss)
    per rollout  rollout.generate -> trainer.rl_update (num_steps_per_rollout optimizer steps)
                 -> one weight sync into the engine -> eval / checkpoint on their intervals -> metrics
    summary      reward first vs last rollouts, eval before vs after, metrics.jsonl and the reward PNG

`trainer` and `rollout` are a `TrainerRole` and a `RolloutRole` in-process, or Ray groups of them that
answer the same calls (rlpipe.cluster). Under colocate the two time-slice the same devices: the rollout
side is offloaded while the trainer trains, and brought back before the weight sync.
"""

from __future__ import annotations

import random
import time
from dataclasses import dataclass, field
from pathlib import Path

from rlpipe.config import Resolved
from rlpipe.metrics import MetricsLogger
from rlpipe.rollout.role import RolloutRole
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


class Loop:
    """One run of the sync RL loop over a trainer and a rollout side (roles, or Ray groups of them)."""

    def __init__(self, run: Resolved, trainer: TrainerRole, rollout: RolloutRole, run_dir: Path) -> None:
        self.run, self.cfg = run, run.cfg
        self.trainer, self.rollout = trainer, rollout
        self.run_dir = run_dir
        self.offload = run.cfg.cluster.offload_rollout  # colocated: free the engine's memory while training

    def train(self) -> Summary:
        cfg = self.cfg
        total = cfg.rollout.num_rollout
        assert total is not None  # resolved
        start = self.resume()
        if start >= total:
            return Summary(start, total, float("nan"), float("nan"))
        self.metrics = MetricsLogger(self.run_dir, cfg.log, cfg.run_name, resume_from=start)
        if start == 0 and cfg.warmup is not None:
            self.warmup()
        self.sync_weights()
        eval_before = self.evaluate(start) if (start == 0 and cfg.eval.before_train) else {}
        rewards: list[float] = []
        bar = _progress(range(start, total), start, total, cfg.log.progress)
        last_eval = last_save = None
        for rollout_id in bar:
            t0 = time.perf_counter()
            samples = self.rollout.generate(rollout_id)
            if self.offload:
                self.rollout.offload()
            t1 = time.perf_counter()
            metrics = self.trainer.rl_update(samples)
            t2 = time.perf_counter()
            self.sync_weights()  # once per rollout, however many optimizer steps ran
            t3 = time.perf_counter()
            metrics |= {"time_rollout": t1 - t0, "time_train": t2 - t1, "time_sync": t3 - t2}
            self.metrics.log("train", rollout_id, metrics)
            rewards.append(metrics["reward_mean"])
            bar.set_postfix(_postfix(metrics), refresh=False)
            done = rollout_id + 1
            if cfg.eval.interval and done % cfg.eval.interval == 0:
                last_eval = (done, self.evaluate(done))
            if cfg.ckpt.save and cfg.ckpt.save_interval and done % cfg.ckpt.save_interval == 0:
                self.save(done)
                last_save = done
        bar.close()
        if cfg.ckpt.save and last_save != total:
            self.save(total)
        eval_after = last_eval[1] if last_eval and last_eval[0] == total else self.evaluate(total)
        self.metrics.plot()
        self.metrics.close()
        return Summary(start, total, _mean(rewards[:10]), _mean(rewards[-10:]), eval_before, eval_after)

    # ------------------------------------------------------------------------------------------ the phases
    def resume(self) -> int:
        """Next rollout id: the trainer's latest checkpoint under ckpt.load, else 0 with fresh weights."""
        start, state = self.trainer.init_weights()
        if start:
            self.rollout.load_state_dict(state)
            print(f"rlpipe: resumed from {self.cfg.ckpt.load} at rollout {start}")
        return start

    def warmup(self) -> None:
        """Supervised steps on (prompt, label) pairs of the prompt data: RL from random weights plateaus."""
        cfg, warm = self.cfg, self.cfg.warmup
        assert warm is not None
        pairs = self.rollout.sft_pairs()
        rng = random.Random(cfg.seed)
        bar = _progress(range(warm.steps), 0, warm.steps, cfg.log.progress, desc="warm-up (sft)")
        for step in bar:
            chosen = [pairs[i] for i in rng.sample(range(len(pairs)), min(warm.batch_size, len(pairs)))]
            metrics = self.trainer.sft_update(chosen, warm.lr)
            self.metrics.log("warmup", step, metrics)
            bar.set_postfix(sft_loss=f"{metrics['sft_loss']:.3f}", refresh=False)
        bar.close()

    def sync_weights(self) -> None:
        """The trainer's weights into the engine, once (brought back first if it was offloaded)."""
        if self.offload:
            self.rollout.onload()
        self.rollout.update_weights(self.trainer.hf_named_tensors())

    def evaluate(self, rollout_id: int) -> dict[str, float]:
        results = self.rollout.evaluate(rollout_id)
        if results:
            self.metrics.log("eval", rollout_id, results)
        return results

    def save(self, next_rollout: int) -> None:
        """Checkpoint (atomic): trainer state plus the data cursor, tagged with the next rollout to run."""
        self.trainer.save(next_rollout, self.rollout.state_dict())


def _mean(values: list[float]) -> float:
    return sum(values) / len(values) if values else float("nan")


def _postfix(metrics: dict[str, float]) -> dict[str, str]:
    shown = {"reward": metrics["reward_mean"], "kl": metrics.get("kl_loss"), "ent": metrics.get("entropy")}
    out = {k: f"{v:.3f}" for k, v in shown.items() if v is not None}
    out["t(r/t/s)"] = f"{metrics['time_rollout']:.2f}/{metrics['time_train']:.2f}/{metrics['time_sync']:.2f}s"
    return out


def _progress(items: range, initial: int, total: int, enabled: bool, desc: str = "rollouts"):
    from tqdm import tqdm

    return tqdm(items, initial=initial, total=total, desc=desc, disable=not enabled, dynamic_ncols=True)
