"""Where a large catalog's candidates come from: cheap sources, precomputed off the path.

`service/candidates.py` asks these for the few hundred actions a decision scores; each
answer is a short array of catalog rows, best first, read in a few indexing operations:

- `SlotRanking`: the best actions per channel x placement x segment by the offline
  model alone (propensity x value x context weight x lever, the arbitration without the
  online correction), averaged over customers of the segment seen recently on the
  channel (`CustomerSample`); with no one seen yet, over the anonymous customer. Kept per
  cell with the best of each category too, which answers the customer's strongest
  categories. Computed by `rank_slots`, in a background thread, again when the model,
  the catalog or the action features change and every `candidate_refresh_seconds`.
- `CoPurchase`: neighbours of the basket's items, the actions accepted with an item in
  the basket in the logged interactions (the demo's, or `nextbest load`'s); read again
  at the next ranking after that file changes.
- `SlotRanking.explore` and `SlotRanking.new`: per slot, the actions its ranking does not
  propose (in a shuffled order), and among them those added to the catalog while
  serving; each decision takes a few of each, in turn: every action of the slot is
  scored now and then, a new one far more often.

The caller's own list is the fifth source (`service/candidates.py`).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from features.encoding import ActionMatrix, CustomerVector, Encoder
from service.catalog import Catalog
from service.model import OnnxScorer, sigmoid

#: customers kept per channel x segment to rank the slots over
SAMPLES_PER_SEGMENT = 8
#: co-purchase neighbours kept per action
NEIGHBOURS = 20


@dataclass(frozen=True)
class Cell:
    """One channel x placement x segment: its best rows, best first (at most `depth`)."""

    rows: np.ndarray
    #: category code -> that category's best rows in the cell, best first
    by_code: Mapping[int, np.ndarray] = field(default_factory=dict)


@dataclass(frozen=True)
class SlotRanking:
    """Every cell's ranking, and what it was computed from (to tell when it is stale)."""

    cells: Mapping[tuple[str, str, str], Cell]
    #: per slot: the rows its ranking leaves out, shuffled
    explore: Mapping[tuple[str, str], np.ndarray]
    model: str
    catalog: str
    features_at: float
    computed_at: float
    #: per slot: those of `explore` added to the catalog while serving
    new: Mapping[tuple[str, str], np.ndarray] = field(default_factory=dict)
    #: ranked over customers seen (False: over the anonymous customer only, at start-up)
    warm: bool = True

    def cell(self, channel: str, placement: str, segment: str) -> Cell | None:
        """The segment's cell, else the slot's over everyone (None: the slot is unknown)."""
        return self.cells.get((channel, placement, segment)) or self.cells.get((channel, placement, ""))


class CustomerSample:
    """A few recent customers per channel x segment (what the rankings average over)."""

    def __init__(self, size: int = SAMPLES_PER_SEGMENT) -> None:
        self._size = size
        self._seen: dict[tuple[str, str], list[tuple[CustomerVector, Any]]] = {}
        self._next: dict[tuple[str, str], int] = {}

    def add(self, channel: str, segment: str, customer: CustomerVector, context: Any) -> None:
        key = (channel, segment)
        kept = self._seen.setdefault(key, [])
        if len(kept) < self._size:
            kept.append((customer, context))
            return
        i = self._next.get(key, 0)
        kept[i] = (customer, context)
        self._next[key] = (i + 1) % self._size

    def __bool__(self) -> bool:
        return bool(self._seen)

    def of(self, channel: str) -> dict[str, list[tuple[CustomerVector, Any]]]:
        """segment -> its customers seen on `channel` (a copy: the path keeps adding)."""
        return {segment: list(kept) for (c, segment), kept in list(self._seen.items()) if c == channel}


def rank_slots(catalog: Catalog, matrix: ActionMatrix, encoder: Encoder, scorer: OnnxScorer,
               slots: Mapping[str, Sequence[str]], sample: CustomerSample,
               anonymous: tuple[CustomerVector, Any], depth: int, per_category: int,
               new_from: int, category_codes: np.ndarray | None, features_at: float,
               now: float) -> SlotRanking:
    """Rank every slot larger than `depth`, for each segment seen and for everyone.

    `new_from`: the first row added to the catalog while serving; `category_codes`: each
    row's code in the customer's category affinity table (None: the world has none).
    """
    cells: dict[tuple[str, str, str], Cell] = {}
    explore: dict[tuple[str, str], np.ndarray] = {}
    new: dict[tuple[str, str], np.ndarray] = {}
    empty = np.zeros(0, dtype=np.int64)
    for channel, placements in slots.items():
        seen = sample.of(channel) or {"": [anonymous]}
        weight = catalog.context_weight(channel) * catalog.value * catalog.lever
        for placement in placements:
            rows = catalog.candidates(channel, placement)
            if len(rows) <= depth:
                continue
            # each segment's summed propensities; everyone's cell is their mean over all
            sums: dict[str, np.ndarray] = {}
            for segment, customers in seen.items():
                total = sums[segment] = np.zeros(len(rows))
                for customer, context in customers:
                    _, x = encoder.encode_decision(customer, channel, placement, context, matrix,
                                                   rows, empty)
                    total += sigmoid(scorer.logits(x))
            sums[""] = sum(sums.values(), np.zeros(len(rows)))
            for segment, total in sums.items():
                order = rows[np.argsort(-(total * weight[rows]), kind="stable")]
                by_code: dict[int, np.ndarray] = {}
                if category_codes is not None:
                    codes = category_codes[order]
                    for code in np.unique(codes[codes >= 0]).tolist():
                        by_code[code] = order[codes == code][:per_category]
                cells[(channel, placement, segment)] = Cell(order[:depth], by_code)
            left_out = np.setdiff1d(rows, cells[(channel, placement, "")].rows)
            shuffled = np.random.default_rng(len(rows)).permutation(left_out)
            explore[(channel, placement)] = shuffled
            if np.count_nonzero(shuffled >= new_from):
                new[(channel, placement)] = shuffled[shuffled >= new_from]
    return SlotRanking(cells, explore, scorer.label, catalog.version, features_at, now,
                       new=new, warm=bool(sample))


class CoPurchase:
    """Actions accepted while an item was in the basket, by item, most often first."""

    def __init__(self, pairs: Mapping[str, Sequence[str]], source: Path | None = None,
                 stamp: int | None = None) -> None:
        #: item id -> its neighbours' ids, most often accepted with it first
        self.pairs = pairs
        #: the file the pairs were read from, and its modification time before the read
        #: (None: there was none)
        self.source = source
        self._stamp = stamp

    def stale(self) -> bool:
        """Whether the file the pairs came from was written (or appeared) since."""
        return self.source is not None and file_stamp(self.source) != self._stamp

    @classmethod
    def from_log(cls, path: Path, basket: str | None, action_key: str,
                 neighbours: int = NEIGHBOURS) -> CoPurchase:
        """From a logged-interactions Parquet file (no file, no basket field: no pairs)."""
        if basket is None:
            return cls({})
        stamp = file_stamp(path)  # before the read: a write during it is seen next time
        if not path.is_file():
            return cls({}, path, stamp)
        import pyarrow.parquet as pq

        schema = pq.read_schema(path)
        if basket not in schema.names or "label" not in schema.names or action_key not in schema.names:
            return cls({}, path, stamp)
        table = pq.read_table(path, columns=[basket, action_key, "label"])
        labels = table.column("label").to_numpy()
        accepted = np.flatnonzero(labels > 0)
        items = table.column(basket).take(accepted).to_pylist()
        actions = table.column(action_key).take(accepted).to_pylist()
        counts: dict[str, dict[str, int]] = {}
        for held, action in zip(items, actions, strict=True):
            for item in (held.split(",") if isinstance(held, str) else held or ()):
                if item and item != action:
                    mine = counts.setdefault(item, {})
                    mine[action] = mine.get(action, 0) + 1
        return cls({item: [a for a, _ in sorted(found.items(), key=lambda kv: -kv[1])[:neighbours]]
                    for item, found in counts.items()}, path, stamp)

    def rows(self, catalog: Catalog) -> dict[int, np.ndarray]:
        """Item row -> its neighbours' rows, in this catalog (ids it lacks dropped)."""
        index = catalog.index
        out: dict[int, np.ndarray] = {}
        for item, neighbours in self.pairs.items():
            row = index.get(item)
            if row is not None:
                out[row] = np.array([index[a] for a in neighbours if a in index], dtype=np.int64)
        return out


def file_stamp(path: Path) -> int | None:
    """`path`'s modification time in nanoseconds (None: it does not exist)."""
    try:
        return path.stat().st_mtime_ns
    except OSError:
        return None
