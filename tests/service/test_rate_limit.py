"""Per-key rate limits: GCRA in-process and in a real Redis, and 429 + Retry-After over HTTP."""

from __future__ import annotations

import asyncio
import hashlib

import pytest
import redis
from fastapi.testclient import TestClient
from pydantic import SecretStr

from service.access import ApiKey, RateLimit
from service.app import create_app
from service.rate_limit import MemoryRateLimiter, RedisRateLimiter
from service.settings import Settings
from service.state.resp import RespConnection
from tests.demo_fixtures import DemoDirs, clear_service_state
from tests.service.conftest import make_settings

KEY = ApiKey("till", hashlib.sha256(b"s").digest(), frozenset({"decide"}))
DECISION = {"channel": "web", "placement": "home", "limit": 2}


def test_memory_limits_allow_the_burst_then_the_rate() -> None:
    limiter, limit = MemoryRateLimiter(), RateLimit(per_second=10.0, burst=3)
    now = 100.0
    assert [limiter.take("a", limit, now) for _ in range(3)] == [0.0, 0.0, 0.0]
    wait = limiter.take("a", limit, now)
    assert wait == pytest.approx(0.1)
    assert limiter.take("a", limit, now + 0.05) == pytest.approx(0.05)  # refusals move nothing
    assert limiter.take("a", limit, now + 0.1) == 0.0
    assert limiter.take("b", limit, now) == 0.0  # each key its own bucket
    # Sustained: one second at the rate passes exactly `rate` requests after the burst.
    limiter = MemoryRateLimiter()
    passed = sum(limiter.take("a", limit, now + i / 1000) == 0.0 for i in range(1000))
    assert passed == 3 + 10 - 1  # the burst, then one per interval (1/rate)


async def redis_limiter(url: str) -> tuple[RedisRateLimiter, RespConnection]:
    connection = RespConnection(url, timeout=1.0)
    return RedisRateLimiter(connection), connection


def test_redis_limits_are_shared_by_replicas(redis_url: str) -> None:
    async def run() -> list[float]:
        (one, c1), (two, c2) = await redis_limiter(redis_url), await redis_limiter(redis_url)
        limit = RateLimit(per_second=2.0, burst=4)
        waits = [await (one if i % 2 else two).acquire(KEY, limit) for i in range(6)]
        await c1.aclose()
        await c2.aclose()
        return waits

    waits = asyncio.run(run())
    assert waits[:4] == [0.0] * 4
    assert all(0.3 < w <= 0.5 for w in waits[4:]), waits  # one per interval after the burst
    client = redis.Redis.from_url(redis_url)
    ttl = int(client.pttl("nb:rate:till"))  # type: ignore[arg-type]
    assert 0 < ttl <= 2_100  # the bucket expires once full again
    client.close()


def test_redis_limits_refill_at_the_rate(redis_url: str) -> None:
    async def run() -> tuple[float, float]:
        limiter, connection = await redis_limiter(redis_url)
        limit = RateLimit(per_second=20.0, burst=1)
        assert await limiter.acquire(KEY, limit) == 0.0
        wait = await limiter.acquire(KEY, limit)
        await asyncio.sleep(wait + 0.01)
        after = await limiter.acquire(KEY, limit)
        await connection.aclose()
        return wait, after

    wait, after = asyncio.run(run())
    assert 0.0 < wait <= 0.05 and after == 0.0


def test_redis_away_limits_in_process_and_counts_it() -> None:
    fallbacks: list[int] = []

    async def run() -> list[float]:
        connection = RespConnection("redis://127.0.0.1:1/0", timeout=0.2)  # nothing listens
        limiter = RedisRateLimiter(connection, on_fallback=lambda: fallbacks.append(1))
        waits = [await limiter.acquire(KEY, RateLimit(1.0, 2)) for _ in range(3)]
        await connection.aclose()
        return waits

    waits = asyncio.run(run())
    assert waits[:2] == [0.0, 0.0] and waits[2] > 0 and len(fallbacks) == 3


@pytest.fixture(params=["memory", "redis state, limits in memory", "redis"])
def limited_settings(request: pytest.FixtureRequest, demo: DemoDirs) -> Settings:
    keys = SecretStr("till:till-secret:decide:1/3,shop:shop-secret:decide+feedback")
    if request.param == "memory":
        return make_settings(demo, api_keys=keys)
    url = request.getfixturevalue("demo_redis")
    clear_service_state(url)
    backend = "redis" if request.param == "redis" else "memory"
    return make_settings(demo, url, api_keys=keys, rate_limit_backend=backend)


def test_a_key_over_its_limit_gets_429_with_retry_after(limited_settings: Settings) -> None:
    with TestClient(create_app(limited_settings)) as c:
        till = {"X-API-Key": "till-secret"}
        statuses = [c.post("/v1/decisions", json=DECISION, headers=till).status_code for _ in range(3)]
        assert statuses == [200, 200, 200]  # the burst
        r = c.post("/v1/decisions", json=DECISION, headers=till)
        assert r.status_code == 429 and r.headers["Retry-After"] == "1"
        body = r.json()
        assert body["error"] == "rate_limited"
        assert body["message"].startswith("key 'till' is limited to 1 requests/s (burst 3); the "
                                          "next request may pass in 0.")
        assert "till-secret" not in r.text
        # A key without a limit is never limited.
        shop = {"X-API-Key": "shop-secret"}
        assert all(c.post("/v1/decisions", json=DECISION, headers=shop).status_code == 200
                   for _ in range(10))
        metrics = c.get("/metrics").text
        assert 'nextbest_rate_limited_total{key="till"} 1.0' in metrics
        assert 'nextbest_errors_total{endpoint="/v1/decisions",status="429"} 1.0' in metrics
        assert "nextbest_rate_limit_fallbacks_total 0.0" in metrics
        if limited_settings.redis_url:
            client = redis.Redis.from_url(limited_settings.redis_url)
            in_redis = limited_settings.rate_limits_in_redis
            assert client.exists("nb:rate:till") == in_redis and not client.exists("nb:rate:shop")
            client.close()
