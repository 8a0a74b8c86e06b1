"""`f1`: token-level F1 between the response and the label, SQuAD-style (config: `rm_type: f1`).

SQuAD v1.1 evaluation (Rajpurkar et al., 2016): normalise both texts (lowercase, drop punctuation, drop
the articles a/an/the, collapse whitespace), split on spaces, and score

    precision = |common| / |response tokens|,  recall = |common| / |label tokens|,
    F1 = 2 * precision * recall / (precision + recall)

where `common` is the multiset intersection. An empty side gives 1.0 if both are empty, else 0.0
(SQuAD v2's rule). A list label holds several acceptable answers; the best F1 counts.
"""

from __future__ import annotations

import re
import string
from collections import Counter

from rlpipe.data.sample import Sample
from rlpipe.reward.context import RewardContext

_ARTICLES_RE = re.compile(r"\b(a|an|the)\b")
_PUNCTUATION = frozenset(string.punctuation)


def normalize_text(text: str) -> str:
    """SQuAD normalisation: lowercase, no punctuation, no articles, single spaces."""
    text = "".join(ch for ch in text.lower() if ch not in _PUNCTUATION)
    text = _ARTICLES_RE.sub(" ", text)
    return " ".join(text.split())


def f1_score(response: str, label: str) -> float:
    """Token-level F1 in [0, 1] between normalised `response` and `label`."""
    pred_tokens = normalize_text(response).split()
    gold_tokens = normalize_text(label).split()
    if not pred_tokens or not gold_tokens:
        return float(pred_tokens == gold_tokens)
    common = sum((Counter(pred_tokens) & Counter(gold_tokens)).values())
    if common == 0:
        return 0.0
    precision = common / len(pred_tokens)
    recall = common / len(gold_tokens)
    return 2 * precision * recall / (precision + recall)


async def f1_reward(sample: Sample, ctx: RewardContext) -> float:
    """Registry entry `f1`; reads `sample.response_text`; a list/tuple label scores its best answer."""
    labels = sample.label if isinstance(sample.label, list | tuple) else [sample.label]
    if not labels:
        raise ValueError(f"f1 reward: sample {sample.index} has an empty list of labels")
    return max(f1_score(sample.response_text, str(label)) for label in labels)
