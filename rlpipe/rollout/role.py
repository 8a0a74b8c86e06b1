"""The rollout side in rollout terms: the prompt data, the engine, the rewards, evaluation.

Like `TrainerRole`, a plain class: the loop holds it directly in-process, and a Ray actor wraps it as the
rollout manager on a cluster. It owns the data cursor and the partial-rollout buffer, so resuming restores
them here. Debug modes live here too: `debug.save_rollout_data` dumps each rollout it generates, and
`debug.load_rollout_data` (train-only) replays dumps instead of generating; the engine is then unused.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, replace
from typing import Any

import torch

from rlpipe.config.dotted import import_dotted
from rlpipe.config.schema import RunConfig
from rlpipe.data.dataset import PromptDataset
from rlpipe.data.sample import Sample
from rlpipe.data.tokenizer import Decoder, SftExample, encode_sft_pair, load_tokenizer, special_token_ids
from rlpipe.loading import loading
from rlpipe.reward import RewardContext
from rlpipe.reward.hub import computes_on_host, worth_a_pool
from rlpipe.reward.pool import RewardPool, pool_size
from rlpipe.rollout.engine import RolloutEngine
from rlpipe.rollout.generate import LORA_ADAPTER_NAME, RolloutSource, generate_rollout, sampling_params
from rlpipe.rollout.multi_turn import EpisodeRunner, ObservationRenderer, episode_metrics, scripted_episode
from rlpipe.rollout.samples_io import load_rollout_data, sample_from_dict, sample_to_dict, save_rollout_data
from rlpipe.train.peft_adapter import adapter_config
from rlpipe.train.setup import lora_spec


@dataclass
class Rollout:
    """One rollout for the trainer: samples (groups of n_samples consecutive) and the rollout side's metrics."""

    samples: list[Sample]
    metrics: dict[str, float]


class RolloutRole:
    """Prompts -> engine -> rewarded samples, for training rollouts and for evaluation."""

    def __init__(self, cfg: RunConfig, engine: RolloutEngine | None) -> None:
        """`engine` may be None only when no rollout is generated (debug.train_only)."""
        assert cfg.ckpt.hf_checkpoint is not None and cfg.rollout.prompt_data is not None  # resolved
        self.cfg, self.engine = cfg, engine
        with loading("the tokenizer", cfg.ckpt.hf_checkpoint):
            self.tokenizer = load_tokenizer(cfg.ckpt.hf_checkpoint)
        self.decode = Decoder(self.tokenizer)
        ro = cfg.rollout
        self.episodes = self._episodes()
        # what the chat template lists to the model: the environment's tools, asked once (an env may list them remotely)
        tools = getattr(self.episodes.make_env(), "tools", None) if self.episodes is not None else None
        self.tools = list(tools.values()) if tools else None
        self.sft = cfg.sft_job  # the SFT job: datasets of conversations
        self.dataset = self._dataset(
            ro.prompt_data, ro.input_key, ro.label_key, shuffle=ro.shuffle, streaming=ro.stream_prompt_data
        )
        self.source = RolloutSource(
            self.dataset, engine, self._reward_context(ro.rm_type), self.decode, episodes=self.episodes
        )
        self.rollout_fn = import_dotted(ro.rollout_function_path) if ro.rollout_function_path else generate_rollout
        self.eval_sets = {
            name: RolloutSource(
                self._dataset(ds.path, ds.input_key, ds.label_key, shuffle=False),
                engine,
                self._reward_context(ds.rm_type),
                self.decode,
                episodes=self.episodes,
            )
            for name, ds in cfg.eval.datasets.items()
        }
        # Generation-based eval needs a reward; an SFT job's eval datasets without one have an eval loss only.
        self.scored_eval = [n for n, ds in cfg.eval.datasets.items() if ds.rm_type or ro.custom_rm_path or not self.sft]
        assert ro.batch_size is not None and ro.n_samples is not None  # resolved
        self._pools: dict[RewardContext, RewardPool] = {}
        self.source.reward_pool = self._reward_pool(self.source.reward, ro.batch_size * ro.n_samples)
        for name, source in self.eval_sets.items():
            n = cfg.eval.datasets[name].n_samples or 1
            source.reward_pool = self._reward_pool(source.reward, len(source.dataset) * n)

    def _reward_pool(self, ctx: RewardContext, calls: int) -> RewardPool | None:
        """Worker processes for a reward computed on the host, when `rollout.reward_workers` asks for them for
        batches of `calls` reward calls: one pool per reward context (training and an eval set with the same reward
        share it), its workers started on first use."""
        setting = self.cfg.rollout.reward_workers
        if not (computes_on_host(ctx) if setting is not None else worth_a_pool(ctx)):
            return None
        workers = pool_size(setting, calls)
        if workers and ctx not in self._pools:
            self._pools[ctx] = RewardPool(ctx, workers)
        return self._pools.get(ctx) if workers else None

    def close(self) -> None:
        """Stop the reward worker processes."""
        for pool in self._pools.values():
            pool.close()

    def _episodes(self) -> EpisodeRunner | None:
        """Multi-turn (rollout.env): the runner that plays samples against one environment each."""
        ro = self.cfg.rollout
        if ro.env is None:
            return None
        factory = import_dotted(ro.env)
        return EpisodeRunner(
            make_env=lambda: factory(self.cfg), env_name=ro.env, render=ObservationRenderer(self.tokenizer),
            max_turns=ro.max_turns, max_turn_tokens=ro.max_turn_tokens, env_timeout_s=ro.env_timeout_s,
        )  # fmt: skip

    def _dataset(
        self, path: str, input_key: str | None, label_key: str | None, shuffle: bool, streaming: bool = False
    ) -> PromptDataset:
        ro = self.cfg.rollout
        return PromptDataset(
            path, self.tokenizer, input_key=input_key or ro.input_key, label_key=label_key,
            metadata_key=ro.metadata_key, apply_chat_template=ro.apply_chat_template,
            max_prompt_len=ro.max_prompt_len, shuffle=shuffle, seed=ro.seed,
            tools=self.tools, conversations=self.sft, streaming=streaming,
        )  # fmt: skip

    def _reward_context(self, rm_type: str | None) -> RewardContext:
        ro = self.cfg.rollout
        return RewardContext(
            rm_type=rm_type or "custom", eos_token_id=self.tokenizer.eos_token_id,
            special_token_ids=special_token_ids(self.tokenizer), decode=self.decode,
            rm_url=ro.rm_url, custom_rm_path=ro.custom_rm_path, group_rm=ro.group_rm,
            reward_timeout_s=ro.reward_timeout_s, reward_failure=ro.reward_failure,
        )  # fmt: skip

    # ---------------------------------------------------------------------------------------- rollouts
    def generate(self, rollout_id: int) -> Rollout:
        """One training rollout, flattened: groups stay consecutive (n_samples samples per prompt)."""
        debug = self.cfg.debug
        if debug.load_rollout_data:
            samples, metrics = load_rollout_data(debug.load_rollout_data, rollout_id), {}
        else:
            self.source.metrics = {}
            groups = self.rollout_fn(self.cfg, rollout_id, self.source)
            if self.source.reward_pool is not None:
                self.source.reward_pool.forget_started()  # calls begun for samples this rollout did not keep
            samples, metrics = [s for group in groups for s in group], dict(self.source.metrics)
            if debug.save_rollout_data:
                save_rollout_data(debug.save_rollout_data, rollout_id, samples)
        # Partial rollout: how many rollouts ago each trained sample was first launched.
        ages = [rollout_id - s.metadata.get("start_rollout_id", rollout_id) for s in samples]
        metrics |= {
            "reward_mean": sum(float(s.reward or 0.0) for s in samples) / len(samples),
            "response_len_mean": sum(s.response_length for s in samples) / len(samples),
            "staleness_rollouts_mean": sum(ages) / len(ages),
            "staleness_rollouts_max": float(max(ages)),
            **episode_metrics(samples),
        }
        return Rollout(samples, metrics)

    def evaluate(self, rollout_id: int) -> dict[str, float]:
        """Mean reward (and pass@n for n > 1) of every eval dataset under the engine's current weights, and its
        failed reward calls when there were any (`reward_failures`, ...). Groups dropped for a failed reward
        (drop_group) are left out of the means; NaN when none is left."""
        results: dict[str, float] = {}
        for i, (name, source) in enumerate(self.eval_sets.items()):
            if name not in self.scored_eval:
                continue
            # A fixed seed per dataset: the same weights give the same score, so evaluations compare weights.
            params = replace(sampling_params(self.cfg, name), seed=self.cfg.rollout.seed + i)
            groups = source.generate_groups(source.dataset.rows_as_samples(), params, rollout_id)
            source.metrics = {}
            results |= {
                f"{name}/{key}": value for key, value in episode_metrics([s for g in groups for s in g]).items()
            }
            groups = source.score_groups(groups)
            results |= {f"{name}/{key}": value for key, value in source.metrics.items() if value}  # failures only
            scores = [float(s.reward or 0.0) for g in groups for s in g]
            results[f"{name}/reward_mean"] = sum(scores) / len(scores) if scores else math.nan
            if params.n > 1:
                solved = [any((s.reward or 0.0) > 0 for s in g) for g in groups]
                results[f"{name}/pass@{params.n}"] = sum(solved) / len(solved) if solved else math.nan
        return results

    def eval_conversations(self) -> dict[str, list[Sample]]:
        """The SFT job's held-out data: every eval dataset's conversations as supervised samples, for the eval loss."""
        return {
            name: [source.dataset.training_sample(s) for s in source.dataset.rows_as_samples()]
            for name, source in self.eval_sets.items()
        }

    def sft_examples(self) -> list[SftExample]:
        """(templated prompt ids, response ids, loss mask) for every training prompt: the supervised warm-up data.
        The response is the label + EOS, or, for a multi-turn run whose rows carry a `trace` (the model's turns of a
        solved episode), that episode played against the environment, its observations masked out."""
        examples = []
        for sample in self.dataset.rows_as_samples():
            if self.episodes is not None and "trace" in sample.metadata:
                ids, mask = scripted_episode(self.episodes, sample, sample.metadata["trace"], self.tokenizer)
                examples.append((sample.prompt_tokens, ids, mask))
            else:
                prompt, response = encode_sft_pair(self.tokenizer, sample.prompt, str(sample.label))
                examples.append((prompt, response, [1] * len(response)))
        return examples

    # ------------------------------------------------------------------------------------------ weights
    def update_weights(self, named_tensors: list[tuple[str, torch.Tensor]]) -> int:
        """Load the trainer's HF-named weights: begin -> update -> end -> flush. Returns the new version."""
        self.engine.begin_weight_update()
        self.engine.update_weights_from_tensor(named_tensors)
        self.engine.end_weight_update()
        self.engine.flush_cache()
        return self.engine.weight_version

    def update_adapter(self, named_tensors: list[tuple[str, torch.Tensor]]) -> int:
        """lora.sync=adapter: serve the trainer's LoRA adapter (peft-named matrices) on the engine's base weights.
        Returns the new version."""
        spec = lora_spec(self.cfg)
        assert spec is not None and self.cfg.ckpt.hf_checkpoint is not None  # LoRA on, resolved
        config = adapter_config(spec, self.cfg.ckpt.hf_checkpoint)
        self.engine.load_lora_adapter(LORA_ADAPTER_NAME, named_tensors, config)
        self.engine.flush_cache()
        return self.engine.weight_version

    def offload(self) -> None:
        self.engine.release_memory_occupation()

    def onload(self) -> None:
        self.engine.resume_memory_occupation()

    # ------------------------------------------------------------------------------------------- state
    def state_dict(self) -> dict[str, Any]:
        """The data cursor, the partial-rollout buffer and the engine's sampling RNG, as plain data (a copy: the
        buffer keeps changing): with them a resumed run generates what the uninterrupted one would have."""
        buffer = [[sample_to_dict(s) for s in group] for group in self.source.buffer]
        sampling = self.engine.sampling_state() if self.engine is not None else None
        return {"dataset": self.dataset.state_dict(), "buffer": buffer, "engine_sampling": sampling}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.dataset.load_state_dict(state["dataset"])
        self.source.buffer = [[sample_from_dict(s) for s in group] for group in state.get("buffer", [])]
        if self.engine is not None:
            self.engine.load_sampling_state(state.get("engine_sampling"))
