"""One rollout: prompts from the data source -> engine -> rewards, as groups of Samples.

`generate_rollout(cfg, rollout_id, source)` is the default `rollout.rollout_function_path` (Miles'
`--rollout-function-path` has the same shape, less the `evaluation` flag: evaluation has its own path here);
a custom rollout function receives the same `RolloutSource` and may call `source.generate_groups` /
`source.score` itself.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass

from rlpipe.config.schema import RunConfig
from rlpipe.data.dataset import PromptDataset
from rlpipe.data.sample import Sample, Status
from rlpipe.reward import RewardContext, score_samples
from rlpipe.rollout.engine import GenerateOutput, RolloutEngine, SamplingParams

FINISH_STATUS = {"stop": Status.COMPLETED, "length": Status.TRUNCATED, "abort": Status.ABORTED}


@dataclass
class RolloutSource:
    """Everything a rollout function needs: the prompt data, the engine and the reward."""

    dataset: PromptDataset
    engine: RolloutEngine
    reward: RewardContext
    decode: object  # tokenizer.decode, to fill response_text

    def generate_groups(self, prompts: list[Sample], params: SamplingParams, rollout_id: int) -> list[list[Sample]]:
        """`params.n` responses per prompt, in one batched engine call; one group (list) per prompt."""
        outputs = self.engine.generate([p.prompt_tokens for p in prompts], params)
        version = self.engine.weight_version
        groups = []
        for g, (prompt, outs) in enumerate(zip(prompts, outputs, strict=True)):
            groups.append([_fill(prompt, out, g, g * params.n + k, version, rollout_id) for k, out in enumerate(outs)])
        return groups

    def score(self, samples: list[Sample]) -> list[float]:
        """Rewards for `samples` (also written to `sample.reward`)."""
        return asyncio.run(score_samples(samples, self.reward))


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
        loss_mask=[1] * len(out.output_ids),
        status=FINISH_STATUS[out.finish_reason],
        weight_version=version,
        rollout_id=rollout_id,
    )


def sampling_params(cfg: RunConfig, evaluation_dataset: str | None = None) -> SamplingParams:
    """Engine sampling settings for training rollouts, or for one (already inherited) eval dataset."""
    ro = cfg.rollout
    if evaluation_dataset is None:
        return SamplingParams(
            max_new_tokens=ro.max_response_len,
            temperature=ro.temperature,
            top_p=ro.top_p,
            top_k=ro.top_k,
            n=ro.n_samples,
            stop_token_ids=tuple(ro.stop_token_ids),
        )
    ds = cfg.eval.datasets[evaluation_dataset]
    return SamplingParams(
        max_new_tokens=ds.max_response_len,
        temperature=ds.temperature,
        top_p=ds.top_p,
        top_k=ds.top_k,
        n=ds.n_samples,
        stop_token_ids=tuple(ro.stop_token_ids),
    )


def generate_rollout(cfg: RunConfig, rollout_id: int, source: RolloutSource) -> list[list[Sample]]:
    """The default rollout: `batch_size` prompts x `n_samples` responses, rewarded; groups in prompt order."""
    prompts = source.dataset.next_batch(cfg.rollout.batch_size)
    groups = source.generate_groups(prompts, sampling_params(cfg), rollout_id)
    source.score([s for group in groups for s in group])
    return groups
