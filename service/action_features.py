"""Action features, cached in the process and refreshed in the background.

Actions change slowly and every decision needs the features of each of its candidates,
so reading them per request would cost more than the whole decision. The cache holds the encoded action
block for the whole catalog (row i = catalog action i) and swaps it atomically.

A read that finds nothing for any action (no hash, or hashes without a feature) means an
emptied online store, not a catalog whose features all became defaults: a refresh then
keeps the cached matrix, counts it (`nextbest_action_refresh_kept_total`) and sets
`store_empty`, which the health check turns into the decisions' `online_store_empty`
flag (`service/health.py`), until a read finds features again. At start-up there is
nothing to keep: the catalog's own attributes and the defaults are served, flagged the
same way.
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

    async def load(self) -> ActionMatrix:
        rows = await self._reader.read_many(self._catalog.ids)
        self.store_empty = bool(self._catalog.ids) and not any(r.values for r in rows.values())
        if self.store_empty and self.matrix is not None:
            log.error("the online store has no features for any of the %d catalog actions: "
                      "keeping the cached action features", len(self._catalog.ids))
            if self._metrics is not None:
                self._metrics.action_refresh_kept.inc()
            return self.matrix
        self.missing = [a for a in self._catalog.ids if a not in rows]
        if self.missing:
            log.warning("no online features for %d catalog actions (defaults used): %s",
                        len(self.missing), self.missing[:10])
        raw: dict[str, dict[str, Scalar]] = {}
        for a in self._catalog.actions:
            values = dict(rows[a.action_id].values) if a.action_id in rows else {}
            for feature in self._encoder.action_features:  # the catalog's own, where the store has none
                if hasattr(a, feature):
                    values.setdefault(feature, getattr(a, feature))
            raw[a.action_id] = values
        self.matrix = self._encoder.encode_actions(raw)
        self.loaded_at = time.time()
        return self.matrix

    async def run(self) -> None:
        """Refresh until cancelled; a failed refresh keeps the previous matrix."""
        while True:
            await asyncio.sleep(self._refresh)
            try:
                await self.load()
            except Exception:
                log.exception("action feature refresh failed; keeping the cached features")
