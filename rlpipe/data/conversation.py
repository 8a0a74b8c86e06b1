"""A chat conversation as supervised tokens: the loss on the assistant's turns only.

`encode_conversation(tok, messages)` renders the whole conversation once with the checkpoint's chat template,
tokenizes it once (so no token is split differently from how the model would see the conversation), and marks a
token trained when its characters lie in an assistant turn: from the end of the generation prompt that opens the
turn up to and including the end-of-turn token (`tok.eos_token`, e.g. Qwen's `<|im_end|>`) the model must learn to
write. What the template adds after that (Qwen's `\\n`) and every other role's tokens are not trained, the same
split as a multi-turn rollout's (rlpipe.rollout.multi_turn): the model is trained on what it would generate.

Where each assistant turn starts is found by rendering the conversation up to it with the generation prompt, where it
ends by the first end-of-turn token after that. The template must render a conversation's beginning the same whatever
follows (Qwen2.5's, Qwen3's and the tiny demo's do; Qwen3's empty think block, written only into the last assistant
turn, lies inside that turn and is trained with it); one that rewrites earlier turns is refused naming the turn.
"""

from __future__ import annotations

from typing import Any

from transformers import PreTrainedTokenizerFast

from rlpipe.data.tokenizer import SftExample

Message = dict[str, Any]


class ConversationError(ValueError):
    """A conversation that cannot be trained on as given (no assistant turn, a template that rewrites turns)."""


def assistant_spans(
    tok: PreTrainedTokenizerFast, messages: list[Message], tools: list[Any] | None = None
) -> tuple[str, list[tuple[int, int]]]:
    """The rendered conversation and the character spans of its assistant turns (their end-of-turn token included)."""
    text = tok.apply_chat_template(messages, tokenize=False, tools=tools)
    spans = []
    for i, message in enumerate(messages):
        if message.get("role") != "assistant":
            continue
        opened = tok.apply_chat_template(messages[:i], tokenize=False, add_generation_prompt=True, tools=tools)
        if not text.startswith(opened):
            raise ConversationError(
                f"the chat template renders the conversation before message {i} (an assistant turn) differently "
                "once more turns follow, so that turn's tokens cannot be located; use a template that renders a "
                "conversation's beginning the same whatever follows"
            )
        stop = text.find(tok.eos_token, len(opened)) if tok.eos_token else -1
        if stop < 0:
            raise ConversationError(f"assistant turn {i} does not end with the end-of-turn token {tok.eos_token!r}")
        spans.append((len(opened), stop + len(tok.eos_token)))
    if not spans:
        raise ConversationError("the conversation has no assistant turn to train on")
    return text, spans


def encode_conversation(
    tok: PreTrainedTokenizerFast, messages: list[Message], tools: list[Any] | None = None
) -> SftExample:
    """(prompt ids, response ids, loss mask): the prompt is everything before the first assistant turn, the response
    the rest, trained (mask 1) on the assistant turns only."""
    text, spans = assistant_spans(tok, messages, tools)
    encoded = tok(text, add_special_tokens=False, return_offsets_mapping=True)
    ids, offsets = encoded["input_ids"], encoded["offset_mapping"]
    trained = [any(start <= s and e <= end for start, end in spans) and e > s for s, e in offsets]
    first = trained.index(True)
    return ids[:first], ids[first:], [int(t) for t in trained[first:]]
