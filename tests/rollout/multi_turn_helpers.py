"""Shared pieces of the multi-turn tests: a scripted environment, sources over an engine, and the chat template's
own rendering of an episode (the independent reference for its tokens)."""

from __future__ import annotations

import asyncio
import string
from dataclasses import dataclass, field

from tokenizers import AddedToken, Regex, Tokenizer, decoders, models, pre_tokenizers
from transformers import PreTrainedTokenizerFast

from rlpipe.data.sample import Sample
from rlpipe.data.tokenizer import encode_prompt
from rlpipe.rollout.engine import RolloutEngine, SamplingParams
from rlpipe.rollout.env import StepResult
from rlpipe.rollout.generate import RolloutSource
from rlpipe.rollout.multi_turn import EpisodeRunner, ObservationRenderer

PROMPTS = ["12+34=", "5+6=", "70+8="]


@dataclass
class ScriptedEnv:
    """Answers turn k with the tool message str(k) (k = 1, 2, ...), and says done with reward 1 after `turns`
    turns; records the actions it saw. `fail_at` raises at that turn; `hang_at` never answers it. Its state is
    the turn count, which a reset takes from the sample (so it survives a restart mid-episode)."""

    turns: int = 3
    fail_at: int | None = None
    hang_at: int | None = None
    actions: list[str] = field(default_factory=list)
    resets: int = 0
    done_before: int = 0

    async def reset(self, sample: Sample) -> None:
        self.resets += 1
        self.done_before = sample.metadata.get("turns", 0)

    async def step(self, action: str) -> StepResult:
        self.actions.append(action)
        k = self.done_before + len(self.actions)
        if k == self.fail_at:
            raise ValueError("the environment broke")
        if k == self.hang_at:
            await asyncio.Event().wait()
        if k >= self.turns:
            return StepResult(done=True, reward=1.0, info={"steps": 1.0})
        return StepResult(observation=[{"role": "tool", "content": str(k)}], info={"steps": 1.0})


def make_source(engine: RolloutEngine, tok, env_factory, **limits) -> RolloutSource:
    limits = {"max_turns": 8, **limits}
    runner = EpisodeRunner(env_factory, "tests.ScriptedEnv", ObservationRenderer(tok), **limits)
    return RolloutSource(None, engine, None, tok.decode, episodes=runner)  # type: ignore[arg-type]


def fresh(tok) -> list[Sample]:
    return [
        Sample(prompt=p, prompt_tokens=encode_prompt(tok, p, True), loss_mask=[], metadata={}, index=i, group_index=i)
        for i, p in enumerate(PROMPTS)
    ]


def one_token_turns(tok, max_new_tokens: int = 40, temperature: float = 1.0) -> SamplingParams:
    every_token = tuple(range(len(tok)))
    return SamplingParams(max_new_tokens=max_new_tokens, temperature=temperature, stop_token_ids=every_token)


def conversation(tok, sample: Sample, observations: list[str]) -> list[int]:
    """The template's own rendering of the episode up to the model's last turn (independent of the renderer)."""
    turns, start = [], 0
    for length in runs(sample.loss_mask):
        turns.append(sample.response_tokens[start : start + length[0]])
        start += sum(length)
    messages = list(sample.prompt) if isinstance(sample.prompt, list) else [{"role": "user", "content": sample.prompt}]
    for turn, obs in zip(turns[:-1], observations, strict=True):
        messages += [{"role": "assistant", "content": _content(tok, turn)}, {"role": "tool", "content": obs}]
    text = tok.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
    return tok.encode(text, add_special_tokens=False) + turns[-1]


def runs(mask: list[int]) -> list[tuple[int, int]]:
    """(model tokens, observation tokens) per turn of a loss mask."""
    runs, i = [], 0
    while i < len(mask):
        j = i
        while j < len(mask) and mask[j] == 1:
            j += 1
        k = j
        while k < len(mask) and mask[k] == 0:
            k += 1
        runs.append((j - i, k - j))
        i = k
    return runs


def _content(tok, turn: list[int]) -> str:
    """An assistant turn as message content: its text without the closing EOS the template writes itself."""
    return tok.decode(turn[:-1] if turn[-1] == tok.eos_token_id else turn)


def char_tokenizer_with(template: str) -> PreTrainedTokenizerFast:
    """A character tokenizer (printable ASCII) with Qwen's special tokens and the chat `template`."""
    specials = ["<|endoftext|>", "<|im_start|>", "<|im_end|>"]
    backend = Tokenizer(models.WordLevel({t: i for i, t in enumerate([*specials, *sorted(set(string.printable))])}))
    backend.pre_tokenizer = pre_tokenizers.Split(Regex(r"[\s\S]"), behavior="isolated")
    backend.decoder = decoders.Fuse()
    backend.add_special_tokens([AddedToken(t, special=True, normalized=False) for t in specials])
    return PreTrainedTokenizerFast(
        tokenizer_object=backend, eos_token="<|im_end|>", pad_token="<|endoftext|>", chat_template=template
    )
