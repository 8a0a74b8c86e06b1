"""Supervised tokens of a conversation: trained exactly on the assistant's turns (content and end-of-turn token),
checked by hand for the tiny template and against transformers' own assistant mask from TRL's Qwen2.5 training
template (which also trains the newlines around a turn: the only difference allowed)."""

from __future__ import annotations

import pytest
from trl.chat_template_utils import qwen2_5_chat_template, qwen2_5_training_chat_template, qwen3_chat_template

from rlpipe.data.conversation import ConversationError, encode_conversation
from rlpipe.data.tiny_model import build_char_tokenizer
from tests.rollout.multi_turn_helpers import char_tokenizer_with

CHAT = [
    {"role": "system", "content": "S"},
    {"role": "user", "content": "hi"},
    {"role": "assistant", "content": "A1"},
    {"role": "user", "content": "q2"},
    {"role": "assistant", "content": "A2"},
]


def test_only_assistant_turns_and_their_end_token_are_trained() -> None:
    tok = build_char_tokenizer()
    turns = [{"role": "user", "content": "12"}, {"role": "assistant", "content": "21"}]
    prompt, response, mask = encode_conversation(tok, [*turns, {"role": "user", "content": "3"}, turns[1]])
    assert tok.decode(prompt) == "<s>u:12a:"
    assert tok.decode(response) == "21</s>u:3a:21</s>"
    assert mask == [1, 1, 1, 0, 0, 0, 0, 0, 1, 1, 1]


def test_qwen_masks_agree_with_transformers_assistant_mask_up_to_the_newlines_around_a_turn() -> None:
    tok = char_tokenizer_with(qwen2_5_chat_template)
    prompt, response, mask = encode_conversation(tok, CHAT)
    ours = [0] * len(prompt) + mask
    reference = char_tokenizer_with(qwen2_5_training_chat_template).apply_chat_template(
        CHAT, tokenize=True, return_dict=True, return_assistant_tokens_mask=True
    )
    assert prompt + response == reference["input_ids"]
    differ = [i for i, (a, b) in enumerate(zip(ours, reference["assistant_masks"], strict=True)) if a != b]
    assert differ and all(ours[i] == 0 and reference["input_ids"][i] == tok.convert_tokens_to_ids("\n") for i in differ)
    trained = tok.decode([t for t, m in zip(response, mask, strict=True) if m])
    assert trained == "A1<|im_end|>A2<|im_end|>"


def test_qwen3_trains_the_think_block_of_the_last_turn_as_the_template_writes_it() -> None:
    tok = char_tokenizer_with(qwen3_chat_template)
    _, response, mask = encode_conversation(tok, CHAT)
    assert tok.decode([t for t, m in zip(response, mask, strict=True) if m]) == (
        "A1<|im_end|><think>\n\n</think>\n\nA2<|im_end|>"
    )


def test_conversations_that_cannot_be_trained_are_refused() -> None:
    tok = char_tokenizer_with(qwen2_5_chat_template)
    with pytest.raises(ConversationError, match="no assistant turn"):
        encode_conversation(tok, CHAT[:2])
    counting = char_tokenizer_with(
        "{{ messages | length }}{% for m in messages %}{{ m['content'] }}<|im_end|>{% endfor %}"
    )
    with pytest.raises(ConversationError, match="before message 2"):
        encode_conversation(counting, CHAT)
