"""Rows of a prompt file read on demand: a compact index built in one pass, then any rows by position.

For a file too large to hold as Python objects (a million prompts), `PromptDataset(streaming=True)` keeps only this
index: a jsonl file's row byte offsets and line numbers (two int64 arrays, 16 bytes a row), or a parquet file's row
group boundaries. `read(positions)` returns the rows at those positions in the order asked, reading each jsonl line
by seeking to it and each parquet row group touched once, with only the columns asked for. A malformed jsonl row
comes back as its DatasetError (naming file:line) instead of raising, so the caller can skip it and go on.

Parquet has no row-level access: a read decodes every row group its positions fall in (one group at a time, its
memory handed back after). Positions from a shuffled order fall in every group, so each read decodes the columns
of the whole file, and parquet streams slower than jsonl; peak memory grows with the row-group size (bench/
data_scale.py: 1M rows in groups of 65,536 peak under 0.5 GB).
"""

from __future__ import annotations

from array import array
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import numpy as np

from rlpipe.data.rows import DatasetError, parse_jsonl_line, row_format

Read = tuple[int, "dict[str, Any] | DatasetError"]  # (line number from 1, the row or why it cannot be read)


class RowIndex:
    """Where each row of a `.jsonl` / `.parquet` file is; `columns` are the keys a parquet read keeps."""

    def __init__(self, path: Path, columns: Iterable[str]) -> None:
        self.path = path
        self.format = row_format(path)
        if self.format == "parquet":
            self._parquet_index(set(columns))
        else:
            self._jsonl_index()

    def __len__(self) -> int:
        return len(self.lines)

    def read(self, positions: np.ndarray) -> list[Read]:
        """(line number, row or DatasetError) for each position in `positions` (0-based, into this index)."""
        by_place = np.argsort(positions, kind="stable")  # read in file order: sequential disk access
        found: list[Read | None] = [None] * len(positions)
        reader = self._parquet_read if self.format == "parquet" else self._jsonl_read
        for slot, read in zip(by_place.tolist(), reader(positions[by_place]), strict=True):
            found[slot] = read
        return found  # type: ignore[return-value]  # every slot was filled

    # ---------------------------------------------------------------------------------------------- jsonl
    def _jsonl_index(self) -> None:
        """One pass over the file: the byte offset and line number of every non-blank line."""
        offsets, lines = array("q"), array("q")
        position = 0
        with self.path.open("rb") as f:
            for line_no, raw in enumerate(f, start=1):
                if raw.strip():
                    offsets.append(position)
                    lines.append(line_no)
                position += len(raw)
        self.offsets = np.frombuffer(offsets, dtype=np.int64)
        self.lines = np.frombuffer(lines, dtype=np.int64)

    def _jsonl_read(self, positions: np.ndarray) -> list[Read]:
        reads: list[Read] = []
        with self.path.open("rb") as f:
            for offset, line_no in zip(self.offsets[positions].tolist(), self.lines[positions].tolist(), strict=True):
                f.seek(offset)
                try:
                    row = parse_jsonl_line(self.path, line_no, f.readline())
                except DatasetError as err:
                    reads.append((line_no, err))
                    continue
                if row is None:
                    row = DatasetError(f"{self.path}:{line_no}: the line is blank now; the file changed after indexing")
                reads.append((line_no, row))
        return reads

    # -------------------------------------------------------------------------------------------- parquet
    def _parquet_index(self, columns: set[str]) -> None:
        """The footer only: row group sizes and the columns to read (those of `columns` the file has)."""
        import pyarrow.parquet as pq

        try:
            self._file = pq.ParquetFile(self.path)
        except Exception as e:  # pyarrow raises several unrelated types for a corrupt file
            raise DatasetError(f"{self.path}: cannot read parquet file ({e})") from e
        meta = self._file.metadata
        sizes = [meta.row_group(g).num_rows for g in range(meta.num_row_groups)]
        self.group_starts = np.cumsum([0, *sizes], dtype=np.int64)
        self.lines = np.arange(1, meta.num_rows + 1, dtype=np.int64)  # row numbers from 1, as read_rows counts them
        self.columns = [name for name in self._file.schema_arrow.names if name in columns]

    def _parquet_read(self, positions: np.ndarray) -> list[Read]:
        import pyarrow as pa

        groups = np.searchsorted(self.group_starts, positions, side="right") - 1
        reads: list[Read] = []
        for group in np.unique(groups).tolist():
            wanted = positions[groups == group]
            table = self._file.read_row_group(group, columns=self.columns)
            rows = table.take(wanted - self.group_starts[group]).to_pylist()
            reads += zip((wanted + 1).tolist(), rows, strict=True)
            del table
            pa.default_memory_pool().release_unused()  # the decoded row group is gone: hand its memory back
        return reads
