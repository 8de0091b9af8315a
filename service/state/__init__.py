"""Service state behind one interface, two backends.

`RedisState` when NEXTBEST_REDIS_URL is set (shared by every replica), `MemoryState`
otherwise (one process, nothing to install). The same contract tests run on both
(`tests/service/test_state.py`).

What lives here:
- the decision log: one record per decision, kept `decision_ttl_seconds` so feedback
  can be joined with it;
- the feedback stream: accepted feedback events, self-contained learning examples,
  ordered, read by every replica's learner from an id onwards.
"""

from __future__ import annotations

import functools
from collections.abc import Awaitable, Callable, Coroutine, Sequence
from typing import Any, ParamSpec, Protocol, TypeVar

from redis.exceptions import ClusterDownError, ReadOnlyError, SlotNotCoveredError, TryAgainError
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import TimeoutError as RedisTimeoutError

Record = dict[str, Any]
P = ParamSpec("P")
T = TypeVar("T")

#: What a store raises when it is away or stalled (not a bug: try again later). On a
#: Redis Cluster, while a master fails over: CLUSTERDOWN and TRYAGAIN answers, a slot no
#: node serves yet, and READONLY from a master just turned replica.
UNAVAILABLE: tuple[type[Exception], ...] = (
    RedisConnectionError, RedisTimeoutError, OSError, TimeoutError,
    ClusterDownError, TryAgainError, SlotNotCoveredError, ReadOnlyError,
)


def closed_transport_unavailable(
    method: Callable[P, Awaitable[T]],
) -> Callable[P, Coroutine[Any, Any, T]]:
    """Raise a write on a connection the server has closed as the ConnectionError it is.

    Under uvloop, redis-py's cluster client can write to a connection whose node has
    just gone away, and uvloop answers with a RuntimeError ("... the handler is closed")
    rather than an OSError: without this, a Redis Cluster failover surfaced as a 500.
    """
    @functools.wraps(method)
    async def call(*args: P.args, **kwargs: P.kwargs) -> T:
        try:
            return await method(*args, **kwargs)
        except RuntimeError as exc:
            if "handler is closed" not in str(exc):
                raise
            raise RedisConnectionError(f"connection closed: {exc}") from exc

    return call


def stream_position(entry_id: str) -> tuple[int, ...]:
    """A stream id as a comparable key: Redis' "ms-seq" or the memory backend's counter."""
    return tuple(int(part) for part in entry_id.split("-"))


class StateStore(Protocol):
    backend: str

    async def log_decisions(self, records: Sequence[Record],
                            blobs: Sequence[bytes] | None = None) -> None:
        """Store decision records (each has a `decision_id`) with the configured TTL.

        `blobs`: the records already serialized with orjson, when the caller has them.
        """

    async def get_decisions(self, decision_ids: Sequence[str]) -> list[Record | None]:
        """The records of these decisions, None where unknown or expired."""

    async def append_feedback(self, events: Sequence[Record],
                              keys: Sequence[str] | None = None) -> list[bool]:
        """Durably append feedback events to the stream, in order; True where appended.

        With `keys` (one per event), an event whose key was appended before, within the
        decision TTL, is not appended again (False): the check and the append are one
        atomic step, so retries, batches and replicas apply an event once.
        """

    async def read_feedback(
        self, after: str, count: int, block_ms: int
    ) -> list[tuple[str, Record]]:
        """Events after stream id `after` ("0" = from the start), waiting up to block_ms."""

    async def feedback_length(self) -> int:
        """Number of events currently held by the stream."""

    async def feedback_bounds(self) -> tuple[str, str] | None:
        """Stream ids of the oldest and the newest event held, None when it is empty."""

    async def ping(self) -> None:
        """Raise if the backend is unreachable."""

    async def close(self) -> None: ...
