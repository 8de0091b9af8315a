"""Training rows read a chunk at a time, from memory or from a float32 file on disk.

Training memory should not grow with the number of logged decisions: the streamed
learner (`training/pairwise.py`) and the metrics read the encoded rows through
`RowSource.chunks()`, so only one chunk of the matrix is resident. `RowFile` keeps the
matrix in a raw float32 file and reads it with `readinto` into one reused buffer, not
`mmap`: the operating system's page cache may keep the file (that memory is reclaimable
and not the process's RSS), the process holds one chunk. The labels stay in memory, one
value per row, as vectors the size of the row count are small next to the matrix.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Protocol

import numpy as np

#: rows per chunk: the part of the matrix held at a time
CHUNK_ROWS = 65_536


class RowSource(Protocol):
    """Encoded rows and their labels, in a fixed order, one chunk at a time."""

    @property
    def n_rows(self) -> int: ...

    @property
    def n_columns(self) -> int: ...

    @property
    def y(self) -> np.ndarray: ...

    def chunks(self) -> Iterator[tuple[np.ndarray, np.ndarray]]:
        """(X chunk as float32 [m, n_columns], y chunk [m]), each row exactly once; the
        chunk may be a reused buffer, valid until the next one."""
        ...


class ArrayRows:
    """Rows already in memory (a small set, or a learner that needs them all)."""

    def __init__(self, X: np.ndarray, y: np.ndarray, chunk_rows: int = CHUNK_ROWS) -> None:
        if X.ndim != 2 or len(X) != len(y):
            raise ValueError(f"X {X.shape} and y {np.shape(y)} do not describe the same rows")
        self.X, self._y, self.chunk_rows = X, np.asarray(y), chunk_rows

    @property
    def n_rows(self) -> int:
        return len(self.X)

    @property
    def n_columns(self) -> int:
        return int(self.X.shape[1])

    @property
    def y(self) -> np.ndarray:
        return self._y

    def chunks(self) -> Iterator[tuple[np.ndarray, np.ndarray]]:
        for start in range(0, self.n_rows, self.chunk_rows):
            stop = start + self.chunk_rows
            yield np.asarray(self.X[start:stop], dtype=np.float32), self._y[start:stop]


class RowFile:
    """A float32 row-major matrix in a file, appended chunk by chunk, read chunk by chunk."""

    def __init__(self, path: Path, n_columns: int, chunk_rows: int = CHUNK_ROWS) -> None:
        self.path, self._n_columns, self.chunk_rows = Path(path), n_columns, chunk_rows
        self._labels: list[np.ndarray] = []
        self._y: np.ndarray | None = None
        self._n_rows = 0
        self.path.write_bytes(b"")

    def append(self, X: np.ndarray, y: np.ndarray) -> None:
        if X.ndim != 2 or X.shape[1] != self._n_columns or len(X) != len(y):
            raise ValueError(f"rows {X.shape} / labels {np.shape(y)} do not fit a "
                             f"{self._n_columns}-column file")
        with self.path.open("ab") as out:
            out.write(np.ascontiguousarray(X, dtype=np.float32).tobytes())
        self._labels.append(np.asarray(y, dtype=np.int8))
        self._y = None
        self._n_rows += len(X)

    @property
    def n_rows(self) -> int:
        return self._n_rows

    @property
    def n_columns(self) -> int:
        return self._n_columns

    @property
    def y(self) -> np.ndarray:
        if self._y is None:
            self._y = (np.concatenate(self._labels) if self._labels
                       else np.zeros(0, np.int8)).astype(np.int64)
            self._labels = [self._y.astype(np.int8)]
        return self._y

    def chunks(self) -> Iterator[tuple[np.ndarray, np.ndarray]]:
        y = self.y
        buffer = np.empty((self.chunk_rows, self._n_columns), dtype=np.float32)
        view = buffer.data.cast("B")
        row_bytes = self._n_columns * buffer.itemsize
        with self.path.open("rb", buffering=0) as source:
            start = 0
            while start < self._n_rows:
                m = min(self.chunk_rows, self._n_rows - start)
                wanted, got = m * row_bytes, 0
                while got < wanted:
                    read = source.readinto(view[got:wanted])
                    if not read:
                        raise RuntimeError(f"{self.path} ends after {start} rows + {got} bytes "
                                           f"of the {self._n_rows} rows written")
                    got += read
                yield buffer[:m], y[start:start + m]
                start += m

    def to_array(self) -> np.ndarray:
        """All rows in memory (float32), for the learners that do not stream."""
        return np.fromfile(self.path, dtype=np.float32).reshape(self._n_rows, self._n_columns)
