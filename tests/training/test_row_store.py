"""Training rows on disk: what is appended is read back, a bounded chunk at a time."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from training.row_store import ArrayRows, RowFile


def test_a_row_file_reads_back_every_row_once_in_chunks_of_at_most_chunk_rows(tmp_path: Path) -> None:
    rng = np.random.default_rng(3)
    X, y = rng.normal(size=(1003, 7)).astype(np.float32), rng.integers(0, 2, 1003)
    rows = RowFile(tmp_path / "rows.f32", 7, chunk_rows=100)
    for start in range(0, 1003, 250):
        rows.append(X[start:start + 250], y[start:start + 250])
    assert (rows.n_rows, rows.n_columns) == (1003, 7)
    seen_X, seen_y, sizes = [], [], []
    for chunk, labels in rows.chunks():
        sizes.append(len(chunk))
        seen_X.append(chunk.copy())  # the chunk is a reused buffer
        seen_y.append(labels)
    assert max(sizes) == 100 and sum(sizes) == 1003
    np.testing.assert_array_equal(np.concatenate(seen_X), X)
    np.testing.assert_array_equal(np.concatenate(seen_y), y)
    np.testing.assert_array_equal(rows.to_array(), X)
    np.testing.assert_array_equal(rows.y, y)


def test_a_truncated_row_file_is_an_error_not_fewer_rows(tmp_path: Path) -> None:
    rows = RowFile(tmp_path / "rows.f32", 3)
    rows.append(np.ones((10, 3), np.float32), np.zeros(10))
    with rows.path.open("r+b") as f:
        f.truncate(5 * 3 * 4 + 2)
    with pytest.raises(RuntimeError, match="ends after"):
        list(rows.chunks())


def test_rows_of_the_wrong_width_are_refused(tmp_path: Path) -> None:
    rows = RowFile(tmp_path / "rows.f32", 3)
    with pytest.raises(ValueError, match="3-column"):
        rows.append(np.ones((2, 4), np.float32), np.zeros(2))
    with pytest.raises(ValueError, match="same rows"):
        ArrayRows(np.ones((2, 4)), np.zeros(3))
