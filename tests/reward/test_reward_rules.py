"""Rule-based rewards on hand-written responses: right, wrong and malformed answers."""

from __future__ import annotations

import asyncio
import concurrent.futures

import pytest

from rlpipe.data.sample import Sample
from rlpipe.reward import RewardContext, score_samples
from rlpipe.reward.dapo import dapo_score, extract_answer, normalize_answer
from rlpipe.reward.deepscaler import deepscaler_score, last_boxed, solution_after_think
from rlpipe.reward.exact_match import exact_match_score
from rlpipe.reward.f1 import f1_score, normalize_text
from rlpipe.reward.math_grader import math_equal

# A character tokenizer: ids 0-2 are special, the rest one character each.
PAD, EOS, BOS = 0, 1, 2
VOCAB = ["<pad>", "<eos>", "<bos>", *"0123456789 +"]
SPECIAL = frozenset({PAD, EOS, BOS})


def encode(text: str) -> list[int]:
    return [VOCAB.index(ch) for ch in text]


def decode(ids: list[int]) -> str:
    return "".join(VOCAB[i] for i in ids)


def make_ctx(rm_type: str) -> RewardContext:
    return RewardContext(rm_type=rm_type, eos_token_id=EOS, special_token_ids=SPECIAL, decode=decode)


def em(tokens: list[int], label: object) -> float:
    return exact_match_score(tokens, label, EOS, SPECIAL, decode)


# --- exact_match -------------------------------------------------------------------------------------


def test_exact_match_correct_answer_ending_in_eos() -> None:
    assert em([*encode("321"), EOS], "321") == 1.0
    assert em([*encode("321"), EOS], 321) == 1.0  # int labels compare through str()


def test_exact_match_ignores_tokens_after_eos() -> None:
    assert em([*encode("321"), EOS, PAD, PAD], "321") == 1.0
    assert em([*encode("321"), EOS, *encode("999")], "321") == 1.0


def test_exact_match_wrong_answer() -> None:
    assert em([*encode("32"), EOS], "321") == 0.0
    assert em([*encode("3210"), EOS], "321") == 0.0
    assert em([*encode(" 321"), EOS], "321") == 0.0  # exact: no whitespace stripping


def test_exact_match_without_eos_is_truncated_and_scores_zero() -> None:
    assert em(encode("321"), "321") == 0.0
    assert em([], "321") == 0.0


def test_exact_match_special_token_before_eos_scores_zero() -> None:
    padded = [*encode("3"), PAD, *encode("21"), EOS]
    # Text decoded with skip_special_tokens would read "321" and hide the padding: ids must not.
    assert "".join(VOCAB[i] for i in padded if i not in SPECIAL) == "321"
    assert em(padded, "321") == 0.0
    assert em([BOS, *encode("321"), EOS], "321") == 0.0


def test_exact_match_empty_answer_matches_only_empty_label() -> None:
    assert em([EOS], "") == 1.0
    assert em([EOS], "0") == 0.0


# --- deepscaler --------------------------------------------------------------------------------------


def test_last_boxed_balances_nested_braces() -> None:
    assert last_boxed(r"so \boxed{\frac{\sqrt{2}}{2}} done") == r"\frac{\sqrt{2}}{2}"
    assert last_boxed(r"\boxed{1} then \boxed{2}") == "2"
    assert last_boxed(r"\boxed{\frac{1}{2}") is None  # never closed
    assert last_boxed("no box here") is None


def test_solution_after_think() -> None:
    assert solution_after_think("<think>a</think>b</think>c") == "c"
    assert solution_after_think("<think>still thinking") is None
    assert solution_after_think("plain") == "plain"


@pytest.mark.parametrize(
    ("response", "label", "expected"),
    [
        (r"<think>1/2 it is</think> The answer is \boxed{\frac{1}{2}}.", "0.5", 1.0),
        (r"<think>x</think> \boxed{\frac{\sqrt{2}}{2}}", r"\frac{1}{\sqrt{2}}", 1.0),  # nested braces
        (r"\boxed{7}", "7", 1.0),  # no think block at all: the whole response is graded
        (r"<think>try \boxed{3}</think> so \boxed{4}", "4", 1.0),  # last box after </think>
        (r"<think>x</think> \boxed{5}", "6", 0.0),  # wrong
        (r"<think>the answer is \boxed{5}", "5", 0.0),  # think never closed
        (r"<think>\boxed{5}</think> the answer is 5", "5", 0.0),  # box only inside the think block
        (r"<think>x</think> the answer is 5", "5", 0.0),  # no box
        (r"<think>x</think> \boxed{5", "5", 0.0),  # box never closed
        (r"<think>x</think> \boxed{}", "5", 0.0),  # empty box
    ],
)
def test_deepscaler(response: str, label: str, expected: float) -> None:
    assert deepscaler_score(response, label) == expected


# --- math --------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("label", "response", "expected"),
    [
        ("42", r"Adding them, the result is $\boxed{42}$.", True),
        (r"\frac{1}{2}", r"so $x = 0.5$", True),
        (r"\sqrt{2}", r"\boxed{\sqrt{2}}", True),
        ("42", r"The answer is $\boxed{41}$.", False),
        ("42", "I do not know.", False),
    ],
)
def test_math_equal(label: str, response: str, expected: bool) -> None:
    assert math_equal(label, response) is expected


def test_math_equal_off_the_main_thread() -> None:
    """math-verify's signal.alarm timeout cannot run off the main thread; the grader must still work there."""
    with concurrent.futures.ThreadPoolExecutor(max_workers=1) as pool:
        assert pool.submit(math_equal, "0.5", r"\boxed{\frac{1}{2}}").result() is True
        assert pool.submit(math_equal, "0.5", r"\boxed{2}").result() is False


def test_math_unparsable_label_is_an_error() -> None:
    with pytest.raises(ValueError, match="could not parse the label"):
        math_equal("", r"\boxed{1}")


# --- dapo --------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("raw", "normal"),
    [
        (r"\$1,000", "1000"),
        ("1,000 dollars", "1000"),
        (r"x = \frac12", r"\frac{1}{2}"),
        (r"$\sqrt2$", r"\sqrt{2}"),
        (r"10^\circ", "10"),
        (r"\text{(B)}", "(B)"),
        ("(1,2)", "(1,2)"),  # commas only dropped inside plain integers
        (r"\boxed{17}", "17"),
    ],
)
def test_dapo_normalize(raw: str, normal: str) -> None:
    assert normalize_answer(raw) == normal


def test_dapo_extract_takes_last_answer_line_case_insensitive() -> None:
    assert extract_answer("Answer: 3\nwait, no.\nanswer:  4\n") == "4"
    assert extract_answer("no final line") is None


@pytest.mark.parametrize(
    ("response", "label", "expected"),
    [
        ("Work...\nAnswer: 1,000 dollars", "1000", 1.0),
        (r"ANSWER: $\frac{1}{2}$", r"\frac12", 1.0),
        ("Answer: 3\nActually, Answer: 5", "5", 1.0),
        ("Answer: 5\nActually, Answer: 3", "5", -1.0),  # the last answer counts
        ("Answer: 41", "42", -1.0),  # wrong
        (r"The result is \boxed{42}", "42", -1.0),  # "Answer:" missing
        ("Answer: 42\n" + "x" * 400, "42", -1.0),  # the answer is outside the final 300 characters
    ],
)
def test_dapo_score(response: str, label: str, expected: float) -> None:
    assert dapo_score(response, label) == expected


# --- f1 ----------------------------------------------------------------------------------------------


def test_f1_normalisation() -> None:
    assert normalize_text("The  Eiffel-Tower, in Paris!") == "eiffeltower in paris"


@pytest.mark.parametrize(
    ("response", "label", "expected"),
    [
        ("The cat sat on the mat", "a cat on a mat", 6 / 7),  # P = 3/4, R = 3/3
        ("cat cat dog", "cat dog dog", 2 / 3),  # multiset overlap 2: P = R = 2/3
        ("Paris!", "paris", 1.0),
        ("London", "Paris", 0.0),
        ("the", "", 1.0),  # both normalise to nothing
        ("", "Paris", 0.0),
    ],
)
def test_f1_score(response: str, label: str, expected: float) -> None:
    assert f1_score(response, label) == pytest.approx(expected)


# --- through the hub ---------------------------------------------------------------------------------


def test_score_samples_writes_rewards_in_order() -> None:
    samples = [
        Sample(prompt="123", label="321", response_tokens=[*encode("321"), EOS], index=0),
        Sample(prompt="456", label="654", response_tokens=encode("654"), index=1),  # truncated
        Sample(prompt="789", label="987", response_tokens=[*encode("987"), EOS], index=2),
    ]
    rewards = asyncio.run(score_samples(samples, make_ctx("exact_match")))
    assert rewards == [1.0, 0.0, 1.0]
    assert [s.reward for s in samples] == rewards


@pytest.mark.parametrize(
    ("rm_type", "text", "label", "expected"),
    [
        ("math", r"$\boxed{12}$", "12", 1.0),
        ("deepscaler", r"<think>hm</think>\boxed{12}", "12", 1.0),
        ("dapo", "Answer: 11", "12", -1.0),
        ("f1", "the capital is Paris", ["Lyon", "Paris"], 0.5),  # best of the labels: P = 1/3, R = 1
    ],
)
def test_score_samples_text_rewards(rm_type: str, text: str, label: object, expected: float) -> None:
    sample = Sample(prompt="q", label=label, response_text=text)
    assert asyncio.run(score_samples([sample], make_ctx(rm_type))) == [pytest.approx(expected)]
    assert sample.reward == pytest.approx(expected)
