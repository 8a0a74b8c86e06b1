"""`exact_match`: the offline toy tasks (reverse / copy / add digits), scored from token ids.

Rule: take the model's last turn (`Sample.last_turn_tokens`: the whole response unless a multi-turn episode put
tool calls and results before it) up to the first EOS. No EOS (the response was truncated) -> 0. Any other
special token before EOS -> 0. Otherwise decode those ids and compare with `str(label)` exactly -> 1 / 0.

Why ids and not `response_text`: text decoded with `skip_special_tokens` drops pad/eos/chat markers, so a
response like "321<pad><pad>9" would read as "3219" and one like "321<pad>" as the right answer "321".
"""

from __future__ import annotations

from collections.abc import Callable

from rlpipe.data.sample import Sample
from rlpipe.reward.context import RewardContext


def exact_match_score(
    response_tokens: list[int],
    label: object,
    eos_token_id: int,
    special_token_ids: frozenset[int],
    decode: Callable[[list[int]], str],
) -> float:
    """1.0 if the ids before the first EOS are clean and decode to exactly `str(label)`, else 0.0."""
    try:
        eos_pos = response_tokens.index(eos_token_id)
    except ValueError:  # no EOS: truncated, the answer never finished
        return 0.0
    answer_ids = response_tokens[:eos_pos]  # [A]
    if any(tok in special_token_ids for tok in answer_ids):
        return 0.0
    return 1.0 if decode(answer_ids) == str(label) else 0.0


async def exact_match_reward(sample: Sample, ctx: RewardContext) -> float:
    """Registry entry `exact_match` (config: `rm_type: exact_match`)."""
    return exact_match_score(sample.last_turn_tokens, sample.label, ctx.eos_token_id, ctx.special_token_ids, ctx.decode)
