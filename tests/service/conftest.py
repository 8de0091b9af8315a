from __future__ import annotations

from collections.abc import Iterator

import pytest
from fastapi.testclient import TestClient

from service.app import create_app
from service.settings import Settings
from tests.demo_fixtures import DemoDirs, clear_service_state


def make_settings(demo: DemoDirs, redis_url: str | None = None, **overrides: object) -> Settings:
    values: dict[str, object] = {
        "data_dir": demo.data_dir, "models_dir": demo.models_dir, "redis_url": redis_url,
        "config": demo.config,
        "epsilon": 0.0, "seed": 1,
    }
    values.update(overrides)
    return Settings(**values)  # type: ignore[arg-type]


#: The backends every `client` test runs on: embedded, one Redis, the suite's real Redis
#: Cluster. (On the cluster a cancel could be lost in redis-py on Python 3.11 and hang a
#: teardown; `service/shutdown.py` cancels until tasks stop, `tests/service/test_shutdown.py`.)
BACKENDS = ["memory", "redis", "redis-cluster"]


@pytest.fixture(params=BACKENDS)
def backend_settings(request: pytest.FixtureRequest, demo: DemoDirs) -> Settings:
    """Settings for each state backend: embedded (SQLite + in-process), a real Redis, and
    a real Redis Cluster (`NEXTBEST_REDIS_CLUSTER=true`)."""
    if request.param == "memory":
        return make_settings(demo)
    if request.param == "redis-cluster":
        return make_settings(demo, request.getfixturevalue("demo_redis_cluster"),
                             redis_cluster=True)
    url = request.getfixturevalue("demo_redis")
    clear_service_state(url)
    return make_settings(demo, url)


@pytest.fixture(params=["redis", "redis-cluster"])
def shared_redis(request: pytest.FixtureRequest) -> tuple[str, bool]:
    """(URL, cluster?) of a Redis that replicas share, with the demo's features and
    champion and no other service state: one node, or the suite's Redis Cluster."""
    if request.param == "redis-cluster":
        return request.getfixturevalue("demo_redis_cluster"), True
    url = request.getfixturevalue("demo_redis")
    clear_service_state(url)
    return url, False


@pytest.fixture
def client(backend_settings: Settings) -> Iterator[TestClient]:
    with TestClient(create_app(backend_settings)) as c:
        yield c
