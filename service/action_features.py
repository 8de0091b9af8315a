"""Action features, cached in the process and refreshed in the background.

Actions change slowly and every decision needs the features of each of its candidates,
so reading them per request would cost more than the whole decision. The cache holds the encoded action
block for the whole catalog (row i = catalog action i) and swaps it atomically. A new
catalog gets its block built (`build`) before it serves, and both are swapped together
(`install`, `service/catalog_watch.py`).

A read that finds nothing for any action (no hash, or hashes without a feature) means an
emptied online store, not a catalog whose features all became defaults: a refresh then
keeps the cached matrix, counts it (`nextbest_action_refresh_kept_total`) and sets
`store_empty`, which the health check turns into the decisions' `online_store_empty`
flag (`service/health.py`), until a read finds features again. At start-up, or for a
catalog that has no cached block yet, there is nothing to keep: the catalog's own
attributes and the defaults are served, flagged the same way.
"""

from __future__ import annotations

import asyncio
import logging
import time

from features.encoding import ActionMatrix, Encoder
from features.online import OnlineFeatureReader, Scalar
from service.catalog import Catalog
from service.metrics import Metrics

log = logging.getLogger(__name__)


class ActionFeatureCache:
    def __init__(self, reader: OnlineFeatureReader, catalog: Catalog, encoder: Encoder,
                 refresh_seconds: float, metrics: Metrics | None = None) -> None:
        self._reader = reader
        self._metrics = metrics
        self._encoder = encoder
        self._catalog = catalog
        self._refresh = refresh_seconds
        self.matrix: ActionMatrix | None = None
        self.missing: list[str] = []
        self.loaded_at = 0.0
        #: the last read found no feature of any action (an emptied online store)
        self.store_empty = False

    async def build(self, catalog: Catalog) -> ActionMatrix:
        """The encoded block of `catalog`'s actions: the online store's features, the
        catalog's own values where the store has none; the cached block when the store
        has nothing for any action and `catalog` is the one cached."""
        rows = await self._reader.read_many(catalog.ids)
        self.store_empty = bool(catalog.ids) and not any(r.values for r in rows.values())
        if self.store_empty and self.matrix is not None and catalog is self._catalog:
            log.error("the online store has no features for any of the %d catalog actions: "
                      "keeping the cached action features", len(catalog.ids))
            if self._metrics is not None:
                self._metrics.action_refresh_kept.inc()
            return self.matrix
        missing = [a for a, live in zip(catalog.ids, catalog.live.tolist(), strict=True)
                   if live and a not in rows]
        if missing:
            log.warning("no online features for %d catalog actions (defaults used): %s",
                        len(missing), missing[:10])
        raw: dict[str, dict[str, Scalar]] = {}
        for a in catalog.actions:
            values = dict(rows[a.action_id].values) if a.action_id in rows else {}
            for feature in self._encoder.action_features:  # the catalog's own, where the store has none
                if hasattr(a, feature):
                    values.setdefault(feature, getattr(a, feature))
            raw[a.action_id] = values
        self.missing = missing
        return self._encoder.encode_actions(raw)

    def install(self, catalog: Catalog, matrix: ActionMatrix) -> None:
        """Serve `matrix` (built for `catalog`) and refresh for `catalog` from now on."""
        self._catalog = catalog
        self.matrix = matrix
        self.loaded_at = time.time()

    async def load(self) -> ActionMatrix:
        catalog = self._catalog
        matrix = await self.build(catalog)
        # a catalog swapped in meanwhile brought its own; the kept block is not fresher
        if self._catalog is catalog and matrix is not self.matrix:
            self.install(catalog, matrix)
        return matrix

    async def run(self) -> None:
        """Refresh until cancelled; a failed refresh keeps the previous matrix."""
        while True:
            await asyncio.sleep(self._refresh)
            try:
                await self.load()
            except Exception:
                log.exception("action feature refresh failed; keeping the cached features")
