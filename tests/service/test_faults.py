"""Faults injected into a real `nextbest serve` on a real redis-server, under traffic.

Each test starts its own redis-server on a free loopback port, copies the demo's
materialized online store into it (DUMP/RESTORE of the session's materialized Redis, so
no test pays for Feast), starts the service on it, runs a bounded open-loop load of
decisions each followed by one feedback event (`tests/service/faults.py`), injects its
fault and stops everything by PID. What each one simulates:

- **Redis stopped for 10 s**: SIGTERM to redis-server (with an append-only file fsynced
  on every write, so it keeps what it acknowledged), started again on the same port 10 s
  later: a Redis restart or failover. Every decision is answered; every record is in the
  decision stream once Redis is back; every feedback event answered 202 is in the
  feedback stream, once; `/readyz` stays 200 and fast, and says `state_backend: down`.
- **SIGKILL of the service** under feedback load, Redis up: no acknowledged event is
  lost (the feedback path writes to Redis before it answers 202); the decision records
  lost are at most those of the last moments before the kill.
- **A stall** (`DEBUG SLEEP 3`): Redis accepts connections but answers nothing for 3 s;
  decisions keep answering (p99 within `OUTAGE_P99_BOUND`, none waits for the stall),
  `/readyz` too, and nothing is lost.
- **Redis restarted empty** (SIGKILL, started again without its data): decisions are
  flagged `online_store_empty`, `/readyz` says so, the cached action features are kept
  (the same ranking as before), and the flag clears when the store is filled again.
- **Duplicates**: the same event five times, alone and in a batch, is stored and learned
  once.

Every test prints its figures as one JSON line (`pytest -s` shows them; docs/operations.md
quotes a run).
"""

from __future__ import annotations

import json
import signal
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from load_tests.processes import Server
from load_tests.traffic import mixed_traffic
from tests.demo_fixtures import DemoDirs, clear_service_state
from tests.service.faults import (
    Load,
    RedisProcess,
    copy_store,
    kill,
    metric,
    p99,
    run_load,
    start_service,
    stream_ids,
    wait_for_stream,
)

pytestmark = pytest.mark.integration

RATE = 50.0  # decisions per second, each followed by a feedback event
#: the share of the nominal rate the load must at least reach (on a machine shared with
#: other work the generator falls behind its schedule)
MIN_RATE_SHARE = 0.25
OUTAGE_SECONDS = 10.0
#: decisions while Redis is stopped or stalled: the decision path waits at most its read
#: timeout (NEXTBEST_REDIS_TIMEOUT_SECONDS) for Redis, so their p99 stays under this, or
#: under three times the p99 of the decisions around the fault when the machine is busy
OUTAGE_P99_BOUND = 0.25
READY_BOUND = 0.5  # the slowest /readyz accepted while Redis is away or stalled


@pytest.fixture(scope="module")
def shared_store(tmp_path_factory: pytest.TempPathFactory,
                 demo_redis: str) -> Iterator[RedisProcess]:
    """A redis-server of this module's own, holding the demo's online store, persistent."""
    process = RedisProcess(tmp_path_factory.mktemp("faults") / "redis", persist=True)
    process.start()
    assert copy_store(demo_redis, process.url) > 0
    yield process
    process.stop(signal.SIGKILL)


@pytest.fixture(scope="module")
def shared_service(shared_store: RedisProcess, demo: DemoDirs,
                   tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    """`nextbest serve` on it, checking its health and refreshing its action features
    every half second (its start-up is the slowest part of these tests: one for all the
    tests that keep it alive)."""
    server = start_service(shared_store.url, demo, tmp_path_factory.mktemp("service"),
                           health_interval_seconds="0.5", action_refresh_seconds="0.5")
    yield server
    server.stop()


@pytest.fixture
def store(shared_store: RedisProcess) -> RedisProcess:
    """The module's Redis, without the service's keys of the tests before."""
    clear_service_state(shared_store.url)
    return shared_store


@pytest.fixture
def service(store: RedisProcess, shared_service: Server) -> Server:
    return shared_service


@pytest.fixture(scope="module")
def bodies(demo: DemoDirs) -> list[str]:
    return [i["body"] for i in mixed_traffic(demo.data_dir, n=2000, seed=11)]


def report(name: str, figures: dict[str, object]) -> None:
    print(f"\nFAULT {name}: {json.dumps(figures, sort_keys=True)}")


def check_nothing_lost(store: RedisProcess, load: Load) -> dict[str, int]:
    """Every decision answered is in the decision stream once, every feedback event
    answered 202 in the feedback stream once (waiting for the spools to drain)."""
    decisions = load.answered("decision")
    acknowledged = [str(c.event_id) for c in load.of("feedback") if c.status == 202]
    client = store.client()
    wait_for_stream(client, "nb:decisions", len(decisions), 30)
    wait_for_stream(client, "nb:feedback", len(acknowledged), 30)
    records = stream_ids(client, "nb:decisions", b"d", "decision_id")
    events = stream_ids(client, "nb:feedback", b"e", "event_id")
    client.close()
    assert len(records) == len(set(records)), "a decision record was written twice"
    assert sorted(records) == sorted(str(c.decision_id) for c in decisions)
    assert len(events) == len(set(events)), "a feedback event was stored twice"
    assert sorted(events) == sorted(acknowledged)
    return {"decisions_answered": len(decisions), "records_written": len(records),
            "events_sent": len(load.of("feedback")), "events_acknowledged": len(acknowledged),
            "events_stored": len(events), "events_lost": len(set(acknowledged) - set(events))}


def test_redis_stopped_for_10_s_under_traffic(store: RedisProcess, service: Server,
                                              bodies: list[str]) -> None:
    scraped: dict[str, float | None] = {}

    def scrape() -> None:
        for name in ("nextbest_ready", "nextbest_state_backend_up"):
            scraped[name] = metric(service.url, name)

    stop_at, duration = 3.0, 3.0 + OUTAGE_SECONDS + 3.0
    load = run_load(service.url, bodies, RATE, duration, faults=[
        (stop_at, "stop", store.stop),
        (stop_at + OUTAGE_SECONDS / 2, "scrape", scrape),
        (stop_at + OUTAGE_SECONDS, "start", store.start),
    ])
    down, up = load.marks["stop"][1], load.marks["start"][0]
    decisions = load.of("decision")
    during = load.of("decision", down, up)
    outside = [c for c in decisions if not down <= c.sent < up]
    feedback = load.of("feedback")
    ready = load.of("ready")
    outage_ready = load.of("ready", down + 1.0, up)
    figures = check_nothing_lost(store, load)
    report("redis stopped 10 s", {
        **figures, "decisions_sent": len(decisions), "decisions_during_outage": len(during),
        "degraded_during_outage": sum(1 for c in during if "features_unavailable" in c.degraded),
        "p99_during_outage_ms": round(1000 * p99(during), 1),
        "p99_outside_ms": round(1000 * p99(outside), 1),
        "feedback_retried": sum(1 for c in feedback if c.attempts > 1),
        "ready_max_ms_during_outage": round(1000 * max(c.seconds for c in outage_ready), 1),
    })

    assert [c.status for c in decisions if c.status != 200] == []
    assert len(during) >= RATE * OUTAGE_SECONDS * MIN_RATE_SHARE
    assert p99(during) < max(OUTAGE_P99_BOUND, 3 * p99(outside))
    assert [c.status for c in feedback if c.status != 202] == []
    # ready all along, answered without Redis, and saying the backend is down
    assert {c.status for c in ready} == {200}
    assert outage_ready and max(c.seconds for c in outage_ready) < READY_BOUND
    assert all(c.body is not None and c.body["state_backend"] == "down" for c in outage_ready)
    assert scraped == {"nextbest_ready": 1.0, "nextbest_state_backend_up": 0.0}
    assert metric(service.url, "nextbest_state_backend_up") == 1.0


def test_a_stall_keeps_decisions_bounded(store: RedisProcess, service: Server,
                                         bodies: list[str]) -> None:
    stall = 3

    def sleep() -> None:
        client = store.client()
        client.execute_command("DEBUG", "SLEEP", str(stall))
        client.close()

    load = run_load(service.url, bodies, RATE, 8.0, faults=[(2.0, "stall", sleep)])
    began, ended = load.marks["stall"]
    during = load.of("decision", began, ended)
    outside = [c for c in load.of("decision") if not began <= c.sent < ended]
    ready = load.of("ready", began, ended)
    figures = check_nothing_lost(store, load)
    report("DEBUG SLEEP 3", {
        **figures, "decisions_during_stall": len(during),
        "p99_during_stall_ms": round(1000 * p99(during), 1),
        "max_during_stall_ms": round(1000 * max(c.seconds for c in during), 1),
        "p99_outside_ms": round(1000 * p99(outside), 1),
        "feedback_max_during_stall_ms": round(1000 * max(
            c.seconds for c in load.of("feedback", began, ended)), 1),
        "ready_max_ms_during_stall": round(1000 * max(c.seconds for c in ready), 1),
    })
    assert ended - began >= stall * 0.9
    assert [c.status for c in load.of("decision") if c.status != 200] == []
    assert len(during) >= RATE * stall * MIN_RATE_SHARE
    assert p99(during) < max(OUTAGE_P99_BOUND, 3 * p99(outside))
    assert max(c.seconds for c in during) < stall  # no decision waited for the stall to end
    assert ready and {c.status for c in ready} == {200}
    assert max(c.seconds for c in ready) < READY_BOUND
    assert [c.status for c in load.of("feedback") if c.status != 202] == []


def test_the_same_event_five_times_is_applied_once(store: RedisProcess, service: Server) -> None:
    # the module's earlier loads learned first: nothing left in the spools (feedback
    # spooled through an outage is written with a backoff of up to 2 s), the learner still
    _wait_metric_at_most(service.url, 'nextbest_spool_depth{kind="feedback"}', 0.0)
    learned = _settled_metric(service.url, "nextbest_learner_updates_total", quiet=2.5)
    duplicates = metric(service.url, "nextbest_feedback_duplicates_total") or 0.0
    with httpx.Client(base_url=service.url, timeout=5) as http:
        decision = http.post("/v1/decisions", json={
            "customer_id": "c00003", "channel": "web", "placement": "home", "limit": 2}).json()
        shown = [a["action_id"] for a in decision["actions"]]
        with_id = {"decision_id": decision["decision_id"], "action_id": shown[0],
                   "outcome": "click", "event_id": "evt-1"}
        without_id = {"decision_id": decision["decision_id"], "action_id": shown[1],
                      "outcome": "dismiss"}
        answers = [http.post("/v1/feedback", json=e).json()
                   for e in (with_id, without_id) for _ in range(5)]
        batch = http.post("/v1/feedback", json={"events": [with_id] * 5 + [without_id] * 5})
        assert [a["accepted"] for a in answers] == [1] * 10
        assert [a["duplicates"] for a in answers] == [0, 1, 1, 1, 1] * 2
        assert batch.status_code == 202 and batch.json() == {
            "accepted": 10, "duplicates": 10, "rejected": []}
    client = store.client()
    events = stream_ids(client, "nb:feedback", b"e", "event_id")
    client.close()
    assert sorted(events) == sorted(["evt-1", f"{decision['decision_id']}:{shown[1]}:dismiss"])
    _wait_metric(service.url, "nextbest_learner_updates_total", learned + 2)
    time.sleep(0.5)  # a second application would have been learned by now
    assert metric(service.url, "nextbest_learner_updates_total") == learned + 2
    assert metric(service.url, "nextbest_feedback_duplicates_total") == duplicates + 18
    report("duplicates", {"events_sent": 20, "events_stored": len(events),
                          "learned": 2, "duplicates_counted": 18})


def test_redis_restarted_empty_is_flagged_and_keeps_the_action_features(
    store: RedisProcess, service: Server, demo: DemoDirs, demo_redis: str
) -> None:
    catalog = json.loads((demo.data_dir / "catalog.json").read_text())["actions"]
    candidates = [a["action_id"] for a in catalog[:12]]
    # every candidate shown, with the offline model's propensity: a function of the
    # action features (the customer's are the defaults of an anonymous caller)
    anonymous = {"channel": "web", "placement": "home", "candidates": candidates,
                 "limit": len(candidates), "explain": True}

    def offline(decision: dict) -> dict[str, float]:
        return {a["action_id"]: a["explanation"]["offline_propensity"]
                for a in decision["actions"]}

    with httpx.Client(base_url=service.url, timeout=5) as http:
        before = http.post("/v1/decisions", json=anonymous).json()
        assert before["degraded"] == ["anonymous"] and before["actions"]
        kept_before = metric(service.url, "nextbest_action_refresh_kept_total") or 0.0

        emptied = time.monotonic()
        store.stop(signal.SIGKILL)
        store.start(empty=True)
        ready = _wait_ready(http, lambda r: r["online_store"] == "empty")
        detected = time.monotonic() - emptied
        assert ready["degraded"] == ["online_store_empty"] and ready["state_backend"] == "up"
        assert metric(service.url, "nextbest_online_store_empty") == 1.0
        assert metric(service.url, "nextbest_ready") == 1.0
        _wait_metric(service.url, "nextbest_action_refresh_kept_total", kept_before + 1)
        during = http.post("/v1/decisions", json=anonymous).json()
        assert during["degraded"] == ["anonymous", "online_store_empty"]
        # the cached action features, not defaults: the very same offline propensities
        assert offline(during) == offline(before)

        copy_store(demo_redis, store.url)  # materialized again
        refilled = time.monotonic()
        _wait_ready(http, lambda r: r["online_store"] == "ok")
        cleared = time.monotonic() - refilled
        after = http.post("/v1/decisions", json=anonymous).json()
        assert after["degraded"] == ["anonymous"] and offline(after) == offline(before)
        assert metric(service.url, "nextbest_online_store_empty") == 0.0
    report("redis restarted empty", {"detected_after_s": round(detected, 2),
                                     "cleared_after_s": round(cleared, 2)})


def test_sigkill_of_the_service_under_feedback_load(demo: DemoDirs, demo_redis: str,
                                                    tmp_path: Path, bodies: list[str]) -> None:
    store = RedisProcess(tmp_path / "redis", persist=False)
    store.start()
    copy_store(demo_redis, store.url)
    service = start_service(store.url, demo, tmp_path)
    try:
        _sigkill(store, service, bodies)
    finally:
        service.stop()
        store.stop(signal.SIGKILL)


def _sigkill(store: RedisProcess, service: Server, bodies: list[str]) -> None:
    kill_at = 4.0
    load = run_load(service.url, bodies, RATE, kill_at + 1.0, ready_every=0,
                    faults=[(kill_at, "kill", lambda: kill(service))], feedback_deadline=0)
    killed = load.marks["kill"][0]
    acknowledged = [c.event_id for c in load.of("feedback") if c.status == 202]
    answered = load.answered("decision")
    client = store.client()
    events = set(stream_ids(client, "nb:feedback", b"e", "event_id"))
    records = set(stream_ids(client, "nb:decisions", b"d", "decision_id"))
    client.close()
    lost_events = set(acknowledged) - events
    lost_records = [c for c in answered if c.decision_id not in records]
    report("service SIGKILL", {
        "events_sent": len(load.of("feedback")), "events_acknowledged": len(acknowledged),
        "events_stored": len(events), "events_lost": len(lost_events),
        "decisions_answered": len(answered), "records_written": len(answered) - len(lost_records),
        "records_lost": len(lost_records),
        "unanswered_after_kill": sum(1 for c in load.calls if c.status == 0),
    })
    assert len(acknowledged) >= RATE * kill_at * MIN_RATE_SHARE
    assert lost_events == set()
    # what a SIGKILL may take: the records still lingering in the process when it died
    assert all(c.sent + c.seconds > killed - 0.5 for c in lost_records), lost_records


def _wait_ready(http: httpx.Client, condition: object, seconds: float = 10.0) -> dict:
    deadline = time.monotonic() + seconds
    while True:
        r = http.get("/readyz")
        assert r.status_code == 200, r.text
        if condition(r.json()):  # type: ignore[operator]
            return dict(r.json())
        assert time.monotonic() < deadline, f"/readyz still says {r.json()}"
        time.sleep(0.05)


def _settled_metric(url: str, name: str, quiet: float = 1.0, seconds: float = 30.0) -> float:
    """The metric once it has not moved for `quiet` seconds (0 when absent)."""
    deadline = time.monotonic() + seconds
    value, since = metric(url, name) or 0.0, time.monotonic()
    while time.monotonic() - since < quiet:
        assert time.monotonic() < deadline, f"{name} still moving after {seconds} s"
        time.sleep(0.1)
        now = metric(url, name) or 0.0
        if now != value:
            value, since = now, time.monotonic()
    return value


def _wait_metric_at_most(url: str, name: str, at_most: float, seconds: float = 30.0) -> None:
    deadline = time.monotonic() + seconds
    while (metric(url, name) or 0.0) > at_most:
        assert time.monotonic() < deadline, f"{name} stayed above {at_most}"
        time.sleep(0.05)


def _wait_metric(url: str, name: str, at_least: float, seconds: float = 10.0) -> None:
    deadline = time.monotonic() + seconds
    while (metric(url, name) or 0.0) < at_least:
        assert time.monotonic() < deadline, f"{name} stayed below {at_least}"
        time.sleep(0.05)
