"""Parity: the fast reader returns what Feast's SDK returns, on the same online store.

Both backends: Feast's Redis online store (a real redis-server) and its SQLite store.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

import pytest
import redis.asyncio as aioredis

from features.online import (
    EntityLayout,
    OnlineFeatureReader,
    RedisFeatureReader,
    Scalar,
    SqliteFeatureReader,
)
from features.schema import (
    ACTION_JOIN_KEY,
    ACTION_VIEWS,
    CUSTOMER_JOIN_KEY,
    CUSTOMER_VIEWS,
    FEATURE_SERVICE,
    PROJECT,
)
from tests.demo_fixtures import DemoDirs

pytestmark = pytest.mark.anyio

CUSTOMERS = ["c00000", "c00001", "c00007", "c00123", "c00399", "no-such-customer"]


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


def sdk_rows(demo: DemoDirs, redis_url: str | None, join_key: str, ids: list[str]) -> list[dict]:
    from features.store import feature_store

    store = feature_store(demo.data_dir, redis_url)
    service = store.get_feature_service(FEATURE_SERVICE)
    views = CUSTOMER_VIEWS if join_key == CUSTOMER_JOIN_KEY else ACTION_VIEWS
    refs = [f"{v}:{f}" for v, fs in views.items() for f, _ in fs]
    assert {p.name for p in service.feature_view_projections} >= set(views)
    result = store.get_online_features(features=refs, entity_rows=[{join_key: i} for i in ids])
    table = result.to_dict()
    return [{name.split("__")[-1]: table[name][i] for name in table if name != join_key}
            for i in range(len(ids))]


def assert_same(fast: Mapping[str, Scalar], sdk: Mapping[str, Any]) -> None:
    for name, expected in sdk.items():
        got = fast.get(name)
        if expected is None:
            assert got is None, name
        elif isinstance(expected, float):
            # a number, or math.isclose would raise on it
            assert isinstance(got, int | float) and math.isclose(got, expected, rel_tol=1e-6), (
                name, got, expected)
        else:
            assert got == expected, (name, got, expected)


async def _read_all(reader: OnlineFeatureReader, ids: list[str]) -> list[dict[str, Scalar]]:
    rows = [await reader.read(i) for i in ids]
    return [r.values if r is not None else {} for r in rows]


@pytest.mark.parametrize("backend", ["sqlite", "redis"])
async def test_customer_features_match_the_sdk(
    backend: str, demo: DemoDirs, request: pytest.FixtureRequest
) -> None:
    layout = EntityLayout(PROJECT, CUSTOMER_JOIN_KEY, CUSTOMER_VIEWS)
    reader: OnlineFeatureReader
    if backend == "redis":
        url = request.getfixturevalue("demo_redis")
        client = aioredis.from_url(url)
        reader = RedisFeatureReader(client, layout)
    else:
        url = None
        reader = SqliteFeatureReader(demo.data_dir / "feast" / "online.db", layout)
    fast = await _read_all(reader, CUSTOMERS)
    sdk = sdk_rows(demo, url, CUSTOMER_JOIN_KEY, CUSTOMERS)
    assert fast[-1] == {}  # the unknown customer
    assert all(len(f) == len(layout.features) for f in fast[:-1])
    for f, s in zip(fast, sdk, strict=False):
        assert_same(f, s)
    if backend == "redis":
        await client.aclose()


async def test_action_features_match_the_sdk(demo_redis: str, demo: DemoDirs) -> None:
    from features.config import shipped_world
    from service.catalog import load_catalog

    ids = load_catalog(demo.data_dir / "catalog.json", shipped_world("retail")).ids
    client = aioredis.from_url(demo_redis)
    reader = RedisFeatureReader(client, EntityLayout(PROJECT, ACTION_JOIN_KEY, ACTION_VIEWS))
    rows = await reader.read_many(ids)
    assert set(rows) == set(ids)
    for fast, sdk in zip([rows[i].values for i in ids], sdk_rows(demo, demo_redis, ACTION_JOIN_KEY, ids), strict=False):
        assert_same(fast, sdk)
    await client.aclose()
