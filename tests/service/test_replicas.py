"""Two `nextbest serve` processes on the suite's real Redis Cluster, one customer journey.

Feedback sent to replica A changes what replica B decides, within the learner's lag; a
dismissal on A is respected by B; a replica started later serves the champion and the
same learned state; a SIGKILL of A under feedback load loses no acknowledged event. (The
cap race of two replicas runs on the cluster too: tests/service/test_limits.py.) The
last test kills A: the module's tests run in file order.
"""

from __future__ import annotations

import os
import re
import signal
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import orjson
import pytest
import redis

from features.config import shipped_world
from load_tests.processes import Server, free_port, nextbest_args, nextbest_env, start_http
from service.catalog import load_catalog
from tests.demo_fixtures import DemoDirs, clear_cluster, promote

ROOT = Path(__file__).resolve().parents[2]
#: how soon after its 202 an event must show in the other replica's decisions: the
#: learner reads every NEXTBEST_LEARNER_READ_INTERVAL_SECONDS and publishes within
#: tens of ms; the rest is slack for a busy 2-core test machine
PROPAGATION_SECONDS = 3.0


def _env(url: str, demo: DemoDirs) -> dict[str, str]:
    return {**nextbest_env(url, demo.data_dir, demo.models_dir, cluster=True),
            "NEXTBEST_EPSILON": "0", "NEXTBEST_SEED": "1", "NEXTBEST_SNAPSHOT_SECONDS": "1",
            "PYTHONPATH": str(ROOT)}


def _start(name: str, url: str, demo: DemoDirs, logs: Path) -> Server:
    port = free_port()
    return start_http(name, nextbest_args(port), _env(url, demo), port, logs / f"{name}.log",
                      cwd=ROOT)


@pytest.fixture(scope="module")
def cluster_url(demo_cluster_materialized: str, demo: DemoDirs) -> str:
    clear_cluster(demo_cluster_materialized)
    promote(demo, "1", demo_cluster_materialized, cluster=True)
    return demo_cluster_materialized


@pytest.fixture(scope="module")
def replicas(cluster_url: str, demo: DemoDirs,
             tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Server, Server]]:
    logs = tmp_path_factory.mktemp("replicas")
    a = _start("replica-a", cluster_url, demo, logs)
    try:
        b = _start("replica-b", cluster_url, demo, logs)
    except BaseException:
        a.stop()
        raise
    yield a, b
    a.stop()
    b.stop()


def decide(url: str, customer: str, **body: Any) -> dict[str, Any]:
    payload = {"customer_id": customer, "channel": "web", "placement": "home", **body}
    r = httpx.post(f"{url}/v1/decisions", json=payload, timeout=10)
    assert r.status_code == 200, r.text
    return dict(r.json())


def send(url: str, decision: dict[str, Any], action_id: str, outcome: str) -> None:
    r = httpx.post(f"{url}/v1/feedback", json={"decision_id": decision["decision_id"],
                                               "action_id": action_id, "outcome": outcome},
                   timeout=10)
    assert r.status_code == 202, r.text


def metric(url: str, name: str) -> float:
    text = httpx.get(f"{url}/metrics", timeout=10).text
    found = re.search(rf"^{name} ([0-9.e+]+)$", text, re.MULTILINE)
    assert found is not None, f"{name} is not exported"
    return float(found[1])


def rank_of(url: str, customer: str, action_id: str, **body: Any) -> int:
    ids = [a["action_id"] for a in decide(url, customer, limit=20, **body)["actions"]]
    return ids.index(action_id) + 1 if action_id in ids else 99


def test_feedback_on_one_replica_changes_the_other_s_decisions(
        replicas: tuple[Server, Server]) -> None:
    a, b = replicas
    context = {"channel": "app", "placement": "product",
               "context": {"journey_stage": "consideration"}}
    ranked = [x["action_id"] for x in decide(b.url, "c00011", limit=20, **context)["actions"]]
    target = ranked[len(ranked) // 2]
    before = rank_of(b.url, "c00011", target, **context)
    assert rank_of(a.url, "c00011", target, **context) == before  # one model, no feedback yet
    for _ in range(40):
        d = decide(a.url, "c00011", candidates=[target], limit=1, **context)
        send(a.url, d, target, "impression")
        send(a.url, d, target, "accept")
    acknowledged = time.monotonic()
    while (after := rank_of(b.url, "c00011", target, **context)) >= before:
        assert time.monotonic() - acknowledged < PROPAGATION_SECONDS, f"rank stayed {before}"
        time.sleep(0.02)
    assert after < before
    explained = decide(b.url, "c00011", candidates=[target], limit=1, explain=True, **context)
    assert explained["actions"][0]["explanation"]["online_correction"] > 0


def test_a_dismissal_on_one_replica_is_respected_by_the_other(
        replicas: tuple[Server, Server], demo: DemoDirs) -> None:
    a, b = replicas
    catalog = load_catalog(demo.data_dir / "catalog.json", shipped_world("retail"))
    both = catalog.allowed("web", "cart") & catalog.allowed("pos", "checkout")
    target = catalog.ids[int(np.flatnonzero(both)[0])]
    cart = {"channel": "web", "placement": "cart", "candidates": [target], "limit": 1}
    assert [x["action_id"] for x in decide(b.url, "c00012", **cart)["actions"]] == [target]
    at_till = decide(a.url, "c00012", channel="pos", placement="checkout", candidates=[target],
                     limit=1)
    send(a.url, at_till, target, "impression")
    send(a.url, at_till, target, "dismiss")
    acknowledged = time.monotonic()
    while decide(b.url, "c00012", **cart)["actions"]:
        assert time.monotonic() - acknowledged < PROPAGATION_SECONDS, "B still offers it"
        time.sleep(0.01)
    assert "no_eligible_actions" in decide(b.url, "c00012", **cart)["degraded"]
    # the dismissal is this customer's: another one is still offered the action
    assert [x["action_id"] for x in decide(b.url, "c00013", **cart)["actions"]] == [target]


def test_a_replica_started_later_serves_the_champion_and_the_same_learned_state(
        replicas: tuple[Server, Server], cluster_url: str, demo: DemoDirs,
        tmp_path: Path) -> None:
    """From its snapshot and the stream's tail: the same model versions as B, the same
    scores for the same requests, and the dismissal it never saw."""
    _, b = replicas
    c = _start("replica-c", cluster_url, demo, tmp_path)
    try:
        ready_b = httpx.get(f"{b.url}/readyz").json()
        ready_c = httpx.get(f"{c.url}/readyz").json()
        assert ready_c["models"]["offline"] == ready_b["models"]["offline"] == "nextbest-ranker:1"
        assert ready_c["models"]["online"] == ready_b["models"]["online"]
        assert int(ready_c["models"]["online"].split(":")[1]) > 0  # the earlier tests' feedback
        for customer in ("c00011", "c00012", "c00020"):
            for placement in ("home", "product", "cart"):
                body = {"channel": "app" if placement == "product" else "web",
                        "placement": placement, "limit": 10, "explain": True}
                on_b, on_c = decide(b.url, customer, **body), decide(c.url, customer, **body)
                assert [x["action_id"] for x in on_c["actions"]] == [
                    x["action_id"] for x in on_b["actions"]]
                assert [x["score"] for x in on_c["actions"]] == pytest.approx(
                    [x["score"] for x in on_b["actions"]], rel=1e-9)
    finally:
        c.stop()


def test_a_sigkill_under_feedback_load_loses_no_acknowledged_event(
        replicas: tuple[Server, Server], cluster_url: str) -> None:
    """Four clients send batches of feedback to A (on decisions B made) while A is killed;
    every event A acknowledged with a 202 is in the stream, and B learns each one once."""
    a, b = replicas
    decisions = [decide(b.url, f"c{i:05d}", limit=3) for i in range(40, 80)]
    acknowledged: list[str] = []
    lock, stop = threading.Lock(), threading.Event()
    updates_before = metric(b.url, "nextbest_learner_updates_total")

    def load(worker: int) -> None:
        with httpx.Client(base_url=a.url, timeout=5) as http:
            for n in range(10_000):
                if stop.is_set():
                    return
                d = decisions[(worker * 7 + n) % len(decisions)]
                events = [{"decision_id": d["decision_id"], "action_id": x["action_id"],
                           "outcome": "impression", "event_id": f"w{worker}-{n}-{j}"}
                          for j, x in enumerate(d["actions"])]
                try:
                    r = http.post("/v1/feedback", json={"events": events})
                except httpx.HTTPError:
                    return  # A is gone
                if r.status_code == 202:
                    assert r.json()["accepted"] == len(events)
                    with lock:
                        acknowledged.extend(e["event_id"] for e in events)

    workers = [threading.Thread(target=load, args=(w,)) for w in range(4)]
    for w in workers:
        w.start()
    deadline = time.monotonic() + 10
    while len(acknowledged) < 300:
        assert time.monotonic() < deadline, "A acknowledged too little feedback"
        time.sleep(0.01)
    os.kill(a.proc.pid, signal.SIGKILL)
    a.proc.wait()
    stop.set()
    for w in workers:
        w.join()

    client: Any = redis.RedisCluster.from_url(cluster_url)
    try:
        entries = client.xrange("nb:feedback")
        in_stream = [orjson.loads(fields[b"e"]).get("event_id") for _, fields in entries]
    finally:
        client.close()
    assert set(acknowledged) <= set(in_stream), len(set(acknowledged) - set(in_stream))
    mine = [e for e in in_stream if e is not None and e.startswith("w")]
    assert len(mine) == len(set(mine))  # nothing appended twice
    # B, alive, folds every one of them into its learner, once
    deadline = time.monotonic() + PROPAGATION_SECONDS
    while metric(b.url, "nextbest_learner_updates_total") < updates_before + len(mine):
        assert time.monotonic() < deadline, "B did not learn what A appended"
        time.sleep(0.05)
    assert metric(b.url, "nextbest_learner_updates_total") == updates_before + len(mine)
