"""Which catalog actions may be proposed for this request.

Today: the catalog's channel/placement rules, the caller's candidate list, and no
product the customer already has in the basket. Business rules and contact policies
(caps, cooldowns across channels) plug in here.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from service.catalog import Catalog
from service.errors import UnknownCandidates


class Eligibility:
    def __init__(self, catalog: Catalog) -> None:
        self._catalog = catalog

    def candidates(self, channel: str, placement: str, requested: Sequence[str] | None) -> np.ndarray:
        """Catalog rows allowed in this slot, restricted to `requested` when given."""
        if requested is None:
            return self._catalog.candidates(channel, placement)
        index = self._catalog.index
        try:  # duplicates dropped, first occurrence kept
            wanted = np.array(list(map(index.__getitem__, dict.fromkeys(requested))), dtype=np.int64)
        except KeyError:
            unknown = sorted({a for a in requested if a not in index})
            raise UnknownCandidates(f"unknown candidate action ids: {unknown[:20]}") from None
        return wanted[self._catalog.allowed(channel, placement)[wanted]]

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
