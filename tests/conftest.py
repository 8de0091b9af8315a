"""Shared fixtures: a real redis-server on a private port, started by the suite."""

from __future__ import annotations

import shutil
from collections.abc import Iterator

import pytest
import redis

from load_tests.processes import start_redis
from tests.demo_fixtures import DemoDirs


@pytest.fixture(scope="session")
def redis_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """URL of a redis-server this test session owns (never the machine's shared one)."""
    binary = shutil.which("redis-server")
    if binary is None:
        pytest.fail(
            "redis-server not found: install it (`apt-get install redis-server`, or run "
            "`bash .ci/run`, which installs it) — integration tests need a real Redis"
        )
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
