"""Customer features for one decision: one online-store read, defaults on any miss.

A missing customer, an unreachable or slow store, or stale features never fail a
decision: the schema's defaults fill in and the decision carries a `degraded` reason.
Slowness is bounded by the reader's own client (the Redis client on the decision path
has a socket timeout of NEXTBEST_REDIS_TIMEOUT_SECONDS), not by `asyncio.wait_for`,
which would cost a task per decision.

Each read row is encoded once (`features.encoding.encode_customer`) and the encoded
vector travels with it, so a cached customer costs no encoding either; a request that
names a journey stage gets a copy with that stage (`with_journey_stage`).

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

from features.encoding import CustomerVector, encode_customer
from features.online import FeatureRow, OnlineFeatureReader, Scalar

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class CustomerFeatures:
    values: dict[str, Scalar]
    degraded: tuple[str, ...]
    vector: CustomerVector  # `values` encoded (schema defaults where missing)


@dataclass(frozen=True)
class _Read:
    """One store read as cached: the row (None: never written) and its encoding."""

    row: FeatureRow | None
    vector: CustomerVector


_DEFAULTS = encode_customer({})
ANONYMOUS = CustomerFeatures({}, ("anonymous",), _DEFAULTS)
UNAVAILABLE = CustomerFeatures({}, ("features_unavailable",), _DEFAULTS)
UNKNOWN = CustomerFeatures({}, ("unknown_customer",), _DEFAULTS)


class CustomerFeatureService:
    def __init__(
        self, reader: OnlineFeatureReader, max_age_seconds: float,
        cache_seconds: float = 0.0, cache_size: int = 20_000,
    ) -> None:
        self._reader = reader
        self._max_age = max_age_seconds
        self._cache_seconds = cache_seconds
        self._cache_size = cache_size
        # customer id -> (monotonic expiry, what the read found)
        self._cache: OrderedDict[str, tuple[float, _Read]] = OrderedDict()
        self._failures = 0  # failed reads since the last warning (one warning per 10 s)
        self._warned_at = float("-inf")

    async def get(self, customer_id: str | None) -> CustomerFeatures:
        if customer_id is None:
            return ANONYMOUS
        try:
            found = await self._read(customer_id)
        except Exception as exc:  # timeouts and connection errors alike: serve defaults
            self._failures += 1
            if time.monotonic() - self._warned_at >= 10.0:  # an outage must not flood the logs
                log.warning("customer features unavailable (%d failed reads): %r", self._failures, exc)
                self._warned_at, self._failures = time.monotonic(), 0
            return UNAVAILABLE
        row = found.row
        if row is None:
            return UNKNOWN
        if time.time() - row.event_ts > self._max_age:
            return CustomerFeatures(row.values, ("stale_customer_features",), found.vector)
        return CustomerFeatures(row.values, (), found.vector)

    async def _read(self, customer_id: str) -> _Read:
        if self._cache_seconds <= 0:
            return _encoded(await self._reader.read(customer_id))
        cache = self._cache
        now = time.monotonic()
        hit = cache.get(customer_id)
        if hit is not None and hit[0] > now:
            cache.move_to_end(customer_id)
            return hit[1]
        found = _encoded(await self._reader.read(customer_id))
        cache[customer_id] = (time.monotonic() + self._cache_seconds, found)
        cache.move_to_end(customer_id)
        if len(cache) > self._cache_size:
            cache.popitem(last=False)
        return found


def _encoded(row: FeatureRow | None) -> _Read:
    return _Read(row, encode_customer(row.values) if row is not None else _DEFAULTS)
