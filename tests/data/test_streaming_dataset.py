"""Batched tokenization and the streaming PromptDataset: the same tokens as one call per prompt, and a streamed
file serves the same rows in the same order as the eagerly loaded one (jsonl and parquet, across epochs, resumed
from a saved cursor); what streaming does with malformed and over-long rows."""

from __future__ import annotations

import json
import logging
import re
import sys
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from rlpipe.data.dataset import DatasetError, PromptDataset
from rlpipe.data.streaming import RowIndex
from rlpipe.data.tiny_model import build_char_tokenizer
from rlpipe.data.tokenizer import encode_prompt, encode_prompts

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "bench"))

from data_scale import build_bpe_tokenizer, synthetic_rows  # the benchmark's stand-in for a hub tokenizer

ROWS = list(synthetic_rows(0, 40))


@pytest.fixture(scope="module")
def bpe():
    return build_bpe_tokenizer([m["content"] for row in synthetic_rows(1000, 200) for m in row["prompt"]], 600)


def _jsonl(path: Path, rows: list[dict], blank_every: int = 0) -> Path:
    lines = [json.dumps(r) + "\n" + ("\n" if blank_every and i % blank_every == 0 else "") for i, r in enumerate(rows)]
    path.write_text("".join(lines))
    return path


def _parquet(path: Path, rows: list[dict], row_group_size: int) -> Path:
    pq.write_table(pa.Table.from_pylist(rows), path, row_group_size=row_group_size)
    return path


def _served(samples) -> list[tuple]:
    return [(s.index, s.prompt, s.label, s.metadata, s.prompt_tokens) for s in samples]


def test_batched_tokens_equal_one_call_per_prompt(bpe) -> None:
    prompts = [row["prompt"] for row in ROWS] + ["a plain string prompt", "  spaces\tand\nnewlines  ", "ünïcödé"]
    assert encode_prompts(bpe, prompts, True) == [encode_prompt(bpe, p, True) for p in prompts]
    strings = [p for p in prompts if isinstance(p, str)]
    assert encode_prompts(bpe, strings, False) == [bpe.encode(p, add_special_tokens=False) for p in strings]
    text = bpe.apply_chat_template(ROWS[0]["prompt"], add_generation_prompt=True, tokenize=False)
    assert encode_prompt(bpe, ROWS[0]["prompt"], True) == bpe.encode(text, add_special_tokens=False)
    assert encode_prompts(bpe, [], True) == []


def test_eager_dataset_tokens_equal_one_call_per_row(tmp_path: Path, bpe) -> None:
    ds = PromptDataset(_jsonl(tmp_path / "d.jsonl", ROWS), bpe, shuffle=False)
    assert [s.prompt_tokens for s in ds.rows_as_samples()] == [encode_prompt(bpe, r["prompt"], True) for r in ROWS]


@pytest.mark.parametrize("kind", ["jsonl", "parquet"])
def test_streaming_serves_what_eager_serves(tmp_path: Path, bpe, kind: str, monkeypatch) -> None:
    monkeypatch.setattr("rlpipe.data.dataset.STREAM_CHUNK", 7)  # several read-ahead chunks per epoch
    path = _jsonl(tmp_path / "d.jsonl", ROWS, blank_every=5) if kind == "jsonl" else _parquet(
        tmp_path / "d.parquet", ROWS, row_group_size=6
    )  # fmt: skip
    eager = PromptDataset(path, bpe, seed=4)
    streamed = PromptDataset(path, bpe, seed=4, streaming=True)
    assert len(streamed) == len(eager) == len(ROWS)
    sizes = [3, 17, 40, 1, 25]  # 86 prompts: three epochs, batches across their boundaries
    assert [_served(streamed.next_batch(n)) for n in sizes] == [_served(eager.next_batch(n)) for n in sizes]
    assert streamed.state_dict() == eager.state_dict() == {"epoch": 2, "offset": 6, "num_rows": len(ROWS)}
    assert _served(streamed.rows_as_samples()) == _served(eager.rows_as_samples())
    assert streamed.state_dict()["offset"] == 6  # rows_as_samples leaves the cursor where it was


@pytest.mark.parametrize("kind", ["jsonl", "parquet"])
def test_streaming_resumes_from_a_saved_cursor(tmp_path: Path, bpe, kind: str, monkeypatch) -> None:
    monkeypatch.setattr("rlpipe.data.dataset.STREAM_CHUNK", 8)
    path = _jsonl(tmp_path / "d.jsonl", ROWS) if kind == "jsonl" else _parquet(tmp_path / "d.parquet", ROWS, 16)
    for taken in (13, 40, 45):  # mid-epoch, exactly at the epoch boundary, just past it
        first = PromptDataset(path, bpe, seed=9, streaming=True)
        first.next_batch(taken)
        state = json.loads(json.dumps(first.state_dict()))
        resumed = PromptDataset(path, bpe, seed=9, streaming=True)
        resumed.load_state_dict(state)
        eager = PromptDataset(path, bpe, seed=9)
        eager.load_state_dict(state)  # the cursors are interchangeable when no row is dropped
        expected = _served(first.next_batch(50))
        assert _served(resumed.next_batch(50)) == expected == _served(eager.next_batch(50))


def test_streaming_unshuffled_is_file_order(tmp_path: Path, bpe) -> None:
    ds = PromptDataset(_jsonl(tmp_path / "d.jsonl", ROWS[:5]), bpe, shuffle=False, streaming=True)
    assert [s.label for s in ds.next_batch(7)] == [r["label"] for r in ROWS[:5] + ROWS[:2]]


class _Records(logging.Handler):
    """The dataset's log messages (pytest's caplog is off under `-p no:logging`)."""

    def __init__(self) -> None:
        super().__init__(logging.WARNING)
        self.messages: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.messages.append(record.getMessage())


def test_streaming_skips_malformed_and_long_rows_naming_file_and_line(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.setattr("rlpipe.data.dataset.STREAM_CHUNK", 1)  # rows are counted as read: read none ahead
    tok = build_char_tokenizer()
    path = tmp_path / "d.jsonl"
    good = [json.dumps({"prompt": f"r{i}", "label": str(i)}) for i in range(4)]
    lines = [good[0], good[1], '{"prompt": "r9", ', json.dumps({"label": "7"}), good[2], "", good[3]]
    lines.append(json.dumps({"prompt": "r" + "1" * 40, "label": "long"}))  # 48 tokens templated
    path.write_text("\n".join(lines) + "\n")
    logger, records = logging.getLogger("rlpipe.data.dataset"), _Records()
    logger.addHandler(records)
    try:
        ds = PromptDataset(path, tok, metadata_key=None, max_prompt_len=20, shuffle=False, streaming=True)
        labels = [s.label for s in ds.next_batch(6)]
    finally:
        logger.removeHandler(records)
    assert labels == ["0", "1", "2", "3", "0", "1"]
    assert len(ds) == 7 and ds.state_dict() == {"epoch": 1, "offset": 2, "num_rows": 7}
    assert ds.skipped == {"malformed": 2, "too_long": 1}
    messages = "\n".join(records.messages)
    assert f"{path}:3: malformed JSON" in messages and f"{path}:4: missing key 'prompt'" in messages
    assert "skipped 1 prompts longer than 20 tokens" in messages


def test_streaming_checks_the_first_row_and_refuses_what_it_cannot_serve(tmp_path: Path) -> None:
    tok = build_char_tokenizer()
    wrong_key = _jsonl(tmp_path / "q.jsonl", [{"question": "r1", "label": "1"}])
    with pytest.raises(DatasetError, match=rf"{re.escape(str(wrong_key))}:1: missing key 'prompt'"):
        PromptDataset(wrong_key, tok, streaming=True)
    columns = _parquet(tmp_path / "q.parquet", [{"question": "r1", "label": "1"}], 1)
    with pytest.raises(DatasetError, match=rf"{re.escape(str(columns))}:1: missing key 'prompt'"):
        PromptDataset(columns, tok, streaming=True)
    blank = tmp_path / "blank.jsonl"
    blank.write_text("\n \n")
    with pytest.raises(DatasetError, match="no usable rows"):
        PromptDataset(blank, tok, streaming=True)
    short = [{"prompt": "r1", "label": "1"}, {"prompt": "r12345", "label": "2"}]
    all_long = PromptDataset(_jsonl(tmp_path / "l.jsonl", short), tok, max_prompt_len=3, streaming=True)
    with pytest.raises(DatasetError, match="no usable rows"):  # a whole epoch skipped: no endless loop
        all_long.next_batch(1)
    conversations = _jsonl(tmp_path / "c.jsonl", [{"prompt": [{"role": "user", "content": "1"}]}])
    with pytest.raises(DatasetError, match=r"conversations \(the SFT job\) are not streamed"):
        PromptDataset(conversations, tok, conversations=True, streaming=True)
    with pytest.raises(DatasetError, match="does not exist"):
        PromptDataset(tmp_path / "nope.jsonl", tok, streaming=True)


def test_row_index_reads_rows_in_the_order_asked(tmp_path: Path) -> None:
    import numpy as np

    rows = [{"prompt": f"r{i}", "n": i} for i in range(10)]
    for path in (_jsonl(tmp_path / "d.jsonl", rows, blank_every=3), _parquet(tmp_path / "d.parquet", rows, 4)):
        index = RowIndex(path, ["prompt", "n"])
        assert len(index) == 10
        reads = index.read(np.array([7, 0, 9, 3, 7]))
        assert [row["n"] for _, row in reads] == [7, 0, 9, 3, 7]
    assert [line for line, _ in RowIndex(tmp_path / "d.jsonl", []).read(np.array([0, 1, 3]))] == [1, 3, 5]
