"""Multi-turn rollouts: the model and an environment take turns, token in / token out.

    turn      every live episode generates one assistant turn, all in one batched engine call (the single-turn
              path, `RolloutSource.generate_turn`: each row is the prompt plus everything so far)
    step      each finished turn's text goes to its episode's environment (`env.step`), all episodes at once; an
              environment that raises or runs past `rollout.env_timeout_s` ends its episode (`env_error`, which
              the reward stage treats as a failed reward call under `rollout.reward_failure`)
    observe   the observation messages are rendered by the chat template (`ObservationRenderer`) and appended
              as tokens with loss mask 0 and log-prob 0.0; the model's own tokens are never re-tokenized
    stop      the environment says done or the model made no call (COMPLETED); a turn cut by the budget, the
              `rollout.max_turns`-th turn wanting more, or an observation that does not fit `max_response_len`
              (TRUNCATED); an engine abort (ABORTED: the episode resumes later from where it stands)

Budgets: `max_response_len` covers the whole episode (generated and observation tokens), `rollout.max_turn_tokens`
one turn. Per-episode state: the environment object lives in `EpisodeRunner.live` under the sample's
`metadata["episode_id"]`; the counters live in the sample's metadata, so they travel with it (partial-rollout
buffer, checkpoints, dumps):

    turns         assistant turns generated          turn_start   response index where the current turn began
    env_metrics   the steps' `info` counts, summed   env_time_s   seconds spent in reset and step
    env_reward    the environment's reward (if any)  env_error    why the environment failed (if it did)

A run resumed from a checkpoint in the middle of an episode builds and resets a fresh environment for it (the
tokens are kept); an environment whose state is more than its reset gives must tolerate that.
"""

from __future__ import annotations

import asyncio
import itertools
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from rlpipe.data.sample import TURN_START, Sample, Status
from rlpipe.rollout.env import Environment, Message, StepResult

if TYPE_CHECKING:
    from transformers import PreTrainedTokenizerBase

    from rlpipe.rollout.engine import SamplingParams
    from rlpipe.rollout.generate import RolloutSource

EPISODE = "episode_id"
_MARK = "\x00rlpipe-turn\x00"  # the dummy assistant content whose end locates what the template closes a turn with


class ObservationRenderer:
    """Token ids that follow a model turn when the environment answers with `messages`: whatever the chat template
    closes the assistant turn with that the model did not generate itself, then the messages, then the generation
    prompt of the next assistant turn.

    Rendered from a dummy conversation (a user message, an assistant message with a marker as content, then
    `messages`, with the generation prompt): the text after the marker is the turn's closing, the observation and
    the next prompt. The model's own stop token (its last one) is taken off the front, so what the template adds
    and the model did not write is kept: Qwen's template closes a turn with `<|im_end|>\n`, the model stops at
    `<|im_end|>`, and the `\n` belongs to the observation (Miles' template difference drops it). Only the text
    after the assistant content is used, so templates that render a past assistant turn differently from the last
    one (Qwen3's empty think block) still give the tokens that template would put there.
    """

    def __init__(self, tokenizer: PreTrainedTokenizerBase) -> None:
        self.tok = tokenizer
        self.base: list[Message] = [{"role": "user", "content": "?"}, {"role": "assistant", "content": _MARK}]

    def __call__(self, messages: list[Message], last_token: int) -> list[int]:
        """Ids for `messages` after a turn whose last generated token is `last_token`."""
        rendered = self.tok.apply_chat_template(self.base + messages, tokenize=False, add_generation_prompt=True)
        if _MARK not in rendered:
            raise ValueError("the chat template drops the assistant's content, so turns cannot be told apart")
        tail = rendered[rendered.rindex(_MARK) + len(_MARK) :]
        stop_text = self.tok.decode([last_token])
        if stop_text and tail.startswith(stop_text):
            tail = tail[len(stop_text) :]
        return self.tok.encode(tail, add_special_tokens=False)


@dataclass(frozen=True)
class _EnvFailure:
    message: str


@dataclass
class EpisodeRunner:
    """Runs samples as episodes against environments from `make_env` (one per sample), within the turn limits."""

    make_env: Callable[[], Environment]
    env_name: str
    render: Callable[[list[Message], int], list[int]]
    max_turns: int
    max_turn_tokens: int | None = None
    env_timeout_s: float = 60.0
    live: dict[str, Environment] = field(default_factory=dict)
    _ids: itertools.count[int] = field(default_factory=itertools.count)

    def run(self, source: RolloutSource, samples: list[Sample], params: SamplingParams, rollout_id: int) -> None:
        """Play every unfinished sample of `samples` (fresh or resumed) until it ends or is aborted, in place."""
        asyncio.run(self._reset([s for s in samples if s.metadata.get(EPISODE) not in self.live]))
        active = samples
        while active:
            budgets = [self._budget(s, params.max_new_tokens) for s in active]
            source.generate_turn(active, params, rollout_id, budgets)
            for sample in active:
                if sample.status in (Status.COMPLETED, Status.TRUNCATED):
                    sample.metadata["turns"] = sample.metadata.get("turns", 0) + 1
            answered = [s for s in active if s.status == Status.COMPLETED]  # stopped on EOS: the env's move
            for sample in active:
                if sample.status == Status.TRUNCATED:
                    self._end(sample)
            results = asyncio.run(self._step(answered, source.decode))
            active = [s for s, r in zip(answered, results, strict=True) if self._observe(s, r, params)]

    def end(self, samples: list[Sample]) -> None:
        """Forget the environments of `samples` (episodes dropped unfinished, e.g. aborted without partial
        rollout)."""
        for sample in samples:
            self._end(sample)

    def _budget(self, sample: Sample, max_new_tokens: int) -> int:
        budget = max_new_tokens - sample.response_length
        if self.max_turn_tokens is not None:
            budget = min(budget, self.max_turn_tokens - len(sample.last_turn_tokens))
        return budget

    async def _reset(self, samples: list[Sample]) -> None:
        async def reset(sample: Sample) -> None:
            env = self.make_env()
            t0 = time.perf_counter()
            try:
                await asyncio.wait_for(env.reset(sample), self.env_timeout_s)
            except Exception as exc:
                raise RuntimeError(
                    f"the environment {self.env_name} failed to reset for prompt {str(sample.prompt)[:80]!r}: "
                    f"{type(exc).__name__}: {exc}"
                ) from exc
            _add_time(sample, time.perf_counter() - t0)
            sample.metadata[EPISODE] = f"{id(self):x}-{next(self._ids)}"
            self.live[sample.metadata[EPISODE]] = env

        await asyncio.gather(*(reset(s) for s in samples))

    async def _step(self, samples: list[Sample], decode: Callable[..., str]) -> list[StepResult | _EnvFailure]:
        async def step(sample: Sample) -> StepResult | _EnvFailure:
            env = self.live[sample.metadata[EPISODE]]
            action = decode(sample.last_turn_tokens, skip_special_tokens=True)
            t0 = time.perf_counter()
            try:
                return await asyncio.wait_for(env.step(action), self.env_timeout_s)
            except TimeoutError:
                return _EnvFailure(f"no answer within rollout.env_timeout_s={self.env_timeout_s:g} s")
            except Exception as exc:
                return _EnvFailure(f"{type(exc).__name__}: {exc}")
            finally:
                _add_time(sample, time.perf_counter() - t0)

        return list(await asyncio.gather(*(step(s) for s in samples)))

    def _observe(self, sample: Sample, result: StepResult | _EnvFailure, params: SamplingParams) -> bool:
        """Apply an environment's answer to its sample; True when the episode goes on to another turn."""
        if isinstance(result, _EnvFailure):
            sample.metadata["env_error"] = f"the environment {self.env_name} failed: {result.message}"
            return self._end(sample)
        totals = sample.metadata.setdefault("env_metrics", {})
        for key, value in result.info.items():
            totals[key] = totals.get(key, 0.0) + float(value)
        if result.done or not result.observation:
            if result.reward is not None:
                sample.metadata["env_reward"] = float(result.reward)
            return self._end(sample)
        if sample.metadata["turns"] >= self.max_turns:
            sample.status = Status.TRUNCATED  # the environment wanted another turn: rollout.max_turns cut it
            return self._end(sample)
        ids = self.render(result.observation, sample.response_tokens[-1])
        if len(ids) >= params.max_new_tokens - sample.response_length:  # no room for the observation and a turn
            sample.status = Status.TRUNCATED
            return self._end(sample)
        sample.response_tokens += ids
        sample.rollout_log_probs += [0.0] * len(ids)
        sample.loss_mask = (sample.loss_mask or []) + [0] * len(ids)
        sample.metadata[TURN_START] = sample.response_length
        sample.status = Status.PENDING
        return True

    def _end(self, sample: Sample) -> bool:
        self.live.pop(sample.metadata.get(EPISODE, ""), None)
        return False


def _add_time(sample: Sample, seconds: float) -> None:
    sample.metadata["env_time_s"] = sample.metadata.get("env_time_s", 0.0) + seconds


def episode_metrics(samples: list[Sample]) -> dict[str, Any]:
    """Per-rollout numbers of multi-turn samples: turns, the environments' counts, time, masked tokens, errors."""
    n = len(samples)
    if not n or not any("turns" in s.metadata for s in samples):
        return {}
    turns = [s.metadata.get("turns", 0) for s in samples]
    totals: dict[str, float] = {}
    for sample in samples:
        for key, value in sample.metadata.get("env_metrics", {}).items():
            totals[key] = totals.get(key, 0.0) + value
    out = {
        "env/turns_mean": sum(turns) / n,
        "env/turns_max": float(max(turns)),
        "env/time_s_mean": sum(s.metadata.get("env_time_s", 0.0) for s in samples) / n,
        "env/masked_tokens_mean": sum((s.loss_mask or []).count(0) for s in samples) / n,
        "env/errors": float(sum("env_error" in s.metadata for s in samples)),
        **{f"env/{key}_mean": value / n for key, value in totals.items()},
    }
    if totals.get("tool_calls"):
        out["env/tool_success_rate"] = 1.0 - totals.get("tool_errors", 0.0) / totals["tool_calls"]
    return out


def scripted_episode(
    runner: EpisodeRunner, sample: Sample, turns: list[str], tokenizer: PreTrainedTokenizerBase
) -> tuple[list[int], list[int]]:
    """(response ids, loss mask) of the episode in which the model writes `turns` (each ended by EOS) against a
    fresh environment: supervised traces get exactly the tokens a rollout would (same renderer, same environment),
    with the observations masked out."""

    async def play() -> tuple[list[int], list[int]]:
        env = runner.make_env()
        await env.reset(sample)
        ids: list[int] = []
        mask: list[int] = []
        for i, text in enumerate(turns):
            turn = [*tokenizer.encode(text, add_special_tokens=False), tokenizer.eos_token_id]
            ids, mask = ids + turn, mask + [1] * len(turn)
            if i == len(turns) - 1:
                break
            result = await env.step(text)
            if result.done or not result.observation:
                raise ValueError(
                    f"a trace of {len(turns)} turns for prompt {str(sample.prompt)[:80]!r} ends after turn {i + 1}: "
                    f"the environment {runner.env_name} answered it with no observation"
                )
            observation = runner.render(result.observation, turn[-1])
            ids, mask = ids + observation, mask + [0] * len(observation)
        return ids, mask

    return asyncio.run(play())
