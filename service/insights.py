"""The counts behind the uplift report and the touchpoint insights, cluster-wide.

What is counted, per hour: decisions per group (control or treatment) and channel;
feedback events per group, channel, journey stage, action kind and outcome; the value
they carry, and its square per group and channel (for the value's interval). Who counts:
the replica that writes a decision record counts the decision (`DecisionLog` calls
`decided` after a batch is written, off the request path), and the replica that accepts
a feedback event counts it, once (`FeedbackService` calls `observed` with the events the
store applied, duplicates left out). So every decision and every event is counted by
exactly one replica, and nothing is counted on the decision path.

Each replica adds up its counts in memory and, every `flush_seconds`, adds them to the
shared store (`RedisCounts`: one hash per hour, `nb:insights:<hour>`, incremented by one
script call per hour touched, expiring after the retention): any replica's report reads
the whole cluster's counts, at most `flush_seconds` late (the replica answering adds its
own first). A failed flush keeps the counts for the next one; a SIGKILL loses what a
replica had not flushed. Without Redis (`MemoryCounts`) the counts are this process's.

An event is counted in the hour of its decision (events carry their decision's time), so
a report since some hour covers the decisions made from that hour on and every outcome
they have had so far.

Label values are bounded by the world's vocabularies (`Labels`): a channel, journey
stage or action kind outside them counts as `other`, a missing one as `unknown`. The
same counts are Prometheus counters (`service/metrics.py`), per replica, with the same
bounded labels; never a customer or decision id.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import defaultdict
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

from features.config import World
from service.control import GROUPS, TREATMENT
from service.metrics import Metrics
from service.state import Record

log = logging.getLogger(__name__)

HOUR = 3600
OTHER, UNKNOWN = "other", "unknown"
#: the separator of a count's key parts (label values are world identifiers, never hold it)
SEP = "|"
#: count kinds: decisions, events, value, value squared
DECISIONS, EVENTS, VALUE, SQUARES = "d", "e", "v", "q"


class Bounded:
    """A label's allowed values: the known ones, `other` for the rest, `unknown` for none."""

    def __init__(self, known: Iterable[str]) -> None:
        self.known = frozenset(known)

    def __call__(self, value: object) -> str:
        if value is None or value == "":
            return UNKNOWN
        text = str(value)
        return text if text in self.known else OTHER


@dataclass(frozen=True)
class Labels:
    channel: Bounded
    stage: Bounded
    kind: Bounded
    group: Bounded = field(default_factory=lambda: Bounded(GROUPS))

    @classmethod
    def of(cls, world: World, kinds: Iterable[str] = ()) -> Labels:
        """The world's channels, journey stages and action kinds (and the catalog's kinds)."""
        def vocabulary(block: Any, feature: str) -> list[str]:
            encoding = world.model.one_hot(block, feature)
            return world.vocabulary(encoding.vocabulary) if encoding is not None else []

        return cls(Bounded(world.channels), Bounded(vocabulary("customer", "journey_stage")),
                   Bounded([*vocabulary("action", "kind"), *kinds]))


class CountStore(Protocol):
    async def add(self, hour: int, counts: Mapping[str, float], ttl_seconds: int) -> None:
        """Add `counts` to the hour's."""

    async def read(self, hours: Sequence[int]) -> list[dict[str, float]]:
        """Each hour's counts ({} where none)."""


class MemoryCounts:
    """This process's counts (the embedded default)."""

    def __init__(self) -> None:
        self._hours: dict[int, dict[str, float]] = {}

    async def add(self, hour: int, counts: Mapping[str, float], ttl_seconds: int) -> None:
        oldest = hour - ttl_seconds // HOUR
        for h in [h for h in self._hours if h < oldest]:
            del self._hours[h]
        into = self._hours.setdefault(hour, {})
        for key, n in counts.items():
            into[key] = into.get(key, 0.0) + n

    async def read(self, hours: Sequence[int]) -> list[dict[str, float]]:
        return [dict(self._hours.get(h, {})) for h in hours]


#: KEYS: the hour's hash; ARGV: ttl, then field, increment pairs
_ADD = """
for i = 2, #ARGV, 2 do
    redis.call('HINCRBYFLOAT', KEYS[1], ARGV[i], ARGV[i + 1])
end
redis.call('EXPIRE', KEYS[1], ARGV[1])
return 1
"""


class RedisCounts:
    """Hourly hashes shared by every replica (a hash is one key: fine on a Redis Cluster)."""

    def __init__(self, client: Any, prefix: str = "nb:") -> None:
        self._r = client
        self._prefix = prefix
        self._script = client.register_script(_ADD)

    def key(self, hour: int) -> str:
        return f"{self._prefix}insights:{hour}"

    async def add(self, hour: int, counts: Mapping[str, float], ttl_seconds: int) -> None:
        args: list[Any] = [ttl_seconds]
        for k, n in counts.items():
            args += [k, repr(float(n))]
        await self._script(keys=[self.key(hour)], args=args)

    async def read(self, hours: Sequence[int]) -> list[dict[str, float]]:
        if not hours:
            return []
        pipe = self._r.pipeline(transaction=False)
        for h in hours:
            pipe.hgetall(self.key(h))
        replies = await pipe.execute()
        return [{_text(k): float(v) for k, v in reply.items()} for reply in replies]


def _text(value: bytes | str) -> str:
    return value.decode() if isinstance(value, bytes) else value


class Counts:
    """Counts summed over hours, keyed by their parts (see the module docstring)."""

    def __init__(self, totals: Mapping[str, float]) -> None:
        self.totals = dict(totals)

    def rows(self, kind: str) -> Iterable[tuple[tuple[str, ...], float]]:
        """(key parts after the kind, count) of one kind."""
        for key, n in self.totals.items():
            parts = key.split(SEP)
            if parts[0] == kind:
                yield tuple(parts[1:]), n


class Insights:
    def __init__(self, store: CountStore, metrics: Metrics, labels: Labels,
                 kind_of: Callable[[str], str | None], flush_seconds: float = 1.0,
                 retention_hours: int = 24 * 35, clock: Callable[[], float] = time.time) -> None:
        self.store = store
        self._metrics = metrics
        self._labels = labels
        self._kind_of = kind_of
        self._flush_seconds = flush_seconds
        self.retention_hours = retention_hours
        self._clock = clock
        self._pending: defaultdict[int, defaultdict[str, float]] = defaultdict(lambda: defaultdict(float))
        self._lock = asyncio.Lock()

    def decided(self, records: Sequence[Record]) -> None:
        """Count written decision records (one per decision)."""
        lb, m = self._labels, self._metrics
        for r in records:
            group, channel = lb.group(r.get("group", TREATMENT)), lb.channel(r.get("channel"))
            self._pending[int(r["ts"] // HOUR)][SEP.join((DECISIONS, group, channel))] += 1
            m.group_decisions.inc(group, channel)

    def observed(self, events: Sequence[Record]) -> None:
        """Count feedback events the store applied (each once)."""
        lb, m = self._labels, self._metrics
        for e in events:
            group, channel = lb.group(e.get("group", TREATMENT)), lb.channel(e.get("channel"))
            stage, kind = lb.stage(e.get("journey_stage")), lb.kind(self._kind_of(e["action_id"]))
            outcome = str(e["outcome"])
            value = float(e.get("value") or 0.0)
            counts = self._pending[int(float(e.get("decided_at") or e["ts"]) // HOUR)]
            counts[SEP.join((EVENTS, group, channel, stage, kind, outcome))] += 1
            m.group_outcomes.inc(group, channel, outcome)
            m.touchpoint_events.inc(channel, stage, kind, outcome)
            if value:
                counts[SEP.join((VALUE, group, channel, stage, kind))] += value
                counts[SEP.join((SQUARES, group, channel))] += value * value
                m.group_value.inc(group, channel, amount=value)
                m.touchpoint_value.inc(channel, stage, kind, amount=value)

    async def flush(self) -> None:
        """Add this replica's counts to the store; what fails waits for the next flush."""
        async with self._lock:
            pending, self._pending = self._pending, defaultdict(lambda: defaultdict(float))
            for hour, counts in sorted(pending.items()):
                try:
                    await self.store.add(hour, counts, self.retention_hours * HOUR)
                except Exception as exc:
                    log.warning("adding insight counts to the store failed; kept for the next "
                                "flush: %r", exc)
                    for h, c in pending.items():
                        if h >= hour:
                            for k, n in c.items():
                                self._pending[h][k] += n
                    return

    async def run(self) -> None:
        while True:
            await asyncio.sleep(self._flush_seconds)
            await self.flush()

    async def counts(self, since: float | None = None) -> tuple[Counts, float]:
        """The cluster's counts from the hour of `since` (None: the whole retention) to
        now, and the start of that first hour."""
        await self.flush()
        now = int(self._clock() // HOUR)
        oldest = now - self.retention_hours + 1
        first = oldest if since is None else max(oldest, int(since // HOUR))
        hours = list(range(first, now + 1))
        totals: defaultdict[str, float] = defaultdict(float)
        for hour in await self.store.read(hours):
            for k, n in hour.items():
                totals[k] += n
        return Counts(totals), float(first * HOUR)
