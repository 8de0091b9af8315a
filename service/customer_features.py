"""Customer features for one decision: one online-store read, defaults on any miss.

A missing customer, an unreachable or slow store, or stale features never fail a
decision: the schema's defaults fill in and the decision carries a `degraded` reason.
Slowness is bounded by the reader's own client (the Redis client on the decision path
has a socket timeout of NEXTBEST_REDIS_TIMEOUT_SECONDS), not by `asyncio.wait_for`,
which would cost a task per decision.

Reads are cached in-process for NEXTBEST_CUSTOMER_CACHE_SECONDS (a bounded LRU):
features change only when a materialization writes them, so a busy customer costs one
store read per few seconds instead of one per decision. The price is that a
materialization (or a first write of a new customer) shows up to that many seconds late
on this replica. Known and unknown customers are cached alike; failed reads are not, and
staleness is judged at every decision from the row's own event time.
"""

from __future__ import annotations

import logging
import time
from collections import OrderedDict
from dataclasses import dataclass

from features.online import FeatureRow, OnlineFeatureReader, Scalar

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class CustomerFeatures:
    values: dict[str, Scalar]
    degraded: tuple[str, ...]


ANONYMOUS = CustomerFeatures({}, ("anonymous",))
UNAVAILABLE = CustomerFeatures({}, ("features_unavailable",))
UNKNOWN = CustomerFeatures({}, ("unknown_customer",))


class CustomerFeatureService:
    def __init__(
        self, reader: OnlineFeatureReader, max_age_seconds: float,
        cache_seconds: float = 0.0, cache_size: int = 20_000,
    ) -> None:
        self._reader = reader
        self._max_age = max_age_seconds
        self._cache_seconds = cache_seconds
        self._cache_size = cache_size
        # customer id -> (monotonic expiry, row or None for a customer never written)
        self._cache: OrderedDict[str, tuple[float, FeatureRow | None]] = OrderedDict()
        self._failures = 0  # failed reads since the last warning (one warning per 10 s)
        self._warned_at = float("-inf")

    async def get(self, customer_id: str | None) -> CustomerFeatures:
        if customer_id is None:
            return ANONYMOUS
        try:
            row = await self._read(customer_id)
        except Exception as exc:  # timeouts and connection errors alike: serve defaults
            self._failures += 1
            if time.monotonic() - self._warned_at >= 10.0:  # an outage must not flood the logs
                log.warning("customer features unavailable (%d failed reads): %r", self._failures, exc)
                self._warned_at, self._failures = time.monotonic(), 0
            return UNAVAILABLE
        if row is None:
            return UNKNOWN
        if time.time() - row.event_ts > self._max_age:
            return CustomerFeatures(row.values, ("stale_customer_features",))
        return CustomerFeatures(row.values, ())

    async def _read(self, customer_id: str) -> FeatureRow | None:
        if self._cache_seconds <= 0:
            return await self._reader.read(customer_id)
        cache = self._cache
        now = time.monotonic()
        hit = cache.get(customer_id)
        if hit is not None and hit[0] > now:
            cache.move_to_end(customer_id)
            return hit[1]
        row = await self._reader.read(customer_id)
        cache[customer_id] = (time.monotonic() + self._cache_seconds, row)
        cache.move_to_end(customer_id)
        if len(cache) > self._cache_size:
            cache.popitem(last=False)
        return row
