"""`math`: answers graded by math-verify (Hugging Face's `math_verify`: `parse` then `verify`).

math-verify extracts the final answer from free text (boxed first, then LaTeX, then plain expressions)
and compares symbolically (1/2 == 0.5 == \\frac{1}{2}). It is imported inside the functions so that the
config layer can import the hub without paying ~0.35 s for sympy.

Departure from the library defaults: math-verify bounds each parse/compare with `signal.alarm`, which
only works in the main thread. Off the main thread (a Ray async actor's event loop, a thread pool) we
pass no timeout instead of letting the grader raise; the remote and custom rewards are the place for
graders that may hang.
"""

from __future__ import annotations

import threading

from rlpipe.data.sample import Sample
from rlpipe.reward.context import RewardContext

_TIMEOUT_S = 5  # math-verify's own default per parse / compare


def _timeout_s() -> int | None:
    """math-verify's timeout, or None where signal.alarm cannot be used (not the main thread)."""
    return _TIMEOUT_S if threading.current_thread() is threading.main_thread() else None


def _as_gold_latex(label: object) -> str:
    """Wrap a bare label in $...$: math-verify only finds LaTeX like \\sqrt{2} inside math delimiters."""
    text = str(label).strip()
    if "$" in text or "\\boxed" in text:
        return text
    return f"${text}$"


def math_equal(label: object, answer_text: str) -> bool:
    """True if math-verify finds in `answer_text` an answer equal to `label` (gold parsed first)."""
    from math_verify import parse, verify  # lazy: sympy-heavy

    timeout = _timeout_s()
    gold = parse(_as_gold_latex(label), parsing_timeout=timeout)
    if not gold:  # an unparsable label is a data bug, not a wrong answer
        raise ValueError(f"math-verify could not parse the label {label!r}")
    answer = parse(answer_text, parsing_timeout=timeout)
    return bool(answer) and verify(gold, answer, timeout_seconds=timeout)


async def math_reward(sample: Sample, ctx: RewardContext) -> float:
    """Registry entry `math` (config: `rm_type: math`): 1.0 if the response's answer equals the label, else 0.0.

    Reads `sample.response_text`, the engine's detokenised response.
    """
    return 1.0 if math_equal(sample.label, sample.response_text) else 0.0
