"""The chunked training set holds out and encodes exactly what the in-memory one does."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from features.config import configured_world, interactions_path
from features.encoding import Encoder
from training.streamed_set import stream_training_set
from training.train import HOLDOUT_FRACTION, time_split


def test_joined_chunk_by_chunk_the_rows_are_the_in_memory_rows(
        small_data_dir: Path, small_training_set, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    world = configured_world(None)
    data = stream_training_set(small_data_dir, interactions_path(small_data_dir), tmp_path,
                               world, Encoder(world), HOLDOUT_FRACTION, chunk_rows=700)
    reference = small_training_set
    cut = time_split(reference)
    assert len(data) == len(reference) and data.cut == cut
    np.testing.assert_array_equal(data.event_timestamp, reference.event_timestamp)
    np.testing.assert_array_equal(data.train.to_array(), reference.X[:cut])
    np.testing.assert_array_equal(data.train.y, reference.y[:cut])
    np.testing.assert_array_equal(data.holdout.to_array(), reference.X[cut:])
    np.testing.assert_array_equal(data.holdout.y, reference.y[cut:])
    assert set(data.seconds) == {"read", "join", "encode"}
