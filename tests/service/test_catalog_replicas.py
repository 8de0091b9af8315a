"""Catalog changes in running replicas under load: no failed request, every change serving
on every replica within the bound, a deleted action never offered after it.

Two real `nextbest serve` processes on a real Redis (the catalog store lives there)
serve a steady stream of decisions over HTTP, one sender per replica, while the admin
API of the first replica adds an action, changes it, deletes it and replaces the whole
catalog. Every response must be a 200; each replica's catalog version only moves
forward; from `BOUND` after a change returned, every response of every replica comes
from that version (the default NEXTBEST_CATALOG_WATCH_SECONDS plus the build:
docs/catalog.md). The lag measured per change and replica is printed (`-s`).
"""

from __future__ import annotations

import json
import shutil
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest

from tests.demo_fixtures import DemoDirs, clear_service_state, serving_replicas

pytestmark = pytest.mark.integration
#: the documented bound: the default watch interval plus the build
BOUND = 1.0
NEW = {"action_id": "n001", "name": "new offer", "kind": "offer", "category": "electronics",
       "value": 500.0, "lever": 50.0, "channels": ["web"], "placements": ["home"]}


@dataclass(frozen=True)
class Reply:
    replica: int
    sent: float
    status: int
    catalog: int
    shown: tuple[str, ...]


@pytest.fixture
def replicas(demo: DemoDirs, demo_redis: str, tmp_path: Path) -> Iterator[list[str]]:
    catalog = tmp_path / "catalog.json"
    shutil.copy(demo.data_dir / "catalog.json", catalog)
    clear_service_state(demo_redis)
    settings = {"NEXTBEST_REDIS_URL": demo_redis, "NEXTBEST_DATA_DIR": str(demo.data_dir),
                "NEXTBEST_MODELS_DIR": str(demo.models_dir), "NEXTBEST_CATALOG_PATH": str(catalog),
                "NEXTBEST_LOG_LEVEL": "WARNING", "NEXTBEST_EPSILON": "0"}
    try:
        with serving_replicas(settings, tmp_path) as urls:
            yield urls
    finally:
        clear_service_state(demo_redis)


def _traffic(n: int, url: str, replies: list[Reply], stop: threading.Event) -> None:
    with httpx.Client(base_url=url, timeout=5) as client:
        i = 0
        while not stop.is_set():
            body = {"customer_id": f"c{(i * 7 + n) % 300:05d}", "channel": "web",
                    "placement": "home", "limit": 3}
            sent = time.monotonic()
            try:
                r = client.post("/v1/decisions", json=body)
                ok = r.status_code == 200
                d = r.json() if ok else {}
                replies.append(Reply(n, sent, r.status_code,
                                     int(d["model_versions"]["catalog"]) if ok else -1,
                                     tuple(a["action_id"] for a in d.get("actions", []))))
            except httpx.HTTPError:
                replies.append(Reply(n, sent, 0, -1, ()))
            i += 1


def test_catalog_changes_under_load_without_a_failed_request(replicas: list[str]) -> None:
    replies: list[Reply] = []
    stop = threading.Event()
    senders = [threading.Thread(target=_traffic, args=(n, u, replies, stop), daemon=True)
               for n, u in enumerate(replicas)]
    for s in senders:
        s.start()
    admin = httpx.Client(base_url=replicas[0], timeout=10)
    document = admin.get("/v1/catalog").json()["document"]
    kept = [a for a in document["actions"] if a["action_id"].startswith("o")]
    changes: list[tuple[int, float]] = []  # (version, when the change returned)

    def change(method: str, path: str, body: object = None) -> None:
        r = admin.request(method, path, json=body)
        assert r.status_code in (200, 201), r.text
        changes.append((r.json()["version"], time.monotonic()))
        time.sleep(BOUND + 1.0)

    try:
        time.sleep(1.0)
        change("PUT", "/v1/actions/n001", NEW)                                   # v2: added
        change("PUT", "/v1/actions/n001", {**NEW, "lever": 0.0})                 # v3: changed
        change("PUT", "/v1/actions/n001", NEW)                                   # v4: back on top
        change("DELETE", "/v1/actions/n001")                                     # v5: deleted
        change("PUT", "/v1/catalog", {**document, "actions": kept})              # v6: replaced
    finally:
        stop.set()
        for s in senders:
            s.join(timeout=10)
        admin.close()

    failed = [r for r in replies if r.status != 200]
    assert not failed, f"{len(failed)} of {len(replies)} requests failed: {failed[:5]}"
    assert len(replies) > 200
    assert [v for v, _ in changes] == [2, 3, 4, 5, 6]
    lags = []
    for n in range(len(replicas)):
        mine = [r for r in replies if r.replica == n]
        versions = [r.catalog for r in mine]
        assert versions == sorted(versions), f"replica {n} went back to an older catalog"
        assert set(versions) == {1, 2, 3, 4, 5, 6}
        for version, at in changes:
            older = [r.sent - at for r in mine if r.catalog < version and r.sent > at]
            lags.append(max(older, default=0.0))
            late = [r for r in mine if r.sent > at + BOUND and r.catalog < version]
            assert not late, f"replica {n} served an older catalog than {version} " \
                             f"{late[0].sent - at:.3f} s after the change"
        by = {v: [r for r in mine if r.catalog == v] for v in range(1, 7)}
        assert all(r.shown[0] == "n001" for r in by[2] + by[4])
        assert all("n001" not in r.shown for r in by[1] + by[5] + by[6])
        allowed = {a["action_id"] for a in kept}
        assert all(set(r.shown) <= allowed for r in by[6])
    print(f"\ncatalog propagation under load: {len(replies)} decisions, 0 failed; "
          f"lag per change and replica (s): {json.dumps([round(x, 3) for x in lags])}; "
          f"max {max(lags):.3f} s")
