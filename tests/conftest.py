"""Shared fixtures: a real redis-server on a private port, and a real 3-master Redis
Cluster on loopback, both started by the suite."""

from __future__ import annotations

import logging
import shutil
from collections.abc import Iterator

import pytest
import redis

from load_tests.processes import RedisCluster, start_redis, start_redis_cluster
from tests.demo_fixtures import DemoDirs, clear_cluster


def _need_redis(*binaries: str) -> None:
    missing = [b for b in binaries if shutil.which(b) is None]
    if missing:
        pytest.fail(
            f"{' and '.join(missing)} not found: install it (`apt-get install redis-server`, "
            "or run `bash .ci/run`, which installs it) — integration tests need a real Redis"
        )


@pytest.fixture(scope="session")
def redis_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """URL of a redis-server this test session owns (never the machine's shared one)."""
    _need_redis("redis-server")
    server = start_redis(tmp_path_factory.mktemp("redis"))
    yield server.url
    server.stop()


@pytest.fixture
def redis_url(redis_server: str) -> Iterator[str]:
    """The suite's Redis, flushed before each test that uses it."""
    client = redis.Redis.from_url(redis_server)
    client.flushdb()
    client.close()
    yield redis_server


@pytest.fixture(scope="session")
def redis_cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RedisCluster]:
    """A Redis Cluster of three masters this test session owns, on loopback ports."""
    _need_redis("redis-server", "redis-cli")
    cluster = start_redis_cluster(tmp_path_factory.mktemp("redis-cluster"))
    yield cluster
    cluster.stop()


@pytest.fixture
def redis_cluster_url(redis_cluster: RedisCluster) -> str:
    """A startup node of the suite's cluster (no database number), every key deleted on
    every master before the test but the features materialized into the cluster."""
    clear_cluster(redis_cluster.url)
    return redis_cluster.url


@pytest.fixture(scope="session")
def demo(tmp_path_factory: pytest.TempPathFactory) -> DemoDirs:
    """Generated demo data, materialized to SQLite, with a trained model."""
    from tests.demo_fixtures import build_demo

    return build_demo(tmp_path_factory.mktemp("demo"))


@pytest.fixture(scope="session")
def demo_redis(redis_server: str, demo: DemoDirs) -> str:
    """The demo features materialized into db 1 of the suite's Redis."""
    from tests.demo_fixtures import materialize_into

    return materialize_into(demo, redis_server.rsplit("/", 1)[0] + "/1")


@pytest.fixture(scope="session")
def telco_demo(tmp_path_factory: pytest.TempPathFactory) -> DemoDirs:
    """The telco example world: generated, materialized to SQLite, with a trained model."""
    from tests.demo_fixtures import build_demo

    return build_demo(tmp_path_factory.mktemp("telco"), example="telco")


@pytest.fixture(scope="session")
def telco_demo_redis(redis_server: str, telco_demo: DemoDirs) -> str:
    """The telco features materialized into db 5 of the suite's Redis (a db of its own: other
    tests flush theirs: 1 the retail demo's, 2 the parity test's, 3 scratch)."""
    from tests.demo_fixtures import materialize_into

    return materialize_into(telco_demo, redis_server.rsplit("/", 1)[0] + "/5")


@pytest.fixture(scope="session")
def demo_cluster_materialized(redis_cluster: RedisCluster, demo: DemoDirs) -> str:
    """The demo features materialized into the suite's Redis Cluster by Feast."""
    from tests.demo_fixtures import materialize_into

    return materialize_into(demo, redis_cluster.url, cluster=True)


@pytest.fixture
def demo_redis_cluster(demo_cluster_materialized: str, demo: DemoDirs) -> str:
    """The cluster with the demo's features and its champion promoted, no other service
    state (whatever tests before left is deleted)."""
    from tests.demo_fixtures import promote

    clear_cluster(demo_cluster_materialized)
    promote(demo, "1", demo_cluster_materialized, cluster=True)
    return demo_cluster_materialized


@pytest.fixture(autouse=True)
def restored_logging() -> Iterator[None]:
    """What `nextbest` commands configure undone after each test: `service.logs.configure`
    puts a handler on the stderr of the moment (a test's captured one, closed after it), and
    a later test's log lines would otherwise go there ("--- Logging error ---")."""
    names = ["", "uvicorn", "uvicorn.error", "uvicorn.access", "httpx"]
    saved = {n: (logging.getLogger(n).handlers[:], logging.getLogger(n).level,
                 logging.getLogger(n).propagate, logging.getLogger(n).disabled) for n in names}
    yield
    for n, (handlers, level, propagate, disabled) in saved.items():
        logger = logging.getLogger(n)
        logger.handlers[:], logger.propagate, logger.disabled = handlers, propagate, disabled
        logger.setLevel(level)
