"""service/health.py and the action cache's guard: an emptied online store is noticed,
flagged and alerted, and never silently replaces the cached action features; `/readyz`
answers from the background check (a Redis that is away: tests/service/test_faults.py).

The stores here are copies of the demo's materialized Redis db (COPY into a db of their
own), so emptying one leaves the session's demo store alone.
"""

from __future__ import annotations

import socket
import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import cast

import numpy as np
import pytest
import redis
import redis.asyncio as aioredis
from fastapi.testclient import TestClient

from features.config import shipped_world
from features.materialized import SAMPLE_SIZE, MaterializationMark, mark_key
from features.online import EntityLayout
from load_tests.processes import free_port
from service.action_features import ActionFeatureCache
from service.app import create_app
from service.catalog import load_catalog
from service.health import RedisStoreProbe, StoreHealth
from service.metrics import Metrics
from tests.demo_fixtures import DemoDirs
from tests.service.conftest import make_settings

DB = 7
RETAIL = shipped_world("retail")
KNOWN = "c00001"
pytestmark = pytest.mark.anyio


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


def copy_features(source_url: str, target_url: str) -> int:
    """Copy every key but the service's own (`nb:*`) from one db to another; how many."""
    source = redis.Redis.from_url(source_url)
    target_db = int(target_url.rsplit("/", 1)[1])
    copied = 0
    for key in source.scan_iter(count=1000):
        if not key.startswith(b"nb:"):
            copied += int(cast(bool, source.copy(key, key, destination_db=str(target_db), replace=True)))
    source.close()
    return copied


@pytest.fixture
def store(demo_redis: str) -> Iterator[str]:
    """A private copy of the demo's online store (and its materialization mark)."""
    url = demo_redis.rsplit("/", 1)[0] + f"/{DB}"
    admin = redis.Redis.from_url(url)
    admin.flushdb()
    assert copy_features(demo_redis, url) > 0
    yield url
    admin.flushdb()
    admin.close()


def test_materializing_into_redis_leaves_a_mark(demo: DemoDirs, demo_redis: str) -> None:
    client = redis.Redis.from_url(demo_redis)
    mark = MaterializationMark.from_hash(cast(dict, client.hgetall(mark_key(RETAIL.project))))
    assert mark is not None and mark.entity == "customer"
    assert mark.source_entities == 400 and len(mark.sample) == SAMPLE_SIZE
    layout = EntityLayout.of(RETAIL, "customer")
    assert client.exists(*(layout.redis_key(c) for c in mark.sample)) == SAMPLE_SIZE
    assert time.time() - mark.at < 3600
    client.close()


def _probe(url: str, demo: DemoDirs) -> tuple[RedisStoreProbe, aioredis.Redis]:
    client = aioredis.from_url(url, socket_timeout=1.0, socket_connect_timeout=1.0)
    layouts = {e: EntityLayout.of(RETAIL, e) for e in ("customer", "action")}
    ids = load_catalog(demo.data_dir / "catalog.json", RETAIL).ids
    return RedisStoreProbe(client, RETAIL.project, layouts, "action", ids), client


async def test_the_probe_tells_a_filled_store_from_an_emptied_one(store: str, demo: DemoDirs) -> None:
    probe, client = _probe(store, demo)
    admin = redis.Redis.from_url(store)
    try:
        assert await probe.emptied() is False
        mark = MaterializationMark.from_hash(cast(dict, admin.hgetall(mark_key(RETAIL.project))))
        assert mark is not None
        customers = EntityLayout.of(RETAIL, "customer")
        # up to half of the sampled customers gone: a drop, but not an emptied store
        admin.delete(*(customers.redis_key(c) for c in mark.sample[:SAMPLE_SIZE // 2]))
        assert await probe.emptied() is False
        admin.delete(customers.redis_key(mark.sample[SAMPLE_SIZE // 2]))
        assert await probe.emptied() is True
        # no mark (a store `feast materialize` filled): the catalog's actions decide
        admin.delete(mark_key(RETAIL.project))
        assert await probe.emptied() is False
        admin.flushdb()
        assert await probe.emptied() is True
    finally:
        admin.close()
        await client.aclose()


async def test_the_check_reports_an_emptied_store_and_a_backend_away(store: str,
                                                                     demo: DemoDirs) -> None:
    metrics = Metrics()
    probe, client = _probe(store, demo)
    health = StoreHealth(probe, metrics, interval=60, timeout=1.0)
    admin = redis.Redis.from_url(store)
    try:
        await health.check()
        assert health.backend_up and not health.store_empty and health.degraded == ()
        assert _gauge(metrics, "nextbest_state_backend_up") == 1
        assert _gauge(metrics, "nextbest_online_store_empty") == 0
        admin.flushdb()
        await health.check()
        assert health.backend_up and health.store_empty
        assert health.degraded == ("online_store_empty",)
        assert _gauge(metrics, "nextbest_online_store_empty") == 1
        copy_features(store.rsplit("/", 1)[0] + "/1", store)
        await health.check()
        assert health.degraded == () and _gauge(metrics, "nextbest_online_store_empty") == 0
    finally:
        admin.close()
        await client.aclose()

    # nothing listening: refused at once; a peer that never answers: bounded by the timeout
    for url, bound in ((f"redis://127.0.0.1:{free_port()}/0", 1.0), (None, 0.3 + 1.0)):
        with _silent_peer() as silent:
            away, client = _probe(url or silent, demo)
            down = StoreHealth(away, metrics, interval=60, timeout=0.3)
            started = time.monotonic()
            await down.check()
            assert time.monotonic() - started < bound
            assert not down.backend_up and down.error
            assert _gauge(metrics, "nextbest_state_backend_up") == 0
            await client.aclose()


async def test_a_refresh_that_finds_no_action_keeps_the_cached_features(
    store: str, demo: DemoDirs
) -> None:
    from features.encoding import Encoder
    from features.online import RedisFeatureReader

    metrics = Metrics()
    client = aioredis.from_url(store)
    catalog = load_catalog(demo.data_dir / "catalog.json", RETAIL)
    cache = ActionFeatureCache(RedisFeatureReader(client, EntityLayout.of(RETAIL, "action")),
                               catalog, Encoder(RETAIL), 60.0, metrics)
    admin = redis.Redis.from_url(store)
    try:
        first = await cache.load()
        assert not cache.store_empty and cache.missing == []
        before = first.block.copy()
        admin.flushdb()
        kept = await cache.load()
        assert kept is first and cache.store_empty
        assert np.array_equal(kept.block, before)  # not replaced by defaults
        assert _counter(metrics, "nextbest_action_refresh_kept_total") == 1
        copy_features(store.rsplit("/", 1)[0] + "/1", store)
        again = await cache.load()
        assert again is not first and not cache.store_empty
        assert np.array_equal(again.block, before)
    finally:
        admin.close()
        await client.aclose()


def test_decisions_are_flagged_while_the_online_store_is_emptied(store: str,
                                                                 demo: DemoDirs) -> None:
    settings = make_settings(demo, store, health_interval_seconds=0.05,
                             action_refresh_seconds=0.05, model_version="1")  # flushdb drops pointers
    admin = redis.Redis.from_url(store)
    body = {"customer_id": KNOWN, "channel": "web", "placement": "home", "limit": 3}
    with TestClient(create_app(settings)) as client:
        runtime = client.app.state.runtime  # type: ignore[attr-defined]
        before = runtime.action_cache.matrix.block.copy()
        assert client.post("/v1/decisions", json=body).json()["degraded"] == []
        ready = client.get("/readyz").json()
        assert (ready["state_backend"], ready["online_store"], ready["degraded"]) == ("up", "ok", [])

        admin.flushdb()
        ready = _wait_for(client, lambda r: r["online_store"] == "empty")
        assert ready["degraded"] == ["online_store_empty"] and ready["state_backend"] == "up"
        decision = client.post("/v1/decisions", json={**body, "customer_id": None}).json()
        assert decision["degraded"] == ["anonymous", "online_store_empty"]
        assert decision["actions"]
        metrics = client.get("/metrics").text
        assert "nextbest_online_store_empty 1.0" in metrics and "nextbest_ready 1.0" in metrics
        deadline = time.monotonic() + 5
        while runtime.metrics.action_refresh_kept._value.get() < 1:
            assert time.monotonic() < deadline, "no action refresh ran on the emptied store"
            time.sleep(0.05)
        # the cached features were kept, not replaced by defaults
        assert np.array_equal(runtime.action_cache.matrix.block, before)

        copy_features(store.rsplit("/", 1)[0] + "/1", store)
        ready = _wait_for(client, lambda r: r["online_store"] == "ok")
        assert ready["degraded"] == []
        assert "online_store_empty" not in client.post("/v1/decisions", json=body).json()["degraded"]
        assert "nextbest_online_store_empty 0.0" in client.get("/metrics").text
    admin.close()


def _wait_for(client: TestClient, condition: object, seconds: float = 5.0) -> dict:
    deadline = time.monotonic() + seconds
    while True:
        r = client.get("/readyz")
        assert r.status_code == 200, r.text
        if condition(r.json()):  # type: ignore[operator]
            return dict(r.json())
        assert time.monotonic() < deadline, f"/readyz still says {r.json()}"
        time.sleep(0.05)


def _gauge(metrics: Metrics, name: str) -> float:
    value = metrics.registry.get_sample_value(name)
    assert value is not None, name
    return value


def _counter(metrics: Metrics, name: str) -> float:
    return _gauge(metrics, name)


@contextmanager
def _silent_peer() -> Iterator[str]:
    """A TCP listener that never accepts: connections open, and nothing ever answers."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        s.listen(16)
        yield f"redis://127.0.0.1:{s.getsockname()[1]}/0"
