"""Which catalog actions may be proposed for this request.

The catalog's channel/placement rules, the caller's candidate list, no product the
customer already has in the basket, and each action's eligibility rules (compiled in
`service/rules.py`, evaluated here as one mask over the catalog). `Removals` collects,
with `explain` only, which rule removed each candidate.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from service.catalog import Catalog
from service.errors import UnknownCandidates
from service.rules import Decision


class Removals:
    """Removed candidates and the rule that removed each (built only with `explain`)."""

    def __init__(self, ids: Sequence[str]) -> None:
        self._ids = ids
        self.items: list[dict[str, str]] = []

    def add(self, before: np.ndarray, after: np.ndarray, reason: str | Sequence[str]) -> None:
        """The rows of `before` not in `after`, for `reason` (one, or one per row of `before`)."""
        gone = np.flatnonzero(~np.isin(before, after))
        for i in gone.tolist():
            why = reason if isinstance(reason, str) else reason[i]
            self.items.append({"action_id": self._ids[int(before[i])], "rule": why})

    def rows(self, rows: Sequence[int], reasons: Sequence[str]) -> None:
        for r, why in zip(rows, reasons, strict=True):
            self.items.append({"action_id": self._ids[int(r)], "rule": why})


class Eligibility:
    def __init__(self, catalog: Catalog) -> None:
        self._catalog = catalog

    def candidates(self, channel: str, placement: str, requested: Sequence[str] | None) -> np.ndarray:
        """Catalog rows allowed in this slot, restricted to `requested` when given."""
        if requested is None:
            return self._catalog.candidates(channel, placement)
        index = self._catalog.index
        unique = dict.fromkeys(requested)  # duplicates dropped, first occurrence kept
        try:
            wanted = np.fromiter(map(index.__getitem__, unique), dtype=np.int64, count=len(unique))
        except KeyError:
            unknown = sorted({a for a in requested if a not in index})
            raise UnknownCandidates(f"unknown candidate action ids: {unknown[:20]}") from None
        return wanted[self._catalog.allowed(channel, placement)[wanted]]

    def universe(self, channel: str, placement: str, requested: Sequence[str] | None,
                 rows: np.ndarray) -> np.ndarray:
        """Catalog-wide: what `candidates` allows (`rows`, its answer): the slot's mask, or,
        with the caller's list, that list within it."""
        if requested is None:
            return self._catalog.allowed(channel, placement)
        mask = np.zeros(len(self._catalog), dtype=bool)
        mask[rows] = True
        return mask

    def slot_reasons(self, channel: str, placement: str, requested: Sequence[str] | None,
                     rows: np.ndarray, removals: Removals) -> None:
        """Explain: the requested (or all) actions the slot left out, `channel` or `placement`."""
        catalog = self._catalog
        universe = (np.flatnonzero(catalog.live) if requested is None else
                    np.array([catalog.index[a] for a in dict.fromkeys(requested)], dtype=np.int64))
        reasons = ["channel" if catalog.actions[r].channels and channel not in catalog.actions[r].channels
                   else "placement" for r in universe.tolist()]
        removals.add(universe, rows, reasons)

    def rules(self, rows: np.ndarray, decision: Decision,
              removals: Removals | None = None) -> np.ndarray:
        """Drop the candidates whose eligibility rules do not hold for this decision."""
        mask = self._catalog.rules.mask(decision, rows=rows)
        if mask is None:
            return rows
        kept = rows[mask]
        if removals is not None and len(kept) < len(rows):
            removals.add(rows, kept, self._catalog.rules.reasons(decision, rows))
        return kept

    def basket_rows(self, basket: Sequence[str]) -> np.ndarray:
        """Catalog rows of the basket's items (ids not in the catalog are ignored)."""
        if not basket:
            return _EMPTY
        index = self._catalog.index
        return np.array([index[a] for a in basket if a in index], dtype=np.int64)

    def filter(self, rows: np.ndarray, basket_rows: np.ndarray) -> np.ndarray:
        """Drop what the customer already has in the basket."""
        if basket_rows.size == 0:
            return rows
        in_basket = np.zeros(len(self._catalog), dtype=bool)
        in_basket[basket_rows] = True
        return rows[~in_basket[rows]]


_EMPTY = np.zeros(0, dtype=np.int64)
