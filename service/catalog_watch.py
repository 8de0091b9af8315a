"""Follow the catalog store: serve a new catalog version between two decisions.

Every `interval` seconds (NEXTBEST_CATALOG_WATCH_SECONDS), or at once when this
replica's own admin API wrote a change (`wake`), the watcher reads the store's revision
(`service/catalog_store.py`: one small read). When it moved, the watcher reads the
document and builds the new `Catalog` in a worker thread (parsed, checked against the
world, its rules and limits compiled; its rows carried over from the catalog served,
see `service/catalog.py`), then the encoded action features for it (the online store's,
else the catalog's values), and only then, on the event loop and without an await in
between, swaps everything a decision reads: the action feature block, the online
learner's and the contact ledger's rows (appended, so learned state and contacts stay
with their actions), the per-action cooldowns, and the engine's catalog. A decision
reads the catalog once, at its start, so it runs on one version from start to end.

A change therefore serves on every replica within the interval plus the build
(docs/catalog.md states the bound and its measurement). A version that fails to build
here is logged and counted (`nextbest_catalog_load_failures_total`); the replica keeps
serving the one before and tries again when the revision moves again.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from dataclasses import dataclass, field

from features.config import World
from features.encoding import ActionMatrix
from service.catalog import Catalog
from service.catalog_admin import build
from service.catalog_store import CatalogStore, StoredCatalog
from service.engine import DecisionEngine
from service.metrics import Metrics

log = logging.getLogger(__name__)


@dataclass
class CatalogWatcher:
    store: CatalogStore
    engine: DecisionEngine
    world: World
    metrics: Metrics
    interval: float
    #: the version this replica serves (or last tried)
    seen: int = 0
    _wake: asyncio.Event = field(default_factory=asyncio.Event)

    def wake(self) -> None:
        """Check now instead of at the next interval (this replica wrote a change)."""
        self._wake.set()

    async def run(self) -> None:
        while True:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), self.interval)
            self._wake.clear()
            await self.check()

    async def check(self) -> bool:
        """Read the revision once and follow it if it moved; True when a new version serves."""
        try:
            revision = await asyncio.to_thread(self.store.revision)
            if revision is None or revision[0] == self.seen:
                return False
            stored = await asyncio.to_thread(self.store.current)
        except Exception as exc:  # a Redis outage or an unreadable file: next time
            self.metrics.catalog_read_errors.inc()
            log.warning("cannot read the catalog from %s: %s", self.store.where, exc)
            return False
        if stored is None or stored.version == self.seen:
            return False
        return await self.follow(stored)

    async def follow(self, stored: StoredCatalog) -> bool:
        started = time.perf_counter()
        self.seen = stored.version
        try:
            catalog = await asyncio.to_thread(build, stored, self.world, self.engine.catalog)
            matrix = await self.engine.actions.build(catalog)
        except Exception as exc:
            self.metrics.catalog_load_failures.inc()
            log.error("cannot serve catalog version %d, still serving version %s: %s",
                      stored.version, self.engine.catalog.version, exc)
            return False
        if self.engine.catalog.version == str(stored.version):
            return False
        before = self.engine.catalog.version
        self.install(catalog, matrix)
        self.metrics.catalog_swaps.inc()
        self.metrics.catalog_version.set(stored.version)
        log.info("serving catalog version %d (was %s)", stored.version, before, extra={
            "catalog": stored.version, "actions": int(catalog.live.sum()), "rows": len(catalog),
            "seconds": round(time.perf_counter() - started, 4)})
        return True

    def install(self, catalog: Catalog, matrix: ActionMatrix) -> None:
        """Swap everything a decision reads, in one step (no await)."""
        engine = self.engine
        group_by = self.world.learner.group_by
        engine.actions.install(catalog, matrix)
        engine.learner.relayout(catalog.ids, catalog.groups(group_by) if group_by else None)
        if engine.contacts is not None:
            engine.contacts.extend(catalog.ids)
            engine.contacts.policies(catalog.limits.dismiss_seconds, catalog.limits.accept_seconds)
        engine.use_catalog(catalog)
