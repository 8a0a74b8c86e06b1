"""`deepscaler`: the last \\boxed{...} after the reasoning block, graded by math-verify (as `math`).

Rule (DeepScaleR / slime's rm_hub `deepscaler`), on `sample.response_text`:
  - "</think>" present       -> grade only the text after the last "</think>";
  - "<think>" opened, never closed -> 0 (the model ran out of room while thinking);
  - no think tags            -> grade the whole response;
  - no complete \\boxed{...} -> 0; else 1 if its content equals the label (math-verify), else 0.

Departure from slime: slime returns 0 when "</think>" is absent altogether (its prompts always open a
think block); here a response without any think tag is graded, so the rule also serves non-reasoning models.
"""

from __future__ import annotations

from rlpipe.data.sample import Sample
from rlpipe.reward.context import RewardContext
from rlpipe.reward.math_grader import math_equal

_THINK_OPEN = "<think>"
_THINK_CLOSE = "</think>"
_BOXED = "\\boxed{"


def last_boxed(text: str) -> str | None:
    """Content of the last \\boxed{...} in `text`, braces balanced (\\boxed{\\frac{1}{2}} -> \\frac{1}{2}).

    None when there is no \\boxed{ or its braces never close.
    """
    start = text.rfind(_BOXED)
    if start < 0:
        return None
    depth = 0
    content_start = start + len(_BOXED)
    for pos in range(content_start - 1, len(text)):  # starts on the opening brace
        if text[pos] == "{":
            depth += 1
        elif text[pos] == "}":
            depth -= 1
            if depth == 0:
                return text[content_start:pos]
    return None


def solution_after_think(response: str) -> str | None:
    """The part of `response` to grade: after the last </think>, the whole text if no think block,
    None if a think block was opened and never closed."""
    if _THINK_CLOSE in response:
        return response.rsplit(_THINK_CLOSE, 1)[1]
    if _THINK_OPEN in response:
        return None
    return response


def deepscaler_score(response: str, label: object) -> float:
    """1.0 if the last boxed answer after the reasoning block equals `label`, else 0.0."""
    solution = solution_after_think(response)
    if solution is None:
        return 0.0
    boxed = last_boxed(solution)
    if boxed is None or not boxed.strip():
        return 0.0
    return 1.0 if math_equal(label, f"${boxed}$") else 0.0


async def deepscaler_reward(sample: Sample, ctx: RewardContext) -> float:
    """Registry entry `deepscaler` (config: `rm_type: deepscaler`)."""
    return deepscaler_score(sample.response_text, sample.label)
