"""The registry's pointers: one contract over every backend (models dir, a real Redis,
a real Redis Cluster)."""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path

import pytest
import redis

from features.config import shipped_world
from features.encoding import Encoder
from service.errors import RegistryRefused
from service.manifest import MANIFEST_FILE, MODEL_FILE
from service.registry import FilePointers, Pointers, PointerStore, RedisPointers, Registry
from tests.demo_fixtures import DemoDirs, registered_copies

ENCODER = Encoder(shipped_world("retail"))
NAME = "nextbest-ranker"


def _redis_pointers(request: pytest.FixtureRequest) -> RedisPointers:
    """Pointers on the backend the test runs on, through a client of their own."""
    if request.node.callspec.params["store"] == "redis-cluster":
        return RedisPointers(redis.RedisCluster.from_url(
            request.getfixturevalue("redis_cluster_url")), NAME)
    return RedisPointers(redis.Redis.from_url(request.getfixturevalue("redis_url")), NAME)


@pytest.fixture(params=["file", "redis", "redis-cluster"])
def store(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[PointerStore]:
    if request.param == "file":
        yield FilePointers(tmp_path / "models", NAME)
        return
    pointers = _redis_pointers(request)
    yield pointers
    pointers.close()


@pytest.fixture
def registry(store: PointerStore, demo: DemoDirs, tmp_path: Path) -> Registry:
    dirs = registered_copies(demo, tmp_path / "models", count=3)
    # v3 was trained on one column less than the world encodes
    path = dirs.models_dir / NAME / "3" / MANIFEST_FILE
    manifest = json.loads(path.read_text())
    manifest["columns"] = manifest["columns"][:-1]
    path.write_text(json.dumps(manifest))
    return Registry(store, dirs.models_dir, NAME, list(ENCODER.columns), ENCODER.encoding)


def test_nothing_is_promoted_until_someone_promotes(registry: Registry) -> None:
    assert registry.pointers() == Pointers()
    assert [r.manifest.version for r in registry.registered()] == ["1", "2", "3"]


def test_promote_and_roll_back(registry: Registry) -> None:
    first = registry.promote("1")
    assert (first.champion, first.history, first.revision) == ("1", (), 1)
    second = registry.promote("v2")
    assert (second.champion, second.history, second.revision) == ("2", ("1",), 2)
    assert second.updated_at is not None
    back = registry.rollback()
    assert (back.champion, back.history, back.revision) == ("1", (), 3)
    with pytest.raises(RegistryRefused, match="no earlier champion"):
        registry.rollback()
    assert registry.pointers() == back


def test_promoting_the_champion_again_changes_no_history(registry: Registry) -> None:
    registry.promote("1")
    again = registry.promote("1")
    assert (again.champion, again.history) == ("1", ())


@pytest.mark.parametrize(("version", "message"), [
    ("9", r"no version 9 .*registered: 1, 2, 3"),
    ("abc", "a version is a positive integer"),
    ("0", "a version is a positive integer"),
    ("3", r"other input columns .*missing \["),
])
def test_promote_refuses_what_would_not_load(registry: Registry, version: str, message: str) -> None:
    registry.promote("1")
    before = registry.pointers()
    with pytest.raises(RegistryRefused, match=message):
        registry.promote(version)
    assert registry.pointers() == before


def test_promote_refuses_a_changed_model_file(registry: Registry) -> None:
    onnx = registry.models_dir / NAME / "2" / MODEL_FILE
    onnx.write_bytes(onnx.read_bytes() + b"\0")
    with pytest.raises(RegistryRefused, match="sha256"):
        registry.promote("2")


def test_rollback_refuses_a_previous_champion_that_no_longer_loads(registry: Registry) -> None:
    registry.promote("1")
    registry.promote("2")
    (registry.models_dir / NAME / "1" / MODEL_FILE).write_bytes(b"not a model")
    with pytest.raises(RegistryRefused, match="refusing nextbest-ranker v1"):
        registry.rollback()
    assert registry.pointers().champion == "2"


def test_shadow_sets_the_challenger_and_a_promotion_ends_it(registry: Registry) -> None:
    registry.promote("1")
    shadow = registry.shadow("2", 0.25)
    assert (shadow.champion, shadow.challenger, shadow.share) == ("1", "2", 0.25)
    with pytest.raises(RegistryRefused, match="champion already"):
        registry.shadow("1", 0.1)
    for share in (0.0, 1.5):
        with pytest.raises(RegistryRefused, match="--share"):
            registry.shadow("2", share)
    promoted = registry.promote("2")
    assert (promoted.champion, promoted.challenger, promoted.share) == ("2", None, 0.0)
    registry.shadow("1", 0.5)
    stopped = registry.stop_shadow()
    assert (stopped.challenger, stopped.share, stopped.champion) == (None, 0.0, "2")
    registry.shadow("1", 0.5)
    back = registry.rollback()  # to v1, the challenger: it no longer shadows itself
    assert (back.champion, back.challenger, back.share) == ("1", None, 0.0)


def test_another_replica_reads_the_same_pointers(store: PointerStore, registry: Registry,
                                                  tmp_path: Path, request: pytest.FixtureRequest) -> None:
    registry.promote("2")
    registry.shadow("1", 0.1)
    other: PointerStore = (
        FilePointers(tmp_path / "models", NAME) if isinstance(store, FilePointers)
        else _redis_pointers(request))
    try:
        assert other.read() == store.read()
        assert other.read().challenger == "1"
    finally:
        other.close()


def test_concurrent_changes_are_never_lost(store: PointerStore) -> None:
    """Each thread appends to the history through its own read-modify-write."""
    per_thread, threads = 10, 4

    def work(tag: str) -> None:
        for i in range(per_thread):
            def change(p: Pointers, entry: str = f"{tag}{i}") -> Pointers:
                return replace(p, history=(*p.history, entry))

            store.update(change)

    workers = [threading.Thread(target=work, args=(f"t{n}-",)) for n in range(threads)]
    for w in workers:
        w.start()
    for w in workers:
        w.join()
    final = store.read()
    assert final.revision == per_thread * threads
    assert len(set(final.history)) == per_thread * threads
