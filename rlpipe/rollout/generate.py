"""One rollout: prompts from the data source -> engine -> rewards, as groups of Samples.

`generate_rollout(cfg, rollout_id, source)` is the default `rollout.rollout_function_path` (Miles'
`--rollout-function-path` has the same shape, less the `evaluation` flag: evaluation has its own path here);
a custom rollout function receives the same `RolloutSource` and may call `source.generate_groups` /
`source.score_groups` (or `source.score`) itself, and write per-rollout numbers into `source.metrics`.

A sample is generated "from where it stands" (`RolloutSource.continue_samples`): a fresh one from its prompt,
one aborted earlier (partial rollout) from its prompt plus the tokens it already has, with what is left of
the `max_response_len` budget; its new tokens and log-probs are appended to the old ones. With an environment
(`rollout.env`) a sample is an episode of turns (rlpipe.rollout.multi_turn), resumed the same way.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field, replace
from typing import Any

from rlpipe.config.schema import RunConfig
from rlpipe.data.dataset import PromptDataset
from rlpipe.data.sample import Sample, Status
from rlpipe.reward import RewardContext, group_by_index, score_groups
from rlpipe.reward.pool import RewardPool
from rlpipe.rollout.engine import GenerateOutput, RolloutEngine, SamplingParams
from rlpipe.rollout.multi_turn import EpisodeRunner
from rlpipe.rollout.waves import collect_groups, number_groups

LORA_ADAPTER_NAME = "rlpipe_lora"  # lora.sync=adapter: the name the trainer's adapter is served under
FINISH_STATUS = {"stop": Status.COMPLETED, "length": Status.TRUNCATED, "abort": Status.ABORTED}
UNFINISHED = (Status.PENDING, Status.ABORTED)


@dataclass
class RolloutSource:
    """Everything a rollout function needs: the prompt data, the engine, the reward, and the partial-rollout
    buffer (groups whose generation was cut short, waiting to be resumed)."""

    dataset: PromptDataset
    engine: RolloutEngine
    reward: RewardContext
    decode: Any  # tokenizer.decode, to fill response_text
    buffer: list[list[Sample]] = field(default_factory=list)
    metrics: dict[str, float] = field(default_factory=dict)  # this rollout's numbers, logged with it
    episodes: EpisodeRunner | None = None  # multi-turn: the environments samples play against (rollout.env)
    reward_pool: RewardPool | None = None  # CPU-bound rewards in worker processes (rollout.reward_workers)

    def generate_groups(self, prompts: list[Sample], params: SamplingParams, rollout_id: int) -> list[list[Sample]]:
        """`params.n` responses per prompt, in one batched engine call (multi-turn: one per turn); one group (list)
        per prompt."""
        if self.episodes is not None:
            groups = self.new_groups(prompts, params.n, rollout_id)
            self.continue_samples([s for g in groups for s in g], params, rollout_id)
            number_groups(groups, params.n)
            return groups
        outputs = self.engine.generate([p.prompt_tokens for p in prompts], params)
        version = self.engine.weight_version
        groups = []
        for g, (prompt, outs) in enumerate(zip(prompts, outputs, strict=True)):
            groups.append([_fill(prompt, out, g, g * params.n + k, version, rollout_id) for k, out in enumerate(outs)])
        return groups

    def new_groups(self, prompts: list[Sample], n: int, rollout_id: int) -> list[list[Sample]]:
        """`n` not-yet-generated samples per prompt, stamped with the rollout that launches them."""
        return [[_pending(prompt, rollout_id) for _ in range(n)] for prompt in prompts]

    def continue_samples(self, samples: list[Sample], params: SamplingParams, rollout_id: int) -> None:
        """Generate every unfinished sample of `samples` from where it stands, in place: one engine call, or, with
        an environment (`rollout.env`), one per turn until every episode ends (rlpipe.rollout.multi_turn)."""
        todo = [s for s in samples if s.status in UNFINISHED]
        if self.episodes is not None:
            self.episodes.run(self, todo, params, rollout_id)
        else:
            self.generate_turn(todo, params, rollout_id, [params.max_new_tokens - s.response_length for s in todo])

    def generate_turn(self, todo: list[Sample], params: SamplingParams, rollout_id: int, budgets: list[int]) -> None:
        """Continue each sample of `todo` by up to its budget of new tokens, in one engine call, in place.

        Each row is prompt + response so far; the call runs to the largest budget and each row is cut back to its own
        (a cut row ends "length"), so one call serves fresh and resumed samples. Runs of `params.n` consecutive samples
        with the same tokens and budget (a fresh group) go as one request for n responses, as SGLang's parallel
        sampling serves them: 8x fewer requests to build, send and parse for 8-sample groups (the HF engine decodes
        the same rows in the same order either way)."""
        for s in [s for s, b in zip(todo, budgets, strict=True) if b <= 0]:
            s.status = Status.TRUNCATED  # nothing left to generate
        todo, budgets = [s for s, b in zip(todo, budgets, strict=True) if b > 0], [b for b in budgets if b > 0]
        if not todo:
            return
        per_row = _shared_rows(todo, budgets, params.n)

        def arrived(row: int, responses: list[GenerateOutput]) -> None:
            for k, out in enumerate(responses, start=row * per_row):
                take(todo[k], budgets[k], out)
            if self.reward_pool is not None and self.episodes is None:  # scored while the engine generates the rest
                samples = todo[row * per_row : (row + 1) * per_row]
                self.reward_pool.start([s for s in samples if s.status not in UNFINISHED])

        def take(sample: Sample, budget: int, out: GenerateOutput) -> None:
            ids, log_probs, reason = out.output_ids[:budget], out.output_log_probs[:budget], out.finish_reason
            if len(out.output_ids) > budget or (len(ids) == budget and reason == "abort"):
                reason = "length"  # the row ran past (or exactly used up) this sample's own budget
            sample.response_tokens += ids
            sample.rollout_log_probs += log_probs
            if out.routed_experts is not None:  # the engine ran the whole sequence again: its routes cover it all
                sample.rollout_routed_experts = out.routed_experts[: len(sample.tokens) - 1]
            sample.loss_mask = (sample.loss_mask or []) + [1] * len(ids)
            sample.response_text = self.decode(sample.response_tokens, skip_special_tokens=True)
            sample.status = FINISH_STATUS[reason]
            # the policy of the newest tokens (the async staleness bound uses it), as the reply arrives
            sample.weight_version = self.engine.weight_version
            sample.rollout_id = rollout_id

        rows = [s.tokens for s in todo[::per_row]]
        self.engine.generate(rows, replace(params, n=per_row, max_new_tokens=max(budgets)), arrived)

    def score_groups(self, groups: list[list[Sample]]) -> list[list[Sample]]:
        """Reward every sample of `groups` (written to `sample.reward`); returns the groups that keep: all of them,
        less those `rollout.reward_failure: drop_group` dropped. Failed reward calls are counted in `metrics`."""
        scored = asyncio.run(score_groups(groups, self.reward, self.reward_pool))
        for key, value in scored.metrics().items():
            self.metrics[key] = self.metrics.get(key, 0.0) + value
        return scored.kept

    def score(self, samples: list[Sample]) -> list[float | None]:
        """Rewards for `samples` in order (also written to `sample.reward`), grouped by `group_index`; the samples
        of a group dropped by `reward_failure: drop_group` get None (leave those groups out, or use score_groups)."""
        self.score_groups(group_by_index(samples))
        return [sample.reward for sample in samples]


def _shared_rows(todo: list[Sample], budgets: list[int], n: int) -> int:
    """`n` if `todo` is runs of n samples that share their tokens and budget (fresh groups), else 1."""
    if n == 1 or len(todo) % n:
        return 1
    for start in range(0, len(todo), n):
        first, budget = todo[start].tokens, budgets[start]
        if any(s.tokens != first for s in todo[start + 1 : start + n]) or budgets[start : start + n].count(budget) < n:
            return 1
    return n


def _pending(prompt: Sample, rollout_id: int) -> Sample:
    """A sample with no response yet; every mutable field its own (responses grow in place)."""
    return Sample(
        prompt=prompt.prompt,
        label=prompt.label,
        metadata={**prompt.metadata, "start_rollout_id": rollout_id},
        index=prompt.index,
        prompt_tokens=list(prompt.prompt_tokens),
        loss_mask=[],
        status=Status.PENDING,
        rollout_id=rollout_id,
    )


def _fill(prompt: Sample, out: GenerateOutput, group: int, index: int, version: int, rollout_id: int) -> Sample:
    return Sample(
        prompt=prompt.prompt,
        label=prompt.label,
        metadata=dict(prompt.metadata),
        index=index,
        group_index=group,
        prompt_tokens=list(prompt.prompt_tokens),
        response_tokens=list(out.output_ids),
        response_text=out.text,
        rollout_log_probs=list(out.output_log_probs),
        rollout_routed_experts=out.routed_experts,
        loss_mask=[1] * len(out.output_ids),
        status=FINISH_STATUS[out.finish_reason],
        weight_version=version,
        rollout_id=rollout_id,
    )


def sampling_params(cfg: RunConfig, evaluation_dataset: str | None = None) -> SamplingParams:
    """Engine sampling settings for training rollouts, or for one (already inherited) eval dataset."""
    ro = cfg.rollout
    source = ro if evaluation_dataset is None else cfg.eval.datasets[evaluation_dataset]
    assert source.n_samples is not None and source.max_response_len is not None  # resolved
    return SamplingParams(
        max_new_tokens=source.max_response_len,
        temperature=source.temperature,
        top_p=source.top_p,
        top_k=source.top_k,
        n=source.n_samples,
        stop_token_ids=tuple(ro.stop_token_ids),
        # the trainer replays training rollouts' experts (R3); evaluation needs none
        return_routed_experts=cfg.algo.use_rollout_routing_replay and evaluation_dataset is None,
        lora_name=LORA_ADAPTER_NAME if cfg.lora_adapter_sync else None,
    )


def generate_rollout(cfg: RunConfig, rollout_id: int, source: RolloutSource) -> list[list[Sample]]:
    """The default rollout: `batch_size` groups of `n_samples` rewarded samples, in arrival order.

    Plain runs draw `batch_size` prompts and generate them in one engine call. With dynamic sampling and
    partial rollout the same call runs in waves (rlpipe.rollout.waves)."""
    return collect_groups(cfg, rollout_id, source)
