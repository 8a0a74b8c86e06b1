"""`reasoning_gym`: a reasoning-gym problem scored by its own dataset's verifier (`rlpipe.data.reasoning_gym`).

The answer is the last `<answer>...</answer>` of the model's last turn (reasoning-gym's `extract_answer`, the
format its system prompt asks for); the score is `score_answer(answer, entry)` of the dataset the entry came from,
in [0, 1] (no answer tag: 0).
"""

from __future__ import annotations

from rlpipe.data.reasoning_gym import ENTRY_KEY
from rlpipe.data.sample import Sample
from rlpipe.reward.context import RewardContext


async def reasoning_gym_reward(sample: Sample, ctx: RewardContext) -> float:
    """Registry entry `reasoning_gym` (config: `rm_type: reasoning_gym`; needs the [envs] extra)."""
    try:
        import reasoning_gym
        from reasoning_gym.utils import extract_answer
    except ModuleNotFoundError as err:
        raise RuntimeError("rm_type reasoning_gym needs reasoning-gym: pip install 'rlpipe[envs]'") from err
    entry = sample.metadata.get(ENTRY_KEY)
    if not isinstance(entry, dict):
        raise ValueError(
            f"the sample has no metadata.{ENTRY_KEY} entry to score against; write the prompt file with "
            "python -m rlpipe.data.reasoning_gym"
        )
    answer = extract_answer(ctx.decode(sample.last_turn_tokens))
    score = reasoning_gym.get_score_answer_fn(entry["metadata"]["source_dataset"])(answer, entry)
    return float(score)
