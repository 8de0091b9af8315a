"""Is the state backend up, and is the online store still filled? Checked in the background.

Neither `/readyz` nor a decision waits for Redis to find out: a background task of the
runtime (`StoreHealth.run`) asks every `interval` seconds, each check bounded by
`timeout`, and both read its last answer. A replica whose Redis is away keeps serving
(defaults for customer features, decision records and feedback spooled), so it stays
ready; `nextbest_state_backend_up` says the backend is down, and an alert fires on it.

The online store counts as emptied (`nextbest_online_store_empty`, decisions flagged
`online_store_empty`) when
- fewer than half of the ids the materialization mark sampled still have a hash
  (`features/materialized.py`), or the mark is gone and so are the hashes of a few
  catalog actions: Redis restarted without persistence, flushed or evicting (a store
  materialized by `feast materialize` has no mark: its actions decide);
- or the action feature cache's last read found nothing for any action
  (`ActionFeatureCache.store_empty`; it keeps its cached features meanwhile).
While the backend is down the last answer about the store stands. When a check finds the
store filled again after it was emptied, the action features are read again at once,
rather than at the cache's next refresh.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Sequence
from typing import Any, Protocol

from features.materialized import MaterializationMark, mark_key, spread
from features.online import EntityLayout
from service.action_features import ActionFeatureCache
from service.metrics import Metrics
from service.state import StateStore

log = logging.getLogger(__name__)

EMPTY = "online_store_empty"


class StoreProbe(Protocol):
    async def ping(self) -> None:
        """Raise if the state backend does not answer."""

    async def emptied(self) -> bool | None:
        """Whether the online store looks emptied; None: nothing to look at."""


class StateProbe:
    """The embedded backend: in-process state and a local SQLite online store."""

    def __init__(self, state: StateStore) -> None:
        self._state = state

    async def ping(self) -> None:
        await self._state.ping()

    async def emptied(self) -> bool | None:
        return None


class RedisStoreProbe:
    """Redis: PING, the materialization mark and the hashes of the ids it sampled.

    `client` is a redis-py asyncio client (or cluster client, which splits the
    multi-key EXISTS by slot); `layouts` maps each entity with features to its layout;
    `action_ids` are catalog actions looked for when there is no mark.
    """

    def __init__(self, client: Any, project: str, layouts: dict[str, EntityLayout],
                 action_entity: str, action_ids: Sequence[str]) -> None:
        self._r = client
        self._key = mark_key(project)
        self._layouts = layouts
        actions = layouts[action_entity]
        self._action_keys = [actions.redis_key(a) for a in spread(action_ids)]

    async def ping(self) -> None:
        await self._r.ping()

    async def emptied(self) -> bool | None:
        mark = MaterializationMark.from_hash(await self._r.hgetall(self._key))
        if mark is not None and mark.source_entities > 0 and mark.entity in self._layouts:
            if not mark.sample:  # the materialization found none of its ids in the store
                return True
            layout = self._layouts[mark.entity]
            present = int(await self._r.exists(*(layout.redis_key(i) for i in mark.sample)))
            return 2 * present < len(mark.sample)
        # no mark (or one of an empty source): the catalog's actions decide
        if not self._action_keys:
            return mark is None
        return int(await self._r.exists(*self._action_keys)) == 0


class StoreHealth:
    """The last health check's answer, refreshed by `run` (see the module docstring)."""

    def __init__(self, probe: StoreProbe, metrics: Metrics, interval: float, timeout: float,
                 actions: ActionFeatureCache | None = None) -> None:
        self._probe = probe
        self._metrics = metrics
        self._interval = interval
        self._timeout = timeout
        self._actions = actions
        self._emptied = False  # the probe's last answer
        self.backend_up = True
        self.store_empty = False
        #: what every decision adds to its `degraded` reasons meanwhile
        self.degraded: tuple[str, ...] = ()
        self.checked_at = 0.0  # time.time() of the last check, 0 before the first
        self.error: str | None = None  # why the last check could not reach the backend

    async def check(self) -> None:
        emptied: bool | None = None
        try:
            async with asyncio.timeout(self._timeout):
                await self._probe.ping()
                emptied = await self._probe.emptied()
            up, self.error = True, None
        except Exception as exc:  # away, stalled or refusing: all mean "down" here
            up, self.error = False, f"{type(exc).__name__}: {exc}"
        if up != self.backend_up:
            if up:
                log.warning("state backend reachable again")
            else:
                log.warning("state backend unreachable: %s (serving degraded)", self.error)
        self.backend_up = up
        if emptied is not None:
            if emptied and not self._emptied:
                log.error("the online store looks emptied (materialization mark or sampled "
                          "entities gone): decisions are flagged %s until it is materialized "
                          "again", EMPTY)
            refilled = self._emptied and not emptied
            self._emptied = emptied
            if refilled:
                log.warning("the online store is filled again: reading the action features")
                await self._reload_actions()
        actions_empty = self._actions is not None and self._actions.store_empty
        self.store_empty = self._emptied or actions_empty
        self.degraded = (EMPTY,) if self.store_empty else ()
        self.checked_at = time.time()
        self._metrics.state_backend_up.set(1 if up else 0)
        self._metrics.online_store_empty.set(1 if self.store_empty else 0)

    async def _reload_actions(self) -> None:
        if self._actions is None:
            return
        try:
            await self._actions.load()
        except Exception:
            log.warning("reading the action features failed; the next refresh tries again",
                        exc_info=True)

    async def run(self) -> None:
        """Check every `interval` seconds until cancelled."""
        while True:
            await asyncio.sleep(self._interval)
            try:
                await self.check()
            except Exception:  # never let the health task die: /readyz relies on it
                log.exception("the health check failed")
