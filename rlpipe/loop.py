"""The training loop, readable top to bottom: warm-up, then for each rollout generate -> train -> sync.

    setup        data, rewards, eval sets, resume point (checkpoint or fresh weights)
    warmup       optional supervised steps on the prompt data's labels (same trainer, sft loss)
    train        per rollout: rollout function -> rl_update (num_steps_per_rollout optimizer steps)
                 -> one weight sync into the engine -> eval / checkpoint on their intervals -> metrics
    summary      reward first vs last rollouts, eval before vs after, metrics.jsonl and the reward PNG

`trainer` is a `TrainerRole` in-process, or a group of them on Ray that answers the same calls.
Synchronous mode only (rollout.mode=sync).
"""

from __future__ import annotations

import random
import time
from dataclasses import dataclass, field
from pathlib import Path

from rlpipe.config import Resolved
from rlpipe.config.dotted import import_dotted
from rlpipe.data.dataset import PromptDataset
from rlpipe.data.sample import Sample
from rlpipe.data.tokenizer import encode_sft_pair, special_token_ids
from rlpipe.metrics import MetricsLogger
from rlpipe.reward import RewardContext
from rlpipe.rollout.engine import RolloutEngine
from rlpipe.rollout.generate import RolloutSource, generate_rollout, sampling_params
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
    """One run of the sync RL loop over a trainer (role or group) and a rollout engine."""

    def __init__(self, run: Resolved, trainer: TrainerRole, engine: RolloutEngine, tokenizer, run_dir: Path):
        self.run, self.cfg = run, run.cfg
        self.trainer, self.engine, self.tokenizer = trainer, engine, tokenizer
        self.run_dir = run_dir
        ro = self.cfg.rollout
        assert ro.prompt_data is not None  # resolved
        self.dataset = self._dataset(ro.prompt_data, ro.input_key, ro.label_key, shuffle=ro.shuffle)
        self.source = RolloutSource(self.dataset, engine, self._reward_context(ro.rm_type), tokenizer.decode)
        self.rollout_fn = import_dotted(ro.rollout_function_path) if ro.rollout_function_path else generate_rollout
        self.eval_sets = {
            name: (self._dataset(ds.path, ds.input_key, ds.label_key, shuffle=False), self._reward_context(ds.rm_type))
            for name, ds in self.cfg.eval.datasets.items()
        }

    def _dataset(self, path: str, input_key: str | None, label_key: str | None, shuffle: bool) -> PromptDataset:
        ro = self.cfg.rollout
        return PromptDataset(
            path, self.tokenizer, input_key=input_key or ro.input_key, label_key=label_key,
            metadata_key=ro.metadata_key, apply_chat_template=ro.apply_chat_template,
            max_prompt_len=ro.max_prompt_len, shuffle=shuffle, seed=ro.seed,
        )  # fmt: skip

    def _reward_context(self, rm_type: str | None) -> RewardContext:
        ro = self.cfg.rollout
        return RewardContext(
            rm_type=rm_type or "custom", eos_token_id=self.tokenizer.eos_token_id,
            special_token_ids=special_token_ids(self.tokenizer), decode=self.tokenizer.decode,
            rm_url=ro.rm_url, custom_rm_path=ro.custom_rm_path, group_rm=ro.group_rm,
        )  # fmt: skip

    # ------------------------------------------------------------------------------------------------- run
    def train(self) -> Summary:
        cfg = self.cfg
        start = self.resume()
        total = cfg.rollout.num_rollout
        assert total is not None  # resolved
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
            groups = self.rollout_fn(cfg, rollout_id, self.source)
            samples: list[Sample] = [s for group in groups for s in group]
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
        """Next rollout id: from the latest checkpoint under ckpt.load, else 0 with fresh weights."""
        start, state = self.trainer.init_weights()
        if start:
            self.dataset.load_state_dict(state["dataset"])
            print(f"rlpipe: resumed from {self.cfg.ckpt.load} at rollout {start}")
        return start

    def warmup(self) -> None:
        """Supervised steps on (prompt, label) pairs of the prompt data: RL from random weights plateaus."""
        cfg, warm = self.cfg, self.cfg.warmup
        assert warm is not None
        pairs = [encode_sft_pair(self.tokenizer, s.prompt, str(s.label)) for s in self.dataset.rows_as_samples()]
        rng = random.Random(cfg.seed)
        bar = _progress(range(warm.steps), 0, warm.steps, cfg.log.progress, desc="warm-up (sft)")
        for step in bar:
            chosen = [pairs[i] for i in rng.sample(range(len(pairs)), min(warm.batch_size, len(pairs)))]
            metrics = self.trainer.sft_update(chosen, warm.lr)
            self.metrics.log("warmup", step, metrics)
            bar.set_postfix(sft_loss=f"{metrics['sft_loss']:.3f}", refresh=False)
        bar.close()

    def sync_weights(self) -> None:
        """Push the trainer's weights (HF names) into the engine: begin -> update -> end -> flush."""
        self.engine.begin_weight_update()
        self.engine.update_weights_from_tensor(self.trainer.hf_named_tensors())
        self.engine.end_weight_update()
        self.engine.flush_cache()

    def evaluate(self, rollout_id: int) -> dict[str, float]:
        """Mean reward (and pass@n for n > 1) of every eval dataset under the current weights."""
        results: dict[str, float] = {}
        for name, (dataset, reward) in self.eval_sets.items():
            params = sampling_params(self.cfg, name)
            prompts = dataset.rows_as_samples()
            source = RolloutSource(dataset, self.engine, reward, self.tokenizer.decode)
            groups = source.generate_groups(prompts, params, rollout_id)
            scores = source.score([s for g in groups for s in g])
            results[f"{name}/reward_mean"] = _mean(scores)
            if params.n > 1:
                results[f"{name}/pass@{params.n}"] = _mean([float(any((s.reward or 0) > 0 for s in g)) for g in groups])
        if results:
            self.metrics.log("eval", rollout_id, results)
        return results

    def save(self, next_rollout: int) -> None:
        """Checkpoint (atomic): trainer state plus the data cursor, tagged with the next rollout to run."""
        self.trainer.save(next_rollout, {"dataset": self.dataset.state_dict()})


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
