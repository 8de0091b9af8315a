"""Promotion and rollback in running replicas: no failed request, no mixed response.

Two real `nextbest serve` processes on a real Redis (the pointers live there) serve a
steady stream of decisions over HTTP while `nextbest models promote 2` and then
`nextbest models rollback` run through the CLI's own entry point. Every response must be
a 200 naming v1 or v2; each replica switches once per change (never back and forth) and
within the documented bound (NEXTBEST_MODEL_WATCH_SECONDS, 1 s by default, plus the
load: 2 s); `nextbest_model_info` follows.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from service import cli
from tests.demo_fixtures import (
    DemoDirs,
    clear_service_state,
    promote,
    registered_copies,
    serving_replicas,
)

pytestmark = pytest.mark.integration
#: the documented bound with the default watch interval: 1 s between reads, plus the load
BOUND = 2.0
V1, V2 = "nextbest-ranker:1", "nextbest-ranker:2"


@dataclass(frozen=True)
class Reply:
    replica: int
    sent: float
    status: int
    version: str | None


@pytest.fixture
def settings_env(demo: DemoDirs, demo_redis: str, tmp_path: Path) -> Iterator[dict[str, str]]:
    """Two registered versions, v1 the champion in Redis; restored to v1 afterwards."""
    dirs = registered_copies(demo, tmp_path / "models", count=2)
    clear_service_state(demo_redis)
    promote(dirs, "1", demo_redis)
    env = {"NEXTBEST_REDIS_URL": demo_redis, "NEXTBEST_DATA_DIR": str(dirs.data_dir),
           "NEXTBEST_MODELS_DIR": str(dirs.models_dir), "NEXTBEST_LOG_LEVEL": "WARNING",
           "NEXTBEST_EPSILON": "0"}
    try:
        yield env
    finally:
        promote(DemoDirs(demo.data_dir, demo.models_dir), "1", demo_redis)


@pytest.fixture
def replicas(settings_env: dict[str, str], tmp_path: Path) -> Iterator[list[str]]:
    with serving_replicas(settings_env, tmp_path) as urls:
        yield urls


def _traffic(urls: list[str], replies: list[Reply], stop: threading.Event) -> None:
    clients = [httpx.Client(base_url=u, timeout=5) for u in urls]
    i = 0
    try:
        while not stop.is_set():
            n = i % len(clients)
            body = {"customer_id": f"c{i % 200:05d}", "channel": "web", "placement": "home",
                    "limit": 3}
            sent = time.monotonic()
            try:
                r = clients[n].post("/v1/decisions", json=body)
                version = r.json()["model_versions"]["offline"] if r.status_code == 200 else None
                replies.append(Reply(n, sent, r.status_code, version))
            except httpx.HTTPError:
                replies.append(Reply(n, sent, 0, None))
            i += 1
    finally:
        for c in clients:
            c.close()


def _run_cli(monkeypatch: pytest.MonkeyPatch, env: dict[str, str], *argv: str) -> float:
    """Run `nextbest models ...` in this process; the moment it returned 0."""
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    assert cli.main(["models", *argv]) == 0
    return time.monotonic()


def _wait_for(replies: list[Reply], version: str, after: float, replicas: int) -> None:
    deadline = after + BOUND + 5
    while time.monotonic() < deadline:
        latest = {r.replica: r.version for r in replies if r.sent > after}
        if len(latest) == replicas and all(v == version for v in latest.values()):
            return
        time.sleep(0.05)


def _model_info(url: str) -> tuple[list[str], float]:
    text = httpx.get(f"{url}/metrics", timeout=5).text
    families = {f.name: f for f in text_string_to_metric_families(text)}
    served = [s.labels["version"] for s in families["nextbest_model_info"].samples
              if s.labels["role"] == "offline" and s.value == 1]
    swaps = sum(s.value for s in families["nextbest_model_swaps"].samples
                if s.name.endswith("_total") and s.labels["role"] == "champion")
    return served, swaps


def test_promote_and_roll_back_under_traffic_without_a_failed_or_mixed_response(
        replicas: list[str], settings_env: dict[str, str], monkeypatch: pytest.MonkeyPatch) -> None:
    replies: list[Reply] = []
    stop = threading.Event()
    sender = threading.Thread(target=_traffic, args=(replicas, replies, stop), daemon=True)
    sender.start()
    try:
        time.sleep(1.0)
        promoted = _run_cli(monkeypatch, settings_env, "promote", "2")
        _wait_for(replies, V2, promoted, len(replicas))
        time.sleep(1.0)
        rolled_back = _run_cli(monkeypatch, settings_env, "rollback")
        _wait_for(replies, V1, rolled_back, len(replicas))
        time.sleep(1.0)
    finally:
        stop.set()
        sender.join(timeout=10)

    failed = [r for r in replies if r.status != 200]
    assert not failed, f"{len(failed)} of {len(replies)} requests failed: {failed[:5]}"
    assert len(replies) > 100
    assert {r.version for r in replies} == {V1, V2}
    for n in range(len(replicas)):
        mine = [r for r in replies if r.replica == n]
        # one switch per change, never back and forth: v1 ... v2 ... v1
        runs = [mine[0].version] + [b.version for a, b in zip(mine, mine[1:], strict=False)
                                    if a.version != b.version]
        assert runs == [V1, V2, V1], f"replica {n} served {runs}"
        assert all(r.version == V1 for r in mine if r.sent < promoted - 0.5)
        assert all(r.version == V2 for r in mine if promoted + BOUND < r.sent < rolled_back)
        assert all(r.version == V1 for r in mine if r.sent > rolled_back + BOUND)
        served, swaps = _model_info(replicas[n])
        assert served == ["1"] and swaps == 2
