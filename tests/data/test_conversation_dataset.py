"""The SFT job's data: conversation rows as supervised samples (the loss on every assistant turn, observations and
user turns masked) and as prompts for generation-based eval; the demo's tool conversations; bad rows named."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from rlpipe.data.conversation import encode_conversation
from rlpipe.data.dataset import DatasetError, PromptDataset
from rlpipe.data.tasks import write_task_dataset
from rlpipe.data.tiny_model import build_char_tokenizer
from rlpipe.data.tokenizer import encode_prompt
from rlpipe.rollout.tool_calls import tool_call_text


def _jsonl(path: Path, rows: list[dict]) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def _trained_text(tok, sample) -> str:
    return tok.decode([t for t, m in zip(sample.response_tokens, sample.loss_mask, strict=True) if m])


def test_a_multi_turn_conversation_trains_every_assistant_turn_and_nothing_else(tmp_path: Path) -> None:
    tok = build_char_tokenizer()
    messages = [
        {"role": "user", "content": "12"},
        {"role": "assistant", "content": "21"},
        {"role": "user", "content": "345"},
        {"role": "assistant", "content": "543"},
    ]
    ds = PromptDataset(_jsonl(tmp_path / "c.jsonl", [{"messages": messages}]), tok, input_key="messages",
                       label_key=None, shuffle=False, conversations=True)  # fmt: skip
    sample = ds.training_sample(ds.next_batch(1)[0])
    assert (sample.prompt_tokens, sample.response_tokens, sample.loss_mask) == encode_conversation(tok, messages)
    assert tok.decode(sample.response_tokens) == "21</s>u:345a:543</s>"
    assert _trained_text(tok, sample) == "21</s>543</s>"  # the user's second turn is in the response, masked
    # for generation-based eval: the task as posed, labelled with the final answer
    prompt_only = ds.rows_as_samples()[0]
    assert prompt_only.prompt == messages[:1] and prompt_only.label == "543"
    assert prompt_only.prompt_tokens == encode_prompt(tok, messages[:1], apply_chat_template=True)


def test_the_demo_tool_conversations_mask_the_calculator_s_reply(tmp_path: Path) -> None:
    tok = build_char_tokenizer(tool_vocab=True)
    train, _ = write_task_dataset(tmp_path, "add", n_train=4, n_eval=1, digits=5, tools=True, conversations=True)
    ds = PromptDataset(train, tok, input_key="messages", shuffle=False, conversations=True)
    for row, sample in zip(train.read_text().splitlines(), ds.rows_as_samples(), strict=True):
        messages = json.loads(row)["messages"]
        user, call, reply, answer = (m["content"] for m in messages)
        assert call == tool_call_text("calculator", {"expression": user.rstrip("=")})
        a, b = user.rstrip("=").split("+")
        assert reply == answer == str(int(a) + int(b))  # the calculator's reply is the sum
        trained = ds.training_sample(sample)
        assert _trained_text(tok, trained) == f"{call}</s>{answer}</s>"
        assert sample.label == answer and sample.prompt == messages[:1]


def test_rows_that_are_not_trainable_conversations_are_named(tmp_path: Path) -> None:
    tok = build_char_tokenizer()
    rows = [{"messages": [{"role": "user", "content": "1"}, {"role": "assistant", "content": "1"}]},
            {"messages": [{"role": "user", "content": "12"}]}]  # fmt: skip
    with pytest.raises(DatasetError, match=r"c\.jsonl:2: the conversation has no assistant turn"):
        PromptDataset(_jsonl(tmp_path / "c.jsonl", rows), tok, input_key="messages", conversations=True)
    with pytest.raises(DatasetError, match="rows are prompts, not conversations"):
        prompts = PromptDataset(_jsonl(tmp_path / "p.jsonl", [{"prompt": "1", "label": "1"}]), tok)
        prompts.training_sample(prompts.next_batch(1)[0])
