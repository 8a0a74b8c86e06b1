"""Prompt dataset: jsonl/parquet rows -> tokenized `Sample`s, served in seeded per-epoch order with a cursor.

The whole file is read and tokenized when the dataset is built, so every malformed row is reported before
the run starts and over-long prompts are dropped up front (as Miles does with `rollout_max_prompt_len`).
Order: epoch e is the permutation `random.Random(seed + e)` gives (identity when shuffle is off); the cursor
(epoch, offset) is the whole iteration state, so `state_dict()` / `load_state_dict()` make a resumed run see
the same prompts in the same order.
"""

from __future__ import annotations

import copy
import logging
import random
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from transformers import PreTrainedTokenizerFast

from rlpipe.data.conversation import ConversationError, encode_conversation
from rlpipe.data.rows import DatasetError, read_rows
from rlpipe.data.sample import Sample, Status
from rlpipe.data.tokenizer import Prompt, encode_prompt

__all__ = ["DatasetError", "PromptDataset"]

log = logging.getLogger(__name__)


Supervised = tuple[tuple[int, ...], tuple[int, ...], tuple[int, ...]]  # an SftExample, immutable


@dataclass(frozen=True)
class _Row:
    prompt: Prompt
    label: Any
    metadata: dict[str, Any]
    prompt_tokens: tuple[int, ...]
    conversation: Supervised | None = None  # conversations: the whole conversation as supervised tokens


class PromptDataset:
    """Prompts with labels from one file, tokenized, served in batches that run across epochs.

    `input_key` holds a string or a list of {"role", "content"} messages; `label_key` / `metadata_key` (None:
    absent) hold the label and a dict of extras. With `apply_chat_template` the checkpoint's template is applied
    (a string becomes one user message); `max_prompt_len` drops longer prompts (in tokens); `shuffle` / `seed`
    set the per-epoch order; `tools` are listed by the chat template (multi-turn environments' tools).
    `Sample.prompt` keeps the prompt as written; `prompt_tokens` is the templated one.

    With `conversations` (the SFT job) `input_key` holds a whole conversation, assistant turns included: it is kept
    as supervised tokens (`training_sample`, rlpipe.data.conversation), and as a prompt for generation-based eval:
    the messages before the first assistant turn, labelled with the last assistant turn's content unless the row
    has a label (with rollout.env the eval plays the episode, so a tool conversation is evaluated as one).
    """

    def __init__(
        self,
        path: str | Path,
        tokenizer: PreTrainedTokenizerFast,
        input_key: str = "prompt",
        label_key: str | None = "label",
        metadata_key: str | None = "metadata",
        apply_chat_template: bool = True,
        max_prompt_len: int | None = None,
        shuffle: bool = True,
        seed: int = 0,
        tools: list[Any] | None = None,
        conversations: bool = False,
    ) -> None:
        self.path = Path(path)
        self.conversations = conversations
        self.shuffle = shuffle
        self.seed = seed
        self.tools = tools
        self._rows = self._load(tokenizer, input_key, label_key, metadata_key, apply_chat_template, max_prompt_len)
        self.epoch = 0
        self.offset = 0
        self._order = self._permutation(0)

    def __len__(self) -> int:
        return len(self._rows)

    def next_batch(self, n_prompts: int) -> list[Sample]:
        """The next `n_prompts` samples in order, moving into the next epoch (re-shuffled) when one runs out."""
        batch = []
        for _ in range(n_prompts):
            if self.offset == len(self._rows):
                self.epoch, self.offset = self.epoch + 1, 0
                self._order = self._permutation(self.epoch)
            batch.append(self._sample(self._order[self.offset]))
            self.offset += 1
        return batch

    def rows_as_samples(self) -> list[Sample]:
        """Every row once, in file order, without moving the cursor (evaluation, supervised warm-up)."""
        return [self._sample(i) for i in range(len(self._rows))]

    def training_sample(self, sample: Sample) -> Sample:
        """A conversation row's sample as the trainer sees it (SFT): the tokens before the first assistant turn as
        the prompt, the rest as the response, trained on the assistant turns only; nothing to generate."""
        conversation = self._rows[sample.index].conversation
        if conversation is None:
            raise DatasetError(f"{self.path}: rows are prompts, not conversations; build it with conversations=True")
        prompt, response, mask = conversation
        sample.prompt_tokens, sample.response_tokens, sample.loss_mask = list(prompt), list(response), list(mask)
        sample.status = Status.COMPLETED
        return sample

    def state_dict(self) -> dict[str, int]:
        """The cursor; `num_rows` guards against resuming over a different file."""
        return {"epoch": self.epoch, "offset": self.offset, "num_rows": len(self._rows)}

    def load_state_dict(self, state: dict[str, int]) -> None:
        if state["num_rows"] != len(self._rows):
            raise DatasetError(
                f"{self.path}: the saved data cursor is for {state['num_rows']} rows but the file now gives "
                f"{len(self._rows)}; resume with the same dataset (and max_prompt_len) or start fresh"
            )
        self.epoch, self.offset = state["epoch"], state["offset"]
        self._order = self._permutation(self.epoch)

    def _permutation(self, epoch: int) -> list[int]:
        order = list(range(len(self._rows)))
        if self.shuffle:
            random.Random(self.seed + epoch).shuffle(order)
        return order

    def _sample(self, i: int) -> Sample:
        row = self._rows[i]
        # Samples are mutated downstream (rewards, responses): hand out fresh copies of everything mutable.
        return Sample(
            prompt=copy.deepcopy(row.prompt),
            label=copy.deepcopy(row.label),
            metadata=copy.deepcopy(row.metadata),
            index=i,
            prompt_tokens=list(row.prompt_tokens),
        )

    def _load(
        self,
        tok: PreTrainedTokenizerFast,
        input_key: str,
        label_key: str | None,
        metadata_key: str | None,
        apply_chat_template: bool,
        max_prompt_len: int | None,
    ) -> list[_Row]:
        rows, too_long = [], 0
        for line_no, raw in read_rows(self.path):
            prompt = self._field(raw, input_key, line_no)
            where = f"{self.path}:{line_no}"
            conversation = self._conversation(tok, prompt, where) if self.conversations else None
            if conversation is not None:  # the task as posed: the messages before the first assistant turn
                turns = [i for i, m in enumerate(prompt) if m["role"] == "assistant"]
                label = raw[label_key] if label_key is not None and label_key in raw else prompt[turns[-1]]["content"]
                prompt = prompt[: turns[0]]
            else:
                label = self._field(raw, label_key, line_no) if label_key is not None else None
            metadata = raw.get(metadata_key) if metadata_key is not None else None
            _check_prompt(prompt, apply_chat_template, where)
            tokens = encode_prompt(tok, prompt, apply_chat_template, self.tools)
            if max_prompt_len is not None and len(tokens) > max_prompt_len:
                too_long += 1
                continue
            rows.append(_Row(prompt, label, dict(metadata or {}), tuple(tokens), conversation))
        if too_long:
            log.warning("%s: dropped %d prompts longer than %d tokens", self.path, too_long, max_prompt_len)
        if not rows:
            reason = f" (all {too_long} longer than max_prompt_len={max_prompt_len})" if too_long else ""
            raise DatasetError(f"{self.path}: the dataset has no usable rows{reason}")
        return rows

    def _conversation(self, tok: PreTrainedTokenizerFast, messages: Any, where: str) -> Supervised:
        """A row's conversation as (prompt ids, response ids, loss mask), or a DatasetError naming the row."""
        _check_prompt(messages, True, where)
        try:
            prompt, response, mask = encode_conversation(tok, messages, self.tools)
        except ConversationError as err:
            raise DatasetError(f"{where}: {err}") from None
        return tuple(prompt), tuple(response), tuple(mask)

    def _field(self, raw: dict[str, Any], key: str, line_no: int) -> Any:
        if key not in raw:
            raise DatasetError(f"{self.path}:{line_no}: missing key {key!r}; the row has keys {sorted(raw)}")
        return raw[key]


def _check_prompt(prompt: Any, apply_chat_template: bool, where: str) -> None:
    """A prompt is a string, or (with templating on) a list of {"role", "content"} messages."""
    if isinstance(prompt, str):
        return
    is_messages = isinstance(prompt, list) and all(
        isinstance(m, dict) and isinstance(m.get("role"), str) and isinstance(m.get("content"), str) for m in prompt
    )
    if not is_messages or not prompt:
        raise DatasetError(
            f"{where}: a prompt must be a string or a list of role/content messages, got {prompt!r:.200}"
        )
    if not apply_chat_template:
        raise DatasetError(f"{where}: the prompt is a list of chat messages but apply_chat_template is off")
