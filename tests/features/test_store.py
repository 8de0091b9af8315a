"""features/store.py against a real Feast repository (SQLite online store).

The Redis online store is exercised by the parity tests with the suite's redis-server.
"""

from __future__ import annotations

import math
import os
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest

from features.config import shipped_world
from features.store import redis_connection_string
from tests.features.retail_schema import (
    ACTION_JOIN_KEY,
    CUSTOMER_JOIN_KEY,
    FEATURE_SERVICE,
    action_features,
    customer_features,
)
from tests.features.world_data import world_named, write_sources

RETAIL = shipped_world("retail")


@pytest.mark.parametrize(("url", "expected"), [
    ("redis://127.0.0.1:6379/0", "127.0.0.1:6379,db=0"),
    ("redis://localhost", "localhost:6379,db=0"),
    ("redis://redis.svc:6380/3", "redis.svc:6380,db=3"),
    ("redis://:s3cr%40t@host:6379/2", "host:6379,db=2,password=s3cr@t"),
    ("redis://default:pw@host:6379/1", "host:6379,db=1,password=pw"),
    ("redis://alice:pw@host:6379/1", "host:6379,db=1,username=alice,password=pw"),
    ("rediss://:pw@host:6390/0", "host:6390,db=0,password=pw,ssl=true"),
])
def test_redis_url_becomes_a_feast_connection_string(url: str, expected: str) -> None:
    assert redis_connection_string(url) == expected


@pytest.mark.parametrize("url", [
    "http://host:6379/0", "redis://host:6379/zero", "redis://:a,b@host:6379/0",
])
def test_bad_redis_urls_are_refused(url: str) -> None:
    with pytest.raises(ValueError):
        redis_connection_string(url)


@pytest.mark.parametrize(("url", "expected"), [
    ("redis://10.0.0.1:7000", "10.0.0.1:7000"),
    ("redis://10.0.0.1:7000/0", "10.0.0.1:7000"),
    ("rediss://:pw@node-0.redis:6379", "node-0.redis:6379,password=pw,ssl=true"),
])
def test_a_cluster_connection_string_names_no_database(url: str, expected: str) -> None:
    """redis-py's cluster client refuses `db` (even 0): Feast's string must not carry it."""
    assert redis_connection_string(url, cluster=True) == expected


def test_a_cluster_url_with_another_database_is_refused() -> None:
    with pytest.raises(ValueError, match="database 0 only"):
        redis_connection_string("redis://10.0.0.1:7000/4", cluster=True)


def test_repo_config_picks_the_online_store(tmp_path: Path) -> None:
    from features.store import repo_config

    sqlite = repo_config(RETAIL, tmp_path, None)
    assert sqlite.project == RETAIL.project == "nextbest"
    assert sqlite.online_store.type == "sqlite"
    assert sqlite.online_store.path == str(tmp_path.resolve() / "feast" / "online.db")
    assert sqlite.registry.path == str(tmp_path.resolve() / "feast" / "registry.db")
    assert sqlite.entity_key_serialization_version == 3
    redis = repo_config(RETAIL, tmp_path, "redis://:pw@10.0.0.1:7000/4")
    assert redis.online_store.type == "redis"
    assert redis.online_store.connection_string == "10.0.0.1:7000,db=4,password=pw"
    assert redis.online_store.redis_type == "redis"
    cluster = repo_config(RETAIL, tmp_path, "redis://:pw@10.0.0.1:7000", redis_cluster=True)
    assert cluster.online_store.connection_string == "10.0.0.1:7000,password=pw"
    assert cluster.online_store.redis_type == "redis_cluster"
    assert repo_config(world_named(tmp_path, "retail_plus"), tmp_path, None).project == "nextbest_plus"


def test_feast_apply_scans_only_the_definitions() -> None:
    from feast.repo_operations import get_repo_files

    root = Path(__file__).resolve().parents[2] / "features"
    assert get_repo_files(root) == [root / "definitions.py"]


def _latest(frame: pd.DataFrame, key: str, entity_id: str) -> pd.Series:
    rows = frame[frame[key] == entity_id].sort_values("event_timestamp")
    return rows.iloc[-1]


def _same(got: object, expected: object) -> bool:
    if isinstance(expected, float):
        return math.isclose(float(got), expected, rel_tol=1e-6)  # type: ignore[arg-type]
    return got == expected


def test_apply_and_materialize_serves_the_latest_generated_values(tmp_path: Path) -> None:
    from features.store import apply_and_materialize, feature_store
    from training.demo_data import generate

    data_dir = tmp_path / "var"
    generate(data_dir, seed=3, n_customers=300, n_interactions=3000, progress=False)
    apply_and_materialize(RETAIL, data_dir, None)
    assert (data_dir / "feast" / "online.db").is_file()
    assert (data_dir / "feast" / "registry.db").is_file()

    store = feature_store(RETAIL, data_dir, None)
    service = store.get_feature_service(FEATURE_SERVICE)
    assert {p.name for p in service.feature_view_projections} == {
        "customer_profile", "customer_affinity", "action_attributes"}
    customers = pd.read_parquet(data_dir / "sources" / "customers.parquet")
    actions = pd.read_parquet(data_dir / "sources" / "actions.parquet")
    online = store.get_online_features(
        features=service,
        entity_rows=[{CUSTOMER_JOIN_KEY: "c00042", ACTION_JOIN_KEY: "o003"}],
    ).to_dict()
    expected_customer = _latest(customers, CUSTOMER_JOIN_KEY, "c00042")
    expected_action = _latest(actions, ACTION_JOIN_KEY, "o003")
    for _, name, _ in customer_features():
        assert _same(online[name][0], expected_customer[name].item()
                     if hasattr(expected_customer[name], "item") else expected_customer[name]), name
    for _, name, _ in action_features():
        value = expected_action[name]
        assert _same(online[name][0], value.item() if hasattr(value, "item") else value), name

    # materializing again, incrementally, is a no-op that keeps the values
    apply_and_materialize(RETAIL, data_dir, None, incremental=True)
    again = feature_store(RETAIL, data_dir, None).get_online_features(
        features=["customer_profile:segment"], entity_rows=[{CUSTOMER_JOIN_KEY: "c00042"}],
    ).to_dict()
    assert again["segment"] == [expected_customer["segment"]]


def test_importing_feast_leaves_prometheus_client_in_single_process_mode() -> None:
    """`import feast` sets PROMETHEUS_MULTIPROC_DIR; through our modules it must not stick."""
    code = (
        "import os, features.definitions, prometheus_client.values as v\n"
        "assert not getattr(v.ValueClass, '_multiprocess', False), 'multiprocess mode'\n"
        "assert 'PROMETHEUS_MULTIPROC_DIR' not in os.environ, 'variable left for children'\n"
    )
    env = {k: v for k, v in os.environ.items() if "multiproc" not in k.lower()}
    done = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr[-2000:]


def test_definitions_follow_the_world(tmp_path: Path) -> None:
    from features.config import source_path
    from features.definitions import DTYPES, build

    world = world_named(tmp_path, "retail_plus")
    repository = build(world, tmp_path)
    assert [e.name for e in repository.entities] == ["customer", "action"]
    assert [e.join_key for e in repository.entities] == ["customer_id", "action_id"]
    assert [s.path for s in repository.sources] == [
        str(source_path(tmp_path, "customer")), str(tmp_path.resolve() / "sources" / "actions.parquet")]
    assert list(repository.views) == list(world.feature_views)
    profile = {f.name: f.dtype for f in repository.views["customer_profile"].schema}
    assert profile["loyalty_points"] == DTYPES["int"] and profile["segment"] == DTYPES["string"]
    assert repository.service.name == "retail_plus_ranker"

    context_only = build(world_named(tmp_path, "context_only"), tmp_path)
    assert [e.name for e in context_only.entities] == ["action"]
    assert list(context_only.views) == ["action_attributes"]


def _feast_cli(tmp_path: Path, config: Path, *args: str) -> subprocess.CompletedProcess[str]:
    """The `feast` CLI on the checkout's repository, as a user runs it."""
    root = Path(__file__).resolve().parents[2]
    env = {k: v for k, v in os.environ.items() if "multiproc" not in k.lower()}
    env |= {"NEXTBEST_CONFIG": str(config), "NEXTBEST_DATA_DIR": str(tmp_path / "var")}
    feast = Path(sys.executable).parent / "feast"
    return subprocess.run([str(feast), "-c", str(root / "features"), *args], env=env,
                          capture_output=True, text=True, timeout=300)


def test_feast_cli_applies_the_world_nextbest_config_names(tmp_path: Path) -> None:
    """Feast's own repo scan finds the world; a feature_store.yaml of another project is refused."""
    write_sources(RETAIL, tmp_path / "var")
    done = _feast_cli(tmp_path, Path(__file__).resolve().parents[2] / "features" / "worlds" / "retail.yaml",
                      "apply")
    assert done.returncode == 0, (done.stdout + done.stderr)[-3000:]
    from features.store import feature_store

    store = feature_store(RETAIL, tmp_path / "var", None)
    assert {v.name for v in store.list_feature_views()} == set(RETAIL.feature_views)
    assert store.get_feature_service(RETAIL.model.feature_service)

    other = world_named(tmp_path, "retail_plus")
    write_sources(other, tmp_path / "var")
    refused = _feast_cli(tmp_path, tmp_path / "retail_plus.yaml", "apply")
    assert refused.returncode != 0
    assert "Feast project 'nextbest_plus'" in refused.stderr
    assert "should match with the project name defined in feature_store.yaml" in refused.stdout
