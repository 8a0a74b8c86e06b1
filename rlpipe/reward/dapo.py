"""`dapo`: DAPO's math reward: the text after the last "Answer:", normalised, compared as a string.

Paper: DAPO (Yu et al., 2025, arXiv:2503.14476), reward in verl's `math_dapo.py`, whose normaliser is
Minerva's (Lewkowycz et al., 2022, arXiv:2206.14858, appendix D). Config: `rm_type: dapo`.

    reward = +1 if normalise(answer after last "Answer:") == normalise(label) else -1

Steps: keep only the last 300 characters (the longest MATH-500 answer is 159); find every
"Answer: <rest of line>" (case-insensitive) and take the last; none -> -1. Normalising drops a leading
"lhs =", spaces, $ delimiters, \\text{...} wrappers, units and filler words, thousands commas, and
expands shorthand \\frac12 / \\sqrt2.

Reward is +1/-1, not 1/0, as DAPO trains: a wrong or missing answer is penalised. Group-normalised
advantages (GRPO) are invariant to this affine change; un-normalised estimators (REINFORCE++) are not.
"""

from __future__ import annotations

import re

from rlpipe.data.sample import Sample
from rlpipe.reward.context import RewardContext

_TAIL_CHARS = 300
_ANSWER_RE = re.compile(r"answer\s*:\s*([^\n]+)", re.IGNORECASE)

# Minerva's normaliser tables: plain substring edits applied in order.
_SUBSTITUTIONS = (
    ("an ", ""),
    ("a ", ""),
    (".$", "$"),
    ("\\$", ""),
    ("\\ ", ""),
    (" ", ""),
    ("mbox", "text"),
    (",\\text{and}", ","),
    ("\\text{and}", ","),
    ("\\text{m}", "\\text{}"),
)
_REMOVED = (
    "square", "ways", "integers", "dollars", "mph", "inches", "hours", "km", "units", "\\ldots", "sue",
    "points", "feet", "minutes", "digits", "cents", "degrees", "cm", "gm", "pounds", "meters", "meals",
    "edges", "students", "childrentickets", "multiples", "\\text{s}", "\\text{.}", "\\text{\ns}",
    "\\text{}^2", "\\text{}^3", "\\text{\n}", "\\text{}", "\\mathrm{th}", "^\\circ", "^{\\circ}", "\\;",
    ",\\!", "{,}", '"', "\\dots",
)  # fmt: skip
# Regex rewrites: keep the math between the first pair of $, unwrap \text{} \textbf{} \overline{} \boxed{},
# and give \frac / \sqrt shorthand its braces.
_REWRITES = (
    (re.compile(r"(.*?)(\$)(.*?)(\$)(.*)"), r"$\3$"),
    (re.compile(r"(\\text\{)(.*?)(\})"), r"\2"),
    (re.compile(r"(\\textbf\{)(.*?)(\})"), r"\2"),
    (re.compile(r"(\\overline\{)(.*?)(\})"), r"\2"),
    (re.compile(r"(\\boxed\{)(.*)(\})"), r"\2"),
    (re.compile(r"(frac)([^{])(.)"), r"frac{\2}{\3}"),  # \frac12 -> \frac{1}{2}
    (re.compile(r"(sqrt)([^{])"), r"sqrt{\2}"),  # \sqrt2 -> \sqrt{2}
)


def normalize_answer(answer: str) -> str:
    """Minerva/DAPO normal form of a final answer ("x = \\$1,000 dollars" -> "1000")."""
    answer = answer.split("=")[-1]
    for old, new in _SUBSTITUTIONS:
        answer = answer.replace(old, new)
    for junk in _REMOVED:
        answer = answer.replace(junk, "")
    for pattern, repl in _REWRITES:
        answer = pattern.sub(repl, answer)
    answer = answer.replace("$", "")
    if answer.replace(",", "").isdigit():  # 1,000 -> 1000, only for plain integers (keeps (1,2))
        answer = answer.replace(",", "")
    return answer.strip()


def extract_answer(response: str) -> str | None:
    """The text after the last "Answer:" within the final 300 characters, or None."""
    matches = _ANSWER_RE.findall(response[-_TAIL_CHARS:])
    return matches[-1] if matches else None


def dapo_score(response: str, label: object) -> float:
    """+1.0 if the normalised "Answer:" equals the normalised label, else -1.0 (missing answer included)."""
    answer = extract_answer(response)
    if answer is None:
        return -1.0
    return 1.0 if normalize_answer(answer) == normalize_answer(str(label)) else -1.0


async def dapo_reward(sample: Sample, ctx: RewardContext) -> float:
    """Registry entry `dapo` (config: `rm_type: dapo`); reads `sample.response_text`."""
    return dapo_score(sample.response_text, sample.label)
