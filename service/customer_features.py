"""Customer features for one decision: one online-store read, defaults on any miss.

A missing customer, an unreachable or slow store, or stale features never fail a
decision: the schema's defaults fill in and the decision carries a `degraded` reason.
A world without a customer entity (no reader) reads nothing: every decision gets the
defaults and no `degraded` reason, since nothing it could have known is missing.
Slowness is bounded by the reader's own client (the Redis client on the decision path
has a socket timeout of NEXTBEST_REDIS_TIMEOUT_SECONDS), not by `asyncio.wait_for`,
which would cost a task per decision.

Each read row is encoded once (`Encoder.encode_customer`) and the encoded
vector travels with it, so a cached customer costs no encoding either; a request that
overrides a customer feature (a journey stage) gets a copy with it (`Encoder.with_context`).

Reads are cached in-process for NEXTBEST_CUSTOMER_CACHE_SECONDS (a bounded LRU):
features change only when a materialization writes them, so a busy customer costs one
store read per few seconds instead of one per decision. The price is that a
materialization (or a first write of a new customer) shows up to that many seconds late
on this replica (plus the stale window below). Known and unknown customers are cached
alike; failed reads are not, and staleness is judged at every decision from the row's own
event time.

An expired entry is still served for NEXTBEST_CUSTOMER_CACHE_STALE_SECONDS while one
background read per customer refreshes it (stale-while-revalidate): a returning customer
does not wait for the store's round trip (which, on a busy machine, also waits for the
store's process and this one's event loop to be scheduled). The first decision after
expiry gets the old entry, the ones after the refresh the new one, so a materialization
can be up to CACHE_SECONDS + STALE_SECONDS late. A failed refresh keeps the entry (a
later decision tries again); at most `MAX_REFRESHES` refreshes run at once, past that a
stale entry is served unrefreshed.

`lookups` (the service's `nextbest_customer_cache_lookups_total`) counts each cached
lookup as `hit`, `stale` or `miss`: the hit rate says whether the cache is sized for the
customers a replica sees (docs/benchmarks.md, a million customers).
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import OrderedDict
from dataclasses import dataclass

from features.encoding import CustomerVector, Encoder
from features.online import FeatureRow, OnlineFeatureReader, Scalar
from service.metrics import LoopCounter
from service.shutdown import stop_tasks

log = logging.getLogger(__name__)

#: background refreshes of expired entries in flight at most (a store outage must not
#: pile up tasks)
MAX_REFRESHES = 256


@dataclass(frozen=True)
class CustomerFeatures:
    values: dict[str, Scalar]
    degraded: tuple[str, ...]
    vector: CustomerVector  # `values` encoded (the world's defaults where missing)


@dataclass(frozen=True)
class _Read:
    """One store read as cached: the row (None: never written) and its encoding."""

    row: FeatureRow | None
    vector: CustomerVector


class CustomerFeatureService:
    def __init__(
        self, reader: OnlineFeatureReader | None, encoder: Encoder, max_age_seconds: float,
        cache_seconds: float = 0.0, cache_size: int = 20_000, stale_seconds: float = 0.0,
        lookups: LoopCounter | None = None,
    ) -> None:
        self._reader = reader
        self._encoder = encoder
        defaults = encoder.defaults
        self.anonymous = CustomerFeatures({}, ("anonymous",), defaults)
        self.unavailable = CustomerFeatures({}, ("features_unavailable",), defaults)
        self.unknown = CustomerFeatures({}, ("unknown_customer",), defaults)
        #: every decision of a world without customer features (`reader` None)
        self.without_customer_features = CustomerFeatures({}, (), defaults)
        self._max_age = max_age_seconds
        self._cache_seconds = cache_seconds
        self._cache_size = cache_size
        self._stale_seconds = stale_seconds
        # customer id -> (monotonic expiry, what the read found)
        self._cache: OrderedDict[str, tuple[float, _Read]] = OrderedDict()
        self._refreshing: dict[str, asyncio.Task[None]] = {}
        self._lookups = lookups
        self._failures = 0  # failed reads since the last warning (one warning per 10 s)
        self._warned_at = float("-inf")

    async def get(self, customer_id: str | None) -> CustomerFeatures:
        if self._reader is None:
            return self.without_customer_features
        if customer_id is None:
            return self.anonymous
        try:
            found = await self._read(customer_id)
        except Exception as exc:  # timeouts and connection errors alike: serve defaults
            self._failed(exc)
            return self.unavailable
        row = found.row
        if row is None:
            return self.unknown
        if time.time() - row.event_ts > self._max_age:
            return CustomerFeatures(row.values, ("stale_customer_features",), found.vector)
        return CustomerFeatures(row.values, (), found.vector)

    async def _read(self, customer_id: str) -> _Read:
        if self._cache_seconds <= 0:
            return await self._fetch(customer_id)
        cache = self._cache
        now = time.monotonic()
        hit = cache.get(customer_id)
        lookups = self._lookups
        if hit is not None:
            expires, found = hit
            if now < expires + self._stale_seconds:
                cache.move_to_end(customer_id)
                if now >= expires:
                    self._refresh(customer_id)
                if lookups is not None:
                    lookups.inc("stale" if now >= expires else "hit")
                return found
        if lookups is not None:
            lookups.inc("miss")
        found = await self._fetch(customer_id)
        self._store(customer_id, found)
        return found

    def __len__(self) -> int:
        """Customers in the cache."""
        return len(self._cache)

    async def _fetch(self, customer_id: str) -> _Read:
        assert self._reader is not None  # `get` answers without a read when there is none
        return self._encoded(await self._reader.read(customer_id))

    def _store(self, customer_id: str, found: _Read) -> None:
        cache = self._cache
        cache[customer_id] = (time.monotonic() + self._cache_seconds, found)
        cache.move_to_end(customer_id)
        if len(cache) > self._cache_size:
            cache.popitem(last=False)

    def _refresh(self, customer_id: str) -> None:
        """Read an expired entry again in the background (one read per customer at once)."""
        if customer_id in self._refreshing or len(self._refreshing) >= MAX_REFRESHES:
            return
        self._refreshing[customer_id] = asyncio.get_running_loop().create_task(
            self._refresh_one(customer_id))

    async def _refresh_one(self, customer_id: str) -> None:
        try:
            self._store(customer_id, await self._fetch(customer_id))
        except Exception as exc:  # keep serving the stale entry; a later decision retries
            self._failed(exc)
        finally:
            self._refreshing.pop(customer_id, None)

    def _failed(self, exc: Exception) -> None:
        self._failures += 1
        if time.monotonic() - self._warned_at >= 10.0:  # an outage must not flood the logs
            log.warning("customer features unavailable (%d failed reads): %r", self._failures, exc)
            self._warned_at, self._failures = time.monotonic(), 0

    def _encoded(self, row: FeatureRow | None) -> _Read:
        if row is None:
            return _Read(None, self._encoder.defaults)
        return _Read(row, self._encoder.encode_customer(row.values))

    async def close(self, timeout: float = 5.0) -> None:
        """Cancel the background refreshes still in flight (at shutdown)."""
        await stop_tasks(list(self._refreshing.values()), timeout)
        self._refreshing.clear()  # a task cancelled before it ran never reached its `finally`

