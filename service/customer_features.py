"""Customer features for one decision: one online-store read, defaults on any miss.

A missing customer, an unreachable or slow store, or stale features never fail a
decision: the schema's defaults fill in and the decision carries a `degraded` reason.
Slowness is bounded by the reader's own client (the Redis client on the decision path
has a socket timeout of NEXTBEST_REDIS_TIMEOUT_SECONDS), not by `asyncio.wait_for`,
which would cost a task per decision.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass

from features.online import OnlineFeatureReader, Scalar

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class CustomerFeatures:
    values: dict[str, Scalar]
    degraded: tuple[str, ...]


class CustomerFeatureService:
    def __init__(self, reader: OnlineFeatureReader, max_age_seconds: float) -> None:
        self._reader = reader
        self._max_age = max_age_seconds

    async def get(self, customer_id: str | None) -> CustomerFeatures:
        if customer_id is None:
            return CustomerFeatures({}, ("anonymous",))
        try:
            row = await self._reader.read(customer_id)
        except Exception as exc:  # timeouts and connection errors alike: serve defaults
            log.warning("customer features unavailable: %r", exc)
            return CustomerFeatures({}, ("features_unavailable",))
        if row is None:
            return CustomerFeatures({}, ("unknown_customer",))
        if time.time() - row.event_ts > self._max_age:
            return CustomerFeatures(row.values, ("stale_customer_features",))
        return CustomerFeatures(row.values, ())
