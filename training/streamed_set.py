"""The training set built a chunk of logged decisions at a time, onto files on disk.

`nextbest train` must not need memory in proportion to the log. `training/dataset.py`
joins and encodes a whole log in memory (with the joined frame, which evaluation and the
tests read); this module runs the same steps, `join_features` then `encode_rows`, over
row batches of the interaction log's Parquet file, and appends the encoded rows to two
`training.row_store.RowFile`s, the training rows and the holdout. The point-in-time join
is per row, so joining chunk by chunk gives the rows one join would; Feast's file offline
store reads the feature sources again at each call, so a chunk is large enough to make
that cost small (docs/benchmarks.md measures the steps).

The holdout is the last `holdout_fraction` of the rows in time order, ties in log order,
exactly the rows `build_training_set` + `time_split` hold out: only the timestamp
column is read whole first (one value per row, as are the labels), to find the cut.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow.parquet as pq

from features.config import World
from features.encoding import Encoder
from training.dataset import catalog_actions, encode_rows, feature_source, join_features
from training.row_store import RowFile

#: logged decisions joined and encoded at a time
JOIN_CHUNK_ROWS = 100_000


@dataclass
class StreamedSet:
    """The encoded training and holdout rows on disk, with every row's timestamp."""

    train: RowFile
    holdout: RowFile
    event_timestamp: np.ndarray  # (n,) datetime64[us] UTC (naive), ascending
    seconds: dict[str, float] = field(default_factory=dict)  # time spent per step

    def __len__(self) -> int:
        return len(self.event_timestamp)

    @property
    def cut(self) -> int:
        """Index in `event_timestamp` of the first holdout row."""
        return self.train.n_rows


def holdout_cut(n: int, holdout_fraction: float) -> int:
    """Index of the first holdout row of `n` rows in time order."""
    cut = int(round(n * (1.0 - holdout_fraction)))
    if cut <= 0 or cut >= n:
        raise ValueError(f"{n} examples are too few to split off a holdout")
    return cut


def stream_training_set(
    data_dir: Path, interactions: Path, directory: Path, world: World, encoder: Encoder,
    holdout_fraction: float, redis_url: str | None = None, chunk_rows: int = JOIN_CHUNK_ROWS,
) -> StreamedSet:
    """Join and encode `interactions` (a Parquet log) chunk by chunk into `directory`."""
    log_file = pq.ParquetFile(interactions)
    timestamps = _timestamps(log_file)
    n = len(timestamps)
    if n == 0:
        raise ValueError("no interactions to encode")
    order = np.argsort(timestamps, kind="stable")
    in_holdout = np.zeros(n, dtype=bool)
    in_holdout[order[holdout_cut(n, holdout_fraction):]] = True
    d = len(encoder.columns)
    data = StreamedSet(RowFile(Path(directory) / "train.f32", d),
                       RowFile(Path(directory) / "holdout.f32", d), timestamps[order])
    del order
    store, service = feature_source(data_dir, redis_url, world)
    catalog = catalog_actions(data_dir, encoder, world)
    seconds = {"read": 0.0, "join": 0.0, "encode": 0.0}
    start = 0
    for chunk in _batches(log_file, chunk_rows, seconds):
        t = time.perf_counter()
        frame = join_features(store, service, world, chunk)
        seconds["join"] += time.perf_counter() - t
        t = time.perf_counter()
        X = encode_rows(frame, catalog, encoder)
        y = frame["label"].to_numpy(np.int64)
        held = in_holdout[start:start + len(X)]
        data.train.append(X[~held], y[~held])
        data.holdout.append(X[held], y[held])
        seconds["encode"] += time.perf_counter() - t
        start += len(X)
    if start != n:
        raise RuntimeError(f"{interactions} gave {start} rows in batches, {n} timestamps")
    data.seconds.update(seconds)
    return data


def _timestamps(log_file: pq.ParquetFile) -> np.ndarray:
    column = log_file.read(columns=["event_timestamp"]).column(0)
    values = pd.to_datetime(column.to_pandas(), utc=True)
    return values.dt.tz_localize(None).to_numpy("datetime64[us]")


def _batches(log_file: pq.ParquetFile, chunk_rows: int,
             seconds: dict[str, float]) -> Iterator[pd.DataFrame]:
    t = time.perf_counter()
    for batch in log_file.iter_batches(batch_size=chunk_rows):
        frame = batch.to_pandas()
        seconds["read"] += time.perf_counter() - t
        yield frame
        t = time.perf_counter()
