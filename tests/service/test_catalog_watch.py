"""A replica follows the catalog store: new versions swap in, broken ones are refused."""

from __future__ import annotations

import json
import shutil
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from features.config import shipped_world
from service.catalog_store import Proposal
from service.metrics import Metrics
from service.runtime import Runtime
from service.schemas import request_models
from tests.demo_fixtures import DemoDirs
from tests.service.conftest import make_settings

pytestmark = pytest.mark.anyio
WORLD = shipped_world("retail")
REQUESTS = request_models(WORLD)


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


@pytest.fixture
async def runtime(demo: DemoDirs, tmp_path: Path) -> AsyncIterator[Runtime]:
    catalog = tmp_path / "catalog.json"
    shutil.copy(demo.data_dir / "catalog.json", catalog)
    rt = Runtime.build(make_settings(demo, catalog_path=catalog, catalog_watch_seconds=60),
                       Metrics(), WORLD, REQUESTS)  # checked by the tests alone
    await rt.start()
    yield rt
    await rt.stop()


def write(runtime: Runtime, document: dict[str, Any]) -> None:
    """Straight into the store, past the admin API's checks (as a bad tool might)."""
    assert runtime.catalog_admin is not None
    runtime.catalog_admin.store.update(lambda _: Proposal(document, "put_catalog", "test"))


def value(runtime: Runtime, name: str) -> float:
    return float(runtime.metrics.registry.get_sample_value(name) or 0.0)


async def test_a_version_that_does_not_build_is_refused_and_the_next_one_serves(
        runtime: Runtime) -> None:
    watcher = runtime.catalog_watcher
    assert watcher is not None and runtime.catalog_admin is not None
    document = runtime.catalog_admin.current().document
    write(runtime, {**document, "actions": [*document["actions"],
                                            {"action_id": "bad", "channels": ["kiosk"]}]})
    assert await watcher.check() is False
    assert runtime.engine.catalog.version == "1"
    assert value(runtime, "nextbest_catalog_load_failures_total") == 1
    assert await watcher.check() is False  # not retried until the store moves again
    assert value(runtime, "nextbest_catalog_load_failures_total") == 1
    write(runtime, {**document, "actions": document["actions"][:4]})
    assert await watcher.check() is True
    assert runtime.engine.catalog.version == "3" and int(runtime.engine.catalog.live.sum()) == 4
    assert value(runtime, "nextbest_catalog_version") == 3
    assert value(runtime, "nextbest_catalog_swaps_total") == 1
    decision = await runtime.engine.decide(REQUESTS.decision.model_validate(
        {"customer_id": "c00001", "channel": "web", "placement": "home", "limit": 10}))
    kept = {a["action_id"] for a in document["actions"][:4]}
    assert {a["action_id"] for a in decision["actions"]} <= kept
    assert decision["model_versions"]["catalog"] == "3"


async def test_an_unreadable_store_is_counted_and_serving_goes_on(runtime: Runtime,
                                                                  tmp_path: Path) -> None:
    watcher = runtime.catalog_watcher
    assert watcher is not None
    (tmp_path / "catalog-versions" / "revision").write_text("not a revision")
    assert await watcher.check() is False
    assert value(runtime, "nextbest_catalog_read_errors_total") == 1
    assert runtime.engine.catalog.version == "1"
    assert json.loads((tmp_path / "catalog-versions" / "current.json").read_text())["version"] == 1
