"""PromptDataset: jsonl and parquet, messages vs strings, templating, seeded epochs, resume, and errors."""

from __future__ import annotations

import json
import random
import re
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from rlpipe.data.dataset import DatasetError, PromptDataset
from rlpipe.data.tiny_model import TinyModelSpec, build_tiny_checkpoint
from rlpipe.data.tokenizer import load_tokenizer

ROWS = [
    {"prompt": [{"role": "user", "content": f"r{i:03d}"}], "label": f"{i:03d}"[::-1], "metadata": {"k": i}}
    for i in range(10)
]


@pytest.fixture(scope="module")
def tok(tmp_path_factory: pytest.TempPathFactory):
    return load_tokenizer(build_tiny_checkpoint(tmp_path_factory.mktemp("tiny") / "model", TinyModelSpec()))


def _jsonl(path: Path, rows: list[dict]) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def _ids(tok, text: str) -> list[int]:
    return tok.encode(text, add_special_tokens=False)


def test_jsonl_messages_are_templated(tmp_path: Path, tok) -> None:
    ds = PromptDataset(_jsonl(tmp_path / "d.jsonl", ROWS), tok, shuffle=False)
    assert len(ds) == 10
    s = ds.next_batch(1)[0]
    assert s.prompt == [{"role": "user", "content": "r000"}]
    assert s.label == "000" and s.metadata == {"k": 0}
    assert s.prompt_tokens == _ids(tok, "<s>u:r000a:")


def test_string_prompts_with_and_without_template(tmp_path: Path, tok) -> None:
    path = _jsonl(tmp_path / "s.jsonl", [{"text": "r123", "answer": "321"}])
    templated = PromptDataset(path, tok, input_key="text", label_key="answer", metadata_key=None, shuffle=False)
    plain = PromptDataset(path, tok, "text", "answer", None, apply_chat_template=False, shuffle=False)
    assert templated.next_batch(1)[0].prompt_tokens == _ids(tok, "<s>u:r123a:")
    sample = plain.next_batch(1)[0]
    assert sample.prompt_tokens == _ids(tok, "r123") and sample.label == "321" and sample.metadata == {}


def test_parquet_matches_jsonl(tmp_path: Path, tok) -> None:
    jsonl = _jsonl(tmp_path / "d.jsonl", ROWS)
    parquet = tmp_path / "d.parquet"
    pq.write_table(pa.Table.from_pylist(ROWS), parquet)
    a = PromptDataset(jsonl, tok, seed=3).next_batch(10)
    b = PromptDataset(parquet, tok, seed=3).next_batch(10)
    assert [(s.prompt, s.label, s.metadata, s.prompt_tokens) for s in a] == [
        (s.prompt, s.label, s.metadata, s.prompt_tokens) for s in b
    ]


def test_epochs_are_seeded_permutations(tmp_path: Path, tok) -> None:
    path = _jsonl(tmp_path / "d.jsonl", ROWS)
    ds = PromptDataset(path, tok, seed=5)
    labels = [s.label for s in ds.next_batch(30)]
    epochs = [labels[0:10], labels[10:20], labels[20:30]]
    for e, epoch in enumerate(epochs):
        assert sorted(epoch) == sorted(r["label"] for r in ROWS)
        expected = list(range(10))
        random.Random(5 + e).shuffle(expected)  # the documented rule: epoch e uses seed + e
        assert epoch == [ROWS[i]["label"] for i in expected]
    assert epochs[0] != epochs[1]
    assert [s.label for s in PromptDataset(path, tok, seed=5).next_batch(30)] == labels
    assert [s.label for s in PromptDataset(path, tok, shuffle=False).next_batch(12)] == [
        r["label"] for r in ROWS + ROWS[:2]
    ]


def test_resume_from_state_dict_sees_the_same_order(tmp_path: Path, tok) -> None:
    path = _jsonl(tmp_path / "d.jsonl", ROWS)
    first = PromptDataset(path, tok, seed=11)
    for _ in range(7):  # 21 prompts: into the third epoch
        first.next_batch(3)
    state = first.state_dict()
    assert state == {"epoch": 2, "offset": 1, "num_rows": 10}
    resumed = PromptDataset(path, tok, seed=11)
    resumed.load_state_dict(json.loads(json.dumps(state)))
    assert [s.label for s in resumed.next_batch(25)] == [s.label for s in first.next_batch(25)]
    shorter = PromptDataset(_jsonl(tmp_path / "short.jsonl", ROWS[:4]), tok)
    with pytest.raises(DatasetError, match="10 rows but the file now gives 4"):
        shorter.load_state_dict(state)


def test_samples_are_independent_copies(tmp_path: Path, tok) -> None:
    ds = PromptDataset(_jsonl(tmp_path / "d.jsonl", ROWS[:1]), tok)
    a = ds.next_batch(1)[0]
    a.metadata["k"] = "changed"
    a.prompt[0]["content"] = "changed"
    a.prompt_tokens.append(0)
    b = ds.next_batch(1)[0]
    assert b.metadata == {"k": 0} and b.prompt[0]["content"] == "r000"
    assert b.prompt_tokens == _ids(tok, "<s>u:r000a:")


def test_max_prompt_len_drops_long_prompts(tmp_path: Path, tok) -> None:
    rows = [{"prompt": "r1", "label": "1"}, {"prompt": "r12345", "label": "54321"}]
    path = _jsonl(tmp_path / "d.jsonl", rows)
    ds = PromptDataset(path, tok, metadata_key=None, max_prompt_len=7, shuffle=False)
    assert len(ds) == 1 and ds.next_batch(1)[0].label == "1"  # "<s>u:r1a:" is 7 tokens
    with pytest.raises(DatasetError, match=r"all 2 longer than max_prompt_len=3"):
        PromptDataset(path, tok, max_prompt_len=3)


def test_malformed_line_names_file_and_line(tmp_path: Path, tok) -> None:
    path = tmp_path / "bad.jsonl"
    path.write_text(json.dumps(ROWS[0]) + "\n\n" + '{"prompt": "r1", "label": \n')
    with pytest.raises(DatasetError, match=rf"{re.escape(str(path))}:3: malformed JSON"):
        PromptDataset(path, tok)


def test_missing_key_names_key_file_line_and_present_keys(tmp_path: Path, tok) -> None:
    path = _jsonl(tmp_path / "d.jsonl", [ROWS[0], {"question": "r1", "label": "1"}])
    with pytest.raises(
        DatasetError, match=rf"{re.escape(str(path))}:2: missing key 'prompt'; the row has keys \['label', 'question'\]"
    ):
        PromptDataset(path, tok)
    with pytest.raises(DatasetError, match=rf"{re.escape(str(path))}:1: missing key 'answer'"):
        PromptDataset(path, tok, label_key="answer")


def test_bad_prompts_and_files(tmp_path: Path, tok) -> None:
    messages = _jsonl(tmp_path / "m.jsonl", ROWS[:1])
    with pytest.raises(DatasetError, match=rf"{re.escape(str(messages))}:1: .*apply_chat_template is off"):
        PromptDataset(messages, tok, apply_chat_template=False)
    wrong = _jsonl(tmp_path / "w.jsonl", [{"prompt": 5, "label": "5"}])
    with pytest.raises(DatasetError, match=rf"{re.escape(str(wrong))}:1: a prompt must be a string"):
        PromptDataset(wrong, tok)
    empty = tmp_path / "empty.jsonl"
    empty.write_text("\n")
    with pytest.raises(DatasetError, match="no usable rows"):
        PromptDataset(empty, tok)
    with pytest.raises(DatasetError, match="does not exist"):
        PromptDataset(tmp_path / "nope.jsonl", tok)
    with pytest.raises(DatasetError, match=r"unsupported dataset format '\.csv'"):
        PromptDataset(_jsonl(tmp_path / "d.csv", ROWS), tok)
