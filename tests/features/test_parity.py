"""Parity: the fast reader returns what Feast's SDK returns, on the same online store.

Every backend: Feast's Redis online store (a real redis-server), the same on a real
Redis Cluster of three masters (`redis_type: redis_cluster`), and its SQLite store.
On each example world's generated data (retail's `demo`, telco's `telco_demo`), and for
every world, shipped or written in
tests/features/world_data.py, on small data generated from its declarations: `feast
apply` + materialize what the world declares, then read each entity with the layout the
service builds from the same world.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import pytest
import redis
import redis.asyncio as aioredis

from features.config import World, shipped_world
from features.online import (
    EntityLayout,
    OnlineFeatureReader,
    RedisFeatureReader,
    Scalar,
    SqliteFeatureReader,
)
from tests.demo_fixtures import DemoDirs
from tests.features.world_data import SHIPPED, WRITTEN, entity_ids, world_named, write_sources

pytestmark = pytest.mark.anyio

CUSTOMERS = ["c00000", "c00001", "c00007", "c00123", "c00399", "no-such-customer"]
WORLDS = [p.stem for p in SHIPPED] + list(WRITTEN)
#: example world -> the fixtures of its generated data, on SQLite and in Redis
EXAMPLES = {"retail": ("demo", "demo_redis"), "telco": ("telco_demo", "telco_demo_redis")}
#: the example whose data is also materialized into the suite's Redis Cluster
CLUSTER_EXAMPLE = {"retail": "demo_cluster_materialized"}


def test_every_shipped_world_has_example_data() -> None:
    assert set(EXAMPLES) == {p.stem for p in SHIPPED}


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


def sdk_rows(world: World, data_dir: Path, redis_url: str | None, entity: str,
             ids: list[str], cluster: bool = False) -> list[dict]:
    from features.store import feature_store

    store = feature_store(world, data_dir, redis_url, cluster)
    service = store.get_feature_service(world.model.feature_service)
    views = world.views_of(entity)
    join_key = world.join_key(entity)
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


def _reader(backend: str, data_dir: Path, url: str | None, layout: EntityLayout) -> tuple[OnlineFeatureReader, Any]:
    if backend in ("redis", "redis-cluster"):
        assert url is not None
        client = (aioredis.RedisCluster.from_url(url) if backend == "redis-cluster"
                  else aioredis.from_url(url))
        return RedisFeatureReader(client, layout), client
    return SqliteFeatureReader(data_dir / "feast" / "online.db", layout), None


#: (example, backend) pairs: every example on SQLite and one Redis, retail on the cluster
CASES = [(e, b) for e in EXAMPLES for b in ("sqlite", "redis")] + [
    (e, "redis-cluster") for e in CLUSTER_EXAMPLE]


def _online_url(example: str, backend: str, request: pytest.FixtureRequest) -> str | None:
    if backend == "redis-cluster":
        return str(request.getfixturevalue(CLUSTER_EXAMPLE[example]))
    return str(request.getfixturevalue(EXAMPLES[example][1])) if backend == "redis" else None


@pytest.mark.parametrize(("example", "backend"), CASES)
async def test_customer_features_match_the_sdk(
    example: str, backend: str, request: pytest.FixtureRequest
) -> None:
    world = shipped_world(example)
    dirs: DemoDirs = request.getfixturevalue(EXAMPLES[example][0])
    assert world.customer_entity is not None
    layout = EntityLayout.of(world, world.customer_entity)
    url = _online_url(example, backend, request)
    reader, client = _reader(backend, dirs.data_dir, url, layout)
    fast = await _read_all(reader, CUSTOMERS)
    sdk = sdk_rows(world, dirs.data_dir, url, world.customer_entity, CUSTOMERS,
                   cluster=backend == "redis-cluster")
    assert fast[-1] == {}  # the unknown customer
    assert all(len(f) == len(layout.features) for f in fast[:-1])
    for f, s in zip(fast, sdk, strict=False):
        assert_same(f, s)
    if client is not None:
        await client.aclose()


@pytest.mark.parametrize(("example", "backend"), [c for c in CASES if c[1] != "sqlite"])
async def test_action_features_match_the_sdk(example: str, backend: str,
                                             request: pytest.FixtureRequest) -> None:
    """The whole catalog in one pipelined read (on a cluster, split by slot)."""
    from service.catalog import load_catalog

    world = shipped_world(example)
    dirs: DemoDirs = request.getfixturevalue(EXAMPLES[example][0])
    url = _online_url(example, backend, request)
    ids = load_catalog(dirs.data_dir / "catalog.json", world).ids
    reader, client = _reader(backend, dirs.data_dir, url, EntityLayout.of(world, world.action_entity))
    rows = await reader.read_many(ids)
    assert set(rows) == set(ids)
    sdk = sdk_rows(world, dirs.data_dir, url, world.action_entity, ids,
                   cluster=backend == "redis-cluster")
    for fast, expected in zip([rows[i].values for i in ids], sdk, strict=False):
        assert_same(fast, expected)
    await client.aclose()


@pytest.fixture
def world_redis(redis_server: str) -> str:
    """db 2 of the suite's Redis, flushed: the demo's features stay in db 1."""
    url = redis_server.rsplit("/", 1)[0] + "/2"
    client = redis.Redis.from_url(url)
    client.flushdb()
    client.close()
    return url


@pytest.mark.parametrize(("name", "backend"), [
    (n, b) for n in WORLDS for b in ("sqlite", "redis")] + [("retail_plus", "redis-cluster")])
async def test_every_world_applies_materializes_and_reads_like_the_sdk(
    name: str, backend: str, tmp_path: Path, request: pytest.FixtureRequest
) -> None:
    """`feast apply` + materialize, then read like the SDK; on the cluster too, for a
    written world with both entities (its project lives next to the demo's there)."""
    from features.store import apply_and_materialize

    world = world_named(tmp_path, name)
    data_dir = tmp_path / "var"
    frames = write_sources(world, data_dir)
    cluster = backend == "redis-cluster"
    url = (request.getfixturevalue("redis_cluster_url") if cluster
           else request.getfixturevalue("world_redis") if backend == "redis" else None)
    apply_and_materialize(world, data_dir, url, redis_cluster=cluster)

    entities = [e for e in (world.customer_entity, world.action_entity) if e is not None]
    assert set(frames) == set(entities)
    for entity in entities:
        layout = EntityLayout.of(world, entity)
        assert layout.project == world.project
        ids = [*entity_ids(entity, 5), "no-such-id"]
        reader, client = _reader(backend, data_dir, url, layout)
        fast = await _read_all(reader, ids)
        assert fast[-1] == {}
        latest = frames[entity].groupby(world.join_key(entity)).last()
        for entity_id, row in zip(ids[:-1], fast[:-1], strict=True):
            assert set(row) == set(world.features_of(entity))
            assert_same(row, {f: _plain(latest.loc[entity_id, f]) for f in row})
        for got, expected in zip(fast, sdk_rows(world, data_dir, url, entity, ids, cluster),
                                 strict=True):
            assert set(expected) == set(world.features_of(entity))
            assert_same(got, expected)
        if client is not None:
            await client.aclose()
        else:
            assert isinstance(reader, SqliteFeatureReader)
            reader.close()


def _plain(value: Any) -> Any:
    """A float32 round trip for floats (Feast stores Float32), Python scalars otherwise."""
    value = value.item() if hasattr(value, "item") else value
    if isinstance(value, float):
        import numpy as np

        return float(np.float32(value))
    return value
