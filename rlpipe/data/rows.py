"""Read dataset rows from jsonl or parquet, with errors that name the file and the line; write jsonl atomically.

Kept apart from `dataset.py` so light callers (the task maker, the SFT warm-up) read rows without importing
transformers.
"""

from __future__ import annotations

import json
import os
import tempfile
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any


class DatasetError(ValueError):
    """A prompt dataset cannot be read: bad file, malformed row, missing key, or no rows."""


def read_rows(path: str | Path) -> Iterator[tuple[int, dict[str, Any]]]:
    """Yield (line number from 1, row dict) for each row of a `.jsonl` or `.parquet` file; blank lines skipped.
    Every row is read: `rlpipe.data.streaming.RowIndex` reads rows on demand instead."""
    path = Path(path)
    yield from _parquet_rows(path) if row_format(path) == "parquet" else _jsonl_rows(path)


def row_format(path: Path) -> str:
    """The format of an existing dataset file, "parquet" or "jsonl"; a DatasetError says why it is neither."""
    if not path.is_file():
        raise DatasetError(f"dataset file {path} does not exist")
    if path.suffix == ".parquet":
        return "parquet"
    if path.suffix in (".jsonl", ".json"):
        return "jsonl"
    raise DatasetError(f"{path}: unsupported dataset format {path.suffix!r}; use .jsonl or .parquet")


def _jsonl_rows(path: Path) -> Iterator[tuple[int, dict[str, Any]]]:
    with path.open("rb") as f:  # decoded line by line, so a bad byte is reported with its line
        for line_no, raw in enumerate(f, start=1):
            row = parse_jsonl_line(path, line_no, raw)
            if row is not None:
                yield line_no, row


def parse_jsonl_line(path: Path, line_no: int, raw: bytes) -> dict[str, Any] | None:
    """One jsonl line as a row dict (None for a blank line), or a DatasetError naming the file and the line."""
    try:
        line = raw.decode("utf-8")
    except UnicodeDecodeError as e:
        raise DatasetError(f"{path}:{line_no}: not UTF-8 text ({e.reason} at byte {e.start})") from e
    if not line.strip():
        return None
    try:
        row = json.loads(line)
    except json.JSONDecodeError as e:
        raise DatasetError(f"{path}:{line_no}: malformed JSON ({e.msg} at column {e.colno})") from e
    if not isinstance(row, dict):
        raise DatasetError(f"{path}:{line_no}: a row must be a JSON object, got {type(row).__name__}")
    return row


def _parquet_rows(path: Path) -> Iterator[tuple[int, dict[str, Any]]]:
    import pyarrow.parquet as pq

    try:
        table = pq.read_table(path)
    except Exception as e:  # pyarrow raises several unrelated types for a corrupt file
        raise DatasetError(f"{path}: cannot read parquet file ({e})") from e
    # Row numbers count from 1 like jsonl lines, so messages read the same for both formats.
    yield from enumerate(table.to_pylist(), start=1)


def write_jsonl_atomic(path: Path, rows: Iterable[dict[str, Any]]) -> None:
    """Write `rows` as jsonl at `path` (whose folder exists): a temporary sibling renamed into place, so a reader
    never sees half a file."""
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            f.writelines(json.dumps(row) + "\n" for row in rows)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
