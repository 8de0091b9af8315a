"""Customer features: degraded flags, and the in-process cache in front of the store."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Sequence

import numpy as np
import pytest

from features.config import shipped_world
from features.encoding import Encoder
from features.online import FeatureRow
from service import customer_features
from service.customer_features import CustomerFeatureService

ENCODER = Encoder(shipped_world("retail"))


def fresh() -> FeatureRow:
    """A row written just now (built per test: a module-level one would age during the suite)."""
    return FeatureRow({"segment": "value"}, event_ts=time.time())


class FakeReader:
    def __init__(self, rows: dict[str, FeatureRow]) -> None:
        self.rows = rows
        self.reads: list[str] = []
        self.fail = False

    async def read(self, entity_id: str) -> FeatureRow | None:
        self.reads.append(entity_id)
        if self.fail:
            raise TimeoutError("slow store")
        return self.rows.get(entity_id)

    async def read_many(self, entity_ids: Sequence[str]) -> dict[str, FeatureRow]:
        raise NotImplementedError


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def clock(monkeypatch: pytest.MonkeyPatch) -> Clock:
    c = Clock()
    monkeypatch.setattr(customer_features.time, "monotonic", c)
    return c


def get(service: CustomerFeatureService, customer_id: str | None) -> customer_features.CustomerFeatures:
    return asyncio.run(service.get(customer_id))


def test_degraded_flags() -> None:
    old = FeatureRow({"segment": "value"}, event_ts=time.time() - 100)
    row = fresh()
    reader = FakeReader({"c1": row, "c2": old})
    service = CustomerFeatureService(reader, ENCODER, max_age_seconds=50)
    assert get(service, None).degraded == ("anonymous",)
    assert get(service, "c1").degraded == () and get(service, "c1").values == row.values
    assert get(service, "c2").degraded == ("stale_customer_features",)
    assert get(service, "nobody").degraded == ("unknown_customer",)
    reader.fail = True
    assert get(service, "c1").degraded == ("features_unavailable",)


def test_features_come_encoded_with_defaults_where_missing() -> None:
    row = FeatureRow({"segment": "vip", "recency_days": 4.0}, event_ts=time.time())
    service = CustomerFeatureService(FakeReader({"c1": row}), ENCODER, max_age_seconds=50, cache_seconds=5)
    for _ in range(2):  # read, then cached
        got = get(service, "c1").vector
        np.testing.assert_array_equal(got.block, ENCODER.encode_customer(row.values).block)
        assert got.labels["segment"] == "vip"
    for customer_id in (None, "nobody"):
        np.testing.assert_array_equal(get(service, customer_id).vector.block, ENCODER.encode_customer({}).block)


def test_without_cache_every_decision_reads_the_store() -> None:
    row = fresh()
    reader = FakeReader({"c1": row})
    service = CustomerFeatureService(reader, ENCODER, max_age_seconds=50, cache_seconds=0)
    for _ in range(3):
        get(service, "c1")
    assert reader.reads == ["c1"] * 3


def test_cache_reuses_rows_and_misses_until_expiry(clock: Clock) -> None:
    row = fresh()
    reader = FakeReader({"c1": row})
    service = CustomerFeatureService(reader, ENCODER, max_age_seconds=50, cache_seconds=5, stale_seconds=0)
    assert get(service, "c1").degraded == ()
    assert get(service, "nobody").degraded == ("unknown_customer",)
    clock.now += 4.9
    assert get(service, "c1").values == row.values
    assert get(service, "nobody").degraded == ("unknown_customer",)
    assert reader.reads == ["c1", "nobody"]
    reader.rows["nobody"] = row  # materialized meanwhile: seen once the entry expires
    clock.now += 0.2
    assert get(service, "nobody").degraded == ()
    assert reader.reads == ["c1", "nobody", "nobody"]


def test_cache_judges_staleness_at_every_decision(clock: Clock, monkeypatch: pytest.MonkeyPatch) -> None:
    reader = FakeReader({"c1": FeatureRow({"segment": "value"}, event_ts=1000.0)})
    service = CustomerFeatureService(reader, ENCODER, max_age_seconds=50, cache_seconds=60)
    monkeypatch.setattr(customer_features.time, "time", lambda: 1040.0)
    assert get(service, "c1").degraded == ()
    monkeypatch.setattr(customer_features.time, "time", lambda: 1060.0)
    assert get(service, "c1").degraded == ("stale_customer_features",)
    assert reader.reads == ["c1"]


def test_failed_reads_are_not_cached(clock: Clock) -> None:
    row = fresh()
    reader = FakeReader({"c1": row})
    service = CustomerFeatureService(reader, ENCODER, max_age_seconds=50, cache_seconds=5)
    reader.fail = True
    assert get(service, "c1").degraded == ("features_unavailable",)
    reader.fail = False
    assert get(service, "c1").degraded == ()
    assert reader.reads == ["c1", "c1"]


def test_cache_is_a_bounded_lru(clock: Clock) -> None:
    row = fresh()
    reader = FakeReader({"a": row, "b": row, "c": row})
    service = CustomerFeatureService(reader, ENCODER, max_age_seconds=50, cache_seconds=60, cache_size=2)
    for customer in ("a", "b", "a", "c"):  # "b" is the least recently used when "c" comes
        get(service, customer)
    assert reader.reads == ["a", "b", "c"]
    get(service, "a")
    get(service, "b")
    assert reader.reads == ["a", "b", "c", "b"]


async def settle(service: CustomerFeatureService) -> None:
    """Wait for the background refreshes (the `clock` fixture freezes asyncio's clock too)."""
    await asyncio.gather(*service._refreshing.values())


class GatedReader(FakeReader):
    """Reads wait for `gate` (so a test sees a refresh in flight)."""

    def __init__(self, rows: dict[str, FeatureRow]) -> None:
        super().__init__(rows)
        self.gate = asyncio.Event()

    async def read(self, entity_id: str) -> FeatureRow | None:
        await self.gate.wait()
        return await super().read(entity_id)


def test_an_expired_entry_is_served_while_one_background_read_refreshes_it(clock: Clock) -> None:
    old, new = FeatureRow({"segment": "value"}, time.time()), FeatureRow({"segment": "vip"}, time.time())
    reader = GatedReader({"c1": old})
    service = CustomerFeatureService(reader, ENCODER, max_age_seconds=50, cache_seconds=5, stale_seconds=5)

    async def scenario() -> None:
        reader.gate.set()
        assert (await service.get("c1")).values == old.values  # the first read waits
        reader.rows["c1"] = new  # materialized meanwhile
        reader.gate.clear()
        clock.now += 6  # expired, within the stale window
        for _ in range(3):  # served at once, stale; one refresh in flight for all three
            assert (await service.get("c1")).values == old.values
        await asyncio.sleep(0)
        assert reader.reads == ["c1"] and len(service._refreshing) == 1
        reader.gate.set()
        await settle(service)
        assert not service._refreshing
        assert (await service.get("c1")).values == new.values  # refreshed: fresh again
        assert reader.reads == ["c1", "c1"]

    asyncio.run(scenario())


def test_past_the_stale_window_a_decision_waits_for_the_store(clock: Clock) -> None:
    old, new = FeatureRow({"segment": "value"}, time.time()), FeatureRow({"segment": "vip"}, time.time())
    reader = FakeReader({"c1": old})
    service = CustomerFeatureService(reader, ENCODER, max_age_seconds=50, cache_seconds=5, stale_seconds=5)
    assert get(service, "c1").values == old.values
    reader.rows["c1"] = new
    clock.now += 10.0
    assert get(service, "c1").values == new.values
    assert reader.reads == ["c1", "c1"]


def test_a_failed_refresh_keeps_the_stale_entry_and_a_later_decision_retries(clock: Clock) -> None:
    row = fresh()
    reader = FakeReader({"c1": row})
    service = CustomerFeatureService(reader, ENCODER, max_age_seconds=50, cache_seconds=5, stale_seconds=5)

    async def scenario() -> None:
        await service.get("c1")
        clock.now += 6
        reader.fail = True
        assert (await service.get("c1")).degraded == ()  # stale, not unavailable
        await settle(service)
        assert reader.reads == ["c1", "c1"] and not service._refreshing
        reader.fail = False
        assert (await service.get("c1")).values == row.values
        await settle(service)
        assert reader.reads == ["c1", "c1", "c1"]
        clock.now += 1  # refreshed at the last read: fresh, no more reads
        await service.get("c1")
        assert reader.reads == ["c1", "c1", "c1"]

    asyncio.run(scenario())


def test_refreshes_in_flight_are_bounded_and_cancelled_on_close(
        clock: Clock, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(customer_features, "MAX_REFRESHES", 2)
    rows = {c: fresh() for c in ("a", "b", "c")}
    reader = GatedReader(rows)
    service = CustomerFeatureService(reader, ENCODER, max_age_seconds=50, cache_seconds=5, stale_seconds=5)

    async def scenario() -> None:
        reader.gate.set()
        for c in rows:
            await service.get(c)
        reader.gate.clear()
        clock.now += 6
        for c in rows:  # all three served stale; only two refreshes start
            assert (await service.get(c)).values == rows[c].values
        assert sorted(service._refreshing) == ["a", "b"]
        tasks = list(service._refreshing.values())
        await service.close()
        assert all(t.cancelled() for t in tasks) and not service._refreshing
        assert reader.reads == ["a", "b", "c"]  # the cancelled refreshes never read

    asyncio.run(scenario())


def test_cached_lookups_are_counted_as_hits_stale_serves_and_misses(clock: Clock) -> None:
    from prometheus_client import CollectorRegistry, generate_latest

    from service.metrics import Metrics

    metrics = Metrics(CollectorRegistry())
    reader = FakeReader({"c1": fresh(), "c2": fresh()})
    service = CustomerFeatureService(reader, ENCODER, max_age_seconds=50, cache_seconds=5,
                                     stale_seconds=5, lookups=metrics.customer_cache)
    metrics.customer_cache_entries.set_function(lambda: len(service))

    async def scenario() -> None:
        await service.get("c1")  # miss
        await service.get("c1")  # hit
        await service.get("c2")  # miss
        await service.get(None)  # anonymous: no lookup
        clock.now += 6
        await service.get("c1")  # expired, served while it is read again
        await settle(service)
        clock.now += 20
        await service.get("c2")  # past the stale window: a miss

    asyncio.run(scenario())
    counts = metrics.customer_cache
    assert (counts.value("hit"), counts.value("stale"), counts.value("miss")) == (1.0, 1.0, 3.0)
    text = generate_latest(metrics.registry).decode()
    assert 'nextbest_customer_cache_lookups_total{result="miss"} 3.0' in text
    assert "nextbest_customer_cache_entries 2.0" in text
