"""service/runtime.py: the readers follow the world (tests/features/test_parity.py proves
the readers themselves against Feast's SDK).

The context-only world (no customers, no basket) is served with a model trained for it
on the demo's logged decisions (its columns have no customer block and no basket
columns); what this checks is that such a world reads its action features from its own
Feast project, no customer features, and decides.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
import redis

from features.config import World
from service.metrics import Metrics
from service.runtime import Runtime
from service.schemas import request_models
from tests.demo_fixtures import DemoDirs, promote
from tests.features.world_data import world_named
from tests.service.conftest import make_settings

pytestmark = pytest.mark.anyio


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


def _context_only_store(demo: DemoDirs, root: Path, redis_url: str | None) -> tuple[World, Path]:
    """The demo's catalog and action rows, applied as the context-only world's project."""
    from features.store import apply_and_materialize

    world = world_named(root, "context_only")
    data_dir = root / "var"
    (data_dir / "sources").mkdir(parents=True)
    shutil.copy(demo.data_dir / "catalog.json", data_dir / "catalog.json")
    for name in ("actions.parquet", "interactions.parquet"):
        shutil.copy(demo.data_dir / "sources" / name, data_dir / "sources" / name)
    apply_and_materialize(world, data_dir, redis_url)
    return world, data_dir


@pytest.mark.parametrize("backend", ["sqlite", "redis"])
async def test_a_context_only_world_reads_no_customer_features(
    backend: str, demo: DemoDirs, tmp_path: Path, request: pytest.FixtureRequest
) -> None:
    url = None
    if backend == "redis":
        url = request.getfixturevalue("redis_server").rsplit("/", 1)[0] + "/3"
        client = redis.Redis.from_url(url)
        client.flushdb()
        client.close()
    world, data_dir = _context_only_store(demo, tmp_path, url)
    from training.train import train

    models = tmp_path / "models"
    _, manifest = train(data_dir, models, progress=False, world=world)
    assert not any(c.startswith(("segment=", "log_recency")) for c in manifest.columns)
    promote(DemoDirs(data_dir, models), manifest.version, url, world=world)
    settings = make_settings(DemoDirs(data_dir, models), url, online_learning=False,
                             contact_policy=False)
    runtime = Runtime.build(settings, Metrics(), world)
    try:
        await runtime.start()
        assert runtime.action_cache.missing == []  # every action read from the world's project
        customers = runtime.engine.customers
        assert await customers.get("c00001") is customers.without_customer_features
        assert await customers.get(None) is customers.without_customer_features
        assert customers.without_customer_features.degraded == ()
        decision = await runtime.engine.decide(
            request_models(world).decision.model_validate(
                {"channel": "web", "placement": "home", "customer_id": "c00001"}),
            record=False)
        assert decision["actions"] and decision["degraded"] == []
    finally:
        await runtime.stop()
