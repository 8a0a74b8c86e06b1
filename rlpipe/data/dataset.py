"""Prompt dataset: jsonl/parquet rows -> tokenized `Sample`s, served in seeded per-epoch order with a cursor.

Rows are templated and tokenized many at a time (`encode_prompts`: one batched call of the fast tokenizer), and the
file is held one of two ways:
- eager (the default): the whole file is read and tokenized when the dataset is built, so every malformed row is
  reported before the run starts and over-long prompts are dropped up front (as Miles does with
  `rollout_max_prompt_len`).
- streaming (`streaming=True`; config `rollout.stream_prompt_data`), for files too large to hold as Python objects
  (a million prompts): only a compact index is kept (`rlpipe.data.streaming.RowIndex`, 16 bytes a jsonl row), and
  rows are read, templated and tokenized `STREAM_CHUNK` at a time, in the order the cursor reaches them. The first
  row is checked when the dataset is built (a wrong `input_key` fails at once, naming file:line and the row's keys);
  a malformed row or an over-long prompt met later is skipped where it falls, and the batch is filled from the rows
  after it. Skips are counted in `skipped` as rows are read (a chunk ahead of the cursor, again each epoch); the first
  `LOGGED_SKIPS` malformed rows are logged with their file:line, over-long prompts summed up per chunk. `len()`
  counts every indexed row. Conversations (the SFT job) are not streamed.
Order: epoch e is the permutation `random.Random(seed + e)` gives (identity when shuffle is off); the cursor
(epoch, offset) is the whole iteration state, so `state_dict()` / `load_state_dict()` make a resumed run see
the same prompts in the same order. Eager permutes the rows it kept, streaming every row (skipping drops where they
fall), so both serve the same rows in the same order when no row is dropped.
"""

from __future__ import annotations

import copy
import logging
import random
from array import array
from collections.abc import Iterable
from dataclasses import dataclass
from itertools import islice
from pathlib import Path
from typing import Any

import numpy as np
from transformers import PreTrainedTokenizerFast

from rlpipe.data.conversation import ConversationError, encode_conversation
from rlpipe.data.rows import DatasetError, read_rows
from rlpipe.data.sample import Sample, Status
from rlpipe.data.streaming import Read, RowIndex
from rlpipe.data.tokenizer import Prompt, encode_prompts

__all__ = ["DatasetError", "PromptDataset"]

log = logging.getLogger(__name__)


Supervised = tuple[tuple[int, ...], tuple[int, ...], tuple[int, ...]]  # an SftExample, immutable


@dataclass(frozen=True)
class _Row:
    prompt: Prompt
    label: Any
    metadata: dict[str, Any]
    conversation: Supervised | None  # conversations: the whole conversation as supervised tokens
    prompt_tokens: array[int]  # int32 ids: 4 bytes a token where a tuple of ints takes ~36


_Fields = tuple[Prompt, Any, dict[str, Any], Supervised | None]  # a parsed row, before tokenizing: _Row's fields

ENCODE_BATCH = 1024  # eager: rows read, templated and tokenized per batched tokenizer call
STREAM_CHUNK = 8192  # streaming: rows read ahead in cursor order (bounds memory; amortizes reads and tokenizer calls)
LOGGED_SKIPS = 10  # streaming: malformed rows logged one by one; later ones are only counted


class PromptDataset:
    """Prompts with labels from one file, tokenized, served in batches that run across epochs.

    `input_key` holds a string or a list of {"role", "content"} messages; `label_key` / `metadata_key` (None:
    absent) hold the label and a dict of extras. With `apply_chat_template` the checkpoint's template is applied
    (a string becomes one user message); `max_prompt_len` drops longer prompts (in tokens); `shuffle` / `seed`
    set the per-epoch order; `tools` are listed by the chat template (multi-turn environments' tools).
    `Sample.prompt` keeps the prompt as written; `prompt_tokens` is the templated one. `streaming` reads the file
    on demand instead of up front (module docstring).

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
        streaming: bool = False,
    ) -> None:
        self.path = Path(path)
        self.conversations = conversations
        self.shuffle = shuffle
        self.seed = seed
        self.tools = tools
        self._tok = tokenizer
        self._keys = (input_key, label_key, metadata_key)
        self._template = apply_chat_template
        self._max_len = max_prompt_len
        self.skipped = {"malformed": 0, "too_long": 0}  # rows dropped so far (streaming: as rows are read)
        self._rows: list[_Row] = []
        self._index: RowIndex | None = None
        self._chunk: list[_Row | None] = []  # streaming: the rows at cursor positions [_chunk_start, + len)
        self._chunk_start = 0
        if streaming:
            self._open_index()
        else:
            self._rows = self._load()
        self.epoch = 0
        self.offset = 0
        self._order = self._permutation(0)

    def __len__(self) -> int:
        return len(self._index) if self._index is not None else len(self._rows)

    def next_batch(self, n_prompts: int) -> list[Sample]:
        """The next `n_prompts` samples in order, moving into the next epoch (re-shuffled) when one runs out."""
        batch: list[Sample] = []
        dropped_in_a_row = 0
        while len(batch) < n_prompts:
            if self.offset == len(self):
                self._start_epoch(self.epoch + 1, 0)
            index, row = self._row_at(self.offset)
            self.offset += 1
            if row is not None:
                batch.append(self._sample(row, index))
                dropped_in_a_row = 0
            elif (dropped_in_a_row := dropped_in_a_row + 1) == len(self):
                raise DatasetError(
                    f"{self.path}: the dataset has no usable rows (every row was skipped: {self.skipped})"
                )
        return batch

    def rows_as_samples(self) -> list[Sample]:
        """Every row once, in file order, without moving the cursor (evaluation, supervised warm-up)."""
        if self._index is None:
            return [self._sample(row, i) for i, row in enumerate(self._rows)]
        samples = []
        for start in range(0, len(self), STREAM_CHUNK):
            positions = np.arange(start, min(start + STREAM_CHUNK, len(self)))
            rows = zip(positions.tolist(), self._stream_rows(positions), strict=True)
            samples += [self._sample(row, i) for i, row in rows if row is not None]
        return samples

    def training_sample(self, sample: Sample) -> Sample:
        """A conversation row's sample as the trainer sees it (SFT): the tokens before the first assistant turn as
        the prompt, the rest as the response, trained on the assistant turns only; nothing to generate."""
        conversation = self._rows[sample.index].conversation if self._index is None else None
        if conversation is None:
            raise DatasetError(f"{self.path}: rows are prompts, not conversations; build it with conversations=True")
        prompt, response, mask = conversation
        sample.prompt_tokens, sample.response_tokens, sample.loss_mask = list(prompt), list(response), list(mask)
        sample.status = Status.COMPLETED
        return sample

    def state_dict(self) -> dict[str, int]:
        """The cursor; `num_rows` guards against resuming over a different file."""
        return {"epoch": self.epoch, "offset": self.offset, "num_rows": len(self)}

    def load_state_dict(self, state: dict[str, int]) -> None:
        if state["num_rows"] != len(self):
            raise DatasetError(
                f"{self.path}: the saved data cursor is for {state['num_rows']} rows but the file now gives "
                f"{len(self)}; resume with the same dataset (and max_prompt_len) or start fresh"
            )
        self._start_epoch(state["epoch"], state["offset"])

    def _start_epoch(self, epoch: int, offset: int) -> None:
        self.epoch, self.offset = epoch, offset
        self._order = self._permutation(epoch)
        self._chunk = []  # read ahead for another epoch's order

    def _permutation(self, epoch: int) -> np.ndarray:
        """Epoch `epoch`'s order of row indices; shuffled by Python's `random` (the rule resumed runs rely on)."""
        if not self.shuffle:
            return np.arange(len(self))
        order = list(range(len(self)))
        random.Random(self.seed + epoch).shuffle(order)
        return np.array(order, dtype=np.int64)

    def _row_at(self, position: int) -> tuple[int, _Row | None]:
        """(row index, row) at cursor position `position` of this epoch; streaming reads STREAM_CHUNK ahead."""
        index = int(self._order[position])
        if self._index is None:
            return index, self._rows[index]
        if not self._chunk_start <= position < self._chunk_start + len(self._chunk):
            self._chunk_start = position
            self._chunk = self._stream_rows(self._order[position : position + STREAM_CHUNK])
        return index, self._chunk[position - self._chunk_start]

    def _sample(self, row: _Row, index: int) -> Sample:
        # Samples are mutated downstream (rewards, responses): hand out fresh copies of everything mutable.
        return Sample(
            prompt=copy.deepcopy(row.prompt),
            label=copy.deepcopy(row.label),
            metadata=copy.deepcopy(row.metadata),
            index=index,
            prompt_tokens=list(row.prompt_tokens),
        )

    def _load(self) -> list[_Row]:
        """Eager: every row, read and tokenized ENCODE_BATCH at a time; a malformed row raises, long ones drop."""
        rows: list[_Row] = []
        reads = read_rows(self.path)
        while chunk := list(islice(reads, ENCODE_BATCH)):
            rows += [row for row in self._encode(chunk, strict=True) if row is not None]
        too_long = self.skipped["too_long"]
        if too_long:
            log.warning("%s: dropped %d prompts longer than %d tokens", self.path, too_long, self._max_len)
        if not rows:
            reason = f" (all {too_long} longer than max_prompt_len={self._max_len})" if too_long else ""
            raise DatasetError(f"{self.path}: the dataset has no usable rows{reason}")
        return rows

    def _open_index(self) -> None:
        """Streaming: index the file, and check its first row strictly, so a wrong key or template fails now."""
        if self.conversations:
            raise DatasetError(f"{self.path}: conversations (the SFT job) are not streamed; load them eagerly")
        self._index = RowIndex(self.path, [key for key in self._keys if key is not None])
        if not len(self._index):
            raise DatasetError(f"{self.path}: the dataset has no usable rows")
        line_no, raw = self._index.read(np.zeros(1, dtype=np.int64))[0]
        if isinstance(raw, DatasetError):
            raise raw
        encode_prompts(self._tok, [self._parse(raw, line_no)[0]], self._template, self.tools)

    def _stream_rows(self, positions: np.ndarray) -> list[_Row | None]:
        """Streaming: the rows at these row indices, in that order; None where one is skipped."""
        assert self._index is not None
        too_long = self.skipped["too_long"]
        rows = self._encode(self._index.read(positions), strict=False)
        if self.skipped["too_long"] > too_long:
            log.warning(
                "%s: skipped %d prompts longer than %d tokens in the next %d rows (%d so far)", self.path,
                self.skipped["too_long"] - too_long, self._max_len, len(positions), self.skipped["too_long"],
            )  # fmt: skip
        return rows

    def _encode(self, reads: Iterable[Read], strict: bool) -> list[_Row | None]:
        """Rows read from the file as `_Row`s, all templated and tokenized in one batched call; None for a prompt
        over max_prompt_len and (unless `strict`, which raises) for a malformed row."""
        parsed = [self._parse_or_skip(line_no, raw, strict) for line_no, raw in reads]
        prompts = [fields[0] for fields in parsed if fields is not None]
        tokens = iter(encode_prompts(self._tok, prompts, self._template, self.tools))
        rows: list[_Row | None] = []
        for fields in parsed:
            ids = next(tokens) if fields is not None else None
            if ids is not None and self._max_len is not None and len(ids) > self._max_len:
                self.skipped["too_long"] += 1
                ids = None
            rows.append(None if fields is None or ids is None else _Row(*fields, prompt_tokens=array("i", ids)))
        return rows

    def _parse_or_skip(self, line_no: int, raw: dict[str, Any] | DatasetError, strict: bool) -> _Fields | None:
        try:
            if isinstance(raw, DatasetError):
                raise raw
            return self._parse(raw, line_no)
        except DatasetError as err:
            if strict:
                raise
            self.skipped["malformed"] += 1
            if self.skipped["malformed"] <= LOGGED_SKIPS:
                log.warning("skipped a row: %s", err)
            elif self.skipped["malformed"] == LOGGED_SKIPS + 1:
                log.warning(
                    "%s: more malformed rows; skipped without a message each (PromptDataset.skipped)", self.path
                )
            return None

    def _parse(self, raw: dict[str, Any], line_no: int) -> _Fields:
        """(prompt, label, metadata, conversation) of one row, or a DatasetError naming file:line."""
        input_key, label_key, metadata_key = self._keys
        prompt = self._field(raw, input_key, line_no)
        where = f"{self.path}:{line_no}"
        conversation = self._conversation(prompt, where) if self.conversations else None
        if conversation is not None:  # the task as posed: the messages before the first assistant turn
            turns = [i for i, m in enumerate(prompt) if m["role"] == "assistant"]
            label = raw[label_key] if label_key is not None and label_key in raw else prompt[turns[-1]]["content"]
            prompt = prompt[: turns[0]]
        else:
            label = self._field(raw, label_key, line_no) if label_key is not None else None
        metadata = raw.get(metadata_key) if metadata_key is not None else None
        _check_prompt(prompt, self._template, where)
        return prompt, label, dict(metadata or {}), conversation

    def _conversation(self, messages: Any, where: str) -> Supervised:
        """A row's conversation as (prompt ids, response ids, loss mask), or a DatasetError naming the row."""
        _check_prompt(messages, True, where)
        try:
            prompt, response, mask = encode_conversation(self._tok, messages, self.tools)
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
