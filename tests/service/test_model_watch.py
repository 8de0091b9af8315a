"""Replicas follow the registry's pointers: the champion at start, swaps while serving."""

from __future__ import annotations

import logging
import shutil
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from features.config import shipped_world
from service.errors import ModelError
from service.manifest import MODEL_FILE
from service.metrics import Metrics
from service.model_watch import ModelWatcher
from service.registry import Registry, registry_for
from service.runtime import Runtime
from service.schemas import request_models
from tests.demo_fixtures import DemoDirs
from tests.service.conftest import make_settings

pytestmark = pytest.mark.anyio
WORLD = shipped_world("retail")
REQUESTS = request_models(WORLD)
NAME = "nextbest-ranker"


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


@pytest.fixture(scope="module")
def two_models(demo: DemoDirs, tmp_path_factory: pytest.TempPathFactory) -> DemoDirs:
    """v1 the demo's pairwise model, v2 a logistic regression on the same data."""
    from training.train import train

    models = tmp_path_factory.mktemp("two") / "models"
    shutil.copytree(demo.models_dir / NAME / "1", models / NAME / "1")
    train(demo.data_dir, models, algorithm="logreg", progress=False)
    return DemoDirs(demo.data_dir, models)


@pytest.fixture
def dirs(two_models: DemoDirs, tmp_path: Path) -> DemoDirs:
    """A private copy of the two models, nothing promoted."""
    shutil.copytree(two_models.models_dir, tmp_path / "models")
    return DemoDirs(two_models.data_dir, tmp_path / "models")


def _registry(dirs: DemoDirs) -> Registry:
    return registry_for(make_settings(dirs), WORLD)


@pytest.fixture
async def runtime(dirs: DemoDirs) -> AsyncIterator[Runtime]:
    _registry(dirs).promote("1")
    rt = Runtime.build(make_settings(dirs, online_learning=False), Metrics(), WORLD, REQUESTS)
    await rt.start()
    try:
        yield rt
    finally:
        await rt.stop()


def _request(limit: int = 3) -> object:
    return REQUESTS.decision.model_validate(
        {"channel": "web", "placement": "home", "customer_id": "c00001", "limit": limit})


def _info(metrics: Metrics, role: str) -> list[str]:
    return [s.labels["version"] for family in metrics.registry.collect()
            if family.name == "nextbest_model_info" for s in family.samples
            if s.labels["role"] == role and s.value == 1]


def _watcher(runtime: Runtime) -> ModelWatcher:
    assert runtime.model_watcher is not None
    return runtime.model_watcher


async def test_a_starting_replica_serves_the_champion_not_the_newest(runtime: Runtime) -> None:
    decision = await runtime.engine.decide(_request(), record=False)  # type: ignore[arg-type]
    assert decision["model_versions"]["offline"] == f"{NAME}:1"
    assert _info(runtime.metrics, "offline") == ["1"]


async def test_without_a_champion_the_service_refuses_to_start(dirs: DemoDirs) -> None:
    with pytest.raises(ModelError, match=r"no champion .*versions: 1, 2.*nextbest models promote"):
        Runtime.build(make_settings(dirs), Metrics(), WORLD, REQUESTS)


async def test_a_pinned_version_is_served_whatever_the_pointers_say(dirs: DemoDirs) -> None:
    _registry(dirs).promote("1")
    rt = Runtime.build(make_settings(dirs, model_version="2"), Metrics(), WORLD, REQUESTS)
    try:
        assert rt.engine.scorer.version == "2" and rt.model_watcher is None
    finally:
        await rt.stop()


async def test_a_promotion_swaps_the_scorer_and_the_model_info(runtime: Runtime, dirs: DemoDirs) -> None:
    before = runtime.engine.scorer
    await _watcher(runtime).check()
    assert runtime.engine.scorer is before  # nothing changed: nothing reloaded
    _registry(dirs).promote("2")
    await _watcher(runtime).check()
    decision = await runtime.engine.decide(_request(), record=False)  # type: ignore[arg-type]
    assert decision["model_versions"]["offline"] == f"{NAME}:2"
    assert _info(runtime.metrics, "offline") == ["2"]
    assert runtime.metrics.registry.get_sample_value(
        "nextbest_model_swaps_total", {"role": "champion"}) == 1
    _registry(dirs).rollback()
    await _watcher(runtime).check()
    assert runtime.engine.scorer.version == "1" and _info(runtime.metrics, "offline") == ["1"]


async def test_a_model_that_fails_to_load_leaves_the_old_one_serving(
        runtime: Runtime, dirs: DemoDirs, caplog: pytest.LogCaptureFixture) -> None:
    _registry(dirs).promote("2")
    (dirs.models_dir / NAME / "2" / MODEL_FILE).write_bytes(b"corrupted after promotion")
    with caplog.at_level(logging.ERROR, logger="service.model_watch"):
        await _watcher(runtime).check()
        await _watcher(runtime).check()  # the same pointers: not tried again
    assert runtime.engine.scorer.version == "1"
    assert runtime.metrics.registry.get_sample_value(
        "nextbest_model_load_failures_total", {"role": "champion"}) == 1
    assert "cannot load nextbest-ranker v2 as champion, still serving v1" in caplog.text
    assert "sha256" in caplog.text
    decision = await runtime.engine.decide(_request(), record=False)  # type: ignore[arg-type]
    assert decision["model_versions"]["offline"] == f"{NAME}:1"


async def test_the_challenger_is_logged_next_to_the_champion_and_never_served(
        runtime: Runtime, dirs: DemoDirs) -> None:
    engine = runtime.engine
    alone = await engine.decide(_request(limit=5))  # type: ignore[arg-type]
    _registry(dirs).shadow("2", 1.0)
    await _watcher(runtime).check()
    assert engine.shadow is not None and engine.shadow.scorer.version == "2"
    assert _info(runtime.metrics, "challenger") == ["2"]
    shadowed = await engine.decide(_request(limit=5))  # type: ignore[arg-type]
    # epsilon is 0 in these settings: the same request is served the same actions
    assert [a["action_id"] for a in shadowed["actions"]] == [a["action_id"] for a in alone["actions"]]
    assert shadowed["model_versions"]["offline"] == f"{NAME}:1" and "shadow" not in shadowed
    record, plain = await runtime.decision_log.get_many(
        [shadowed["decision_id"], alone["decision_id"]])
    assert record is not None and plain is not None and "shadow" not in plain
    shadow = record["shadow"]
    assert shadow["model"] == f"{NAME}:2" and len(shadow["would_show"]) == 5
    assert [s["action_id"] for s in shadow["shown"]] == [a["action_id"] for a in shadowed["actions"]]
    champion = [a["propensity"] for a in shadowed["actions"]]
    challenger = [s["propensity"] for s in shadow["shown"]]
    assert challenger != champion  # another model scored them
    assert all(s["probability"] in (0.0, 1.0) for s in shadow["shown"])  # greedy, epsilon 0
    _registry(dirs).stop_shadow()
    await _watcher(runtime).check()
    assert engine.shadow is None and _info(runtime.metrics, "challenger") == []
