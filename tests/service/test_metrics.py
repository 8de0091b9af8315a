"""The Prometheus exposition, parsed with prometheus_client's own parser."""

from __future__ import annotations

import time

import pytest
import redis
from fastapi.testclient import TestClient
from prometheus_client.parser import text_string_to_metric_families

from service.app import create_app
from service.metrics import STAGES
from tests.demo_fixtures import DemoDirs, clear_service_state
from tests.service.conftest import make_settings


def samples(client: TestClient) -> dict[str, list]:
    r = client.get("/metrics")
    assert r.status_code == 200 and r.headers["content-type"].startswith("text/plain")
    out: dict[str, list] = {}
    for family in text_string_to_metric_families(r.text):
        for s in family.samples:
            out.setdefault(s.name, []).append(s)
    return out


def _count(s: dict[str, list], name: str, **labels: str) -> float:
    return sum(x.value for x in s.get(name, []) if all(x.labels.get(k) == v for k, v in labels.items()))


def test_exposition_covers_requests_stages_feedback_and_models(client: TestClient) -> None:
    before = samples(client)
    for channel, placement in (("web", "cart"), ("pos", "checkout")):
        d = client.post("/v1/decisions", json={"customer_id": "c00002", "channel": channel,
                                               "placement": placement}).json()
        if d["actions"]:
            client.post("/v1/feedback", json={"decision_id": d["decision_id"],
                                              "action_id": d["actions"][0]["action_id"],
                                              "outcome": "accept"})
    client.post("/v1/decisions", json={"channel": "nope"})
    s = samples(client)

    counts = {(x.labels["endpoint"], x.labels["channel"], x.labels["status"]): x.value
              for x in s["nextbest_http_request_duration_seconds_count"]}
    assert counts[("/v1/decisions", "web", "200")] >= 1
    assert counts[("/v1/decisions", "pos", "200")] >= 1
    assert counts[("/v1/decisions", "", "422")] - _count(
        before, "nextbest_http_request_duration_seconds_count", endpoint="/v1/decisions", status="422"
    ) == 1
    stages = {x.labels["stage"] for x in s["nextbest_stage_duration_seconds_count"] if x.value > 0}
    assert stages == set(STAGES)
    decisions = {x.labels["channel"]: x.value for x in s["nextbest_decisions_total"]}
    assert decisions["pos"] >= 1
    assert any(x.labels["outcome"] == "accept" for x in s["nextbest_feedback_events_total"])
    errors = {(x.labels["endpoint"], x.labels["status"]): x.value for x in s["nextbest_errors_total"]}
    assert errors[("/v1/decisions", "422")] - _count(
        before, "nextbest_errors_total", endpoint="/v1/decisions", status="422"
    ) == 1
    info = s["nextbest_model_info"]
    assert info[0].labels["role"] == "offline" and info[0].value == 1
    assert "nextbest_learner_updates_total" in s
    assert "nextbest_learner_lag_seconds_bucket" in s
    assert s["nextbest_ready"][0].value == 1


def test_event_loop_lag_is_sampled_while_serving(client: TestClient) -> None:
    before = _count(samples(client), "nextbest_event_loop_lag_seconds_count")
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline:
        lag = _count(samples(client), "nextbest_event_loop_lag_seconds_count")
        if lag > before:
            break
        time.sleep(0.05)
    assert lag > before, "the event loop lag watch observed nothing in 5 s"


def test_degraded_responses_count_each_decision_once_and_not_anonymous(client: TestClient) -> None:
    before = samples(client)
    client.post("/v1/decisions", json={"channel": "app"})  # anonymous: not an outage
    d = client.post("/v1/decisions", json={"customer_id": "nobody-here", "channel": "app"}).json()
    assert "unknown_customer" in d["degraded"]
    after = samples(client)

    def delta(name: str, **labels: str) -> float:
        return _count(after, name, **labels) - _count(before, name, **labels)

    assert delta("nextbest_degraded_responses_total", channel="app") == 1
    assert delta("nextbest_degraded_decisions_total", channel="app", reason="anonymous") == 1
    assert delta("nextbest_degraded_decisions_total", channel="app", reason="unknown_customer") == 1


def test_stage_histogram_exposes_what_a_prometheus_histogram_would() -> None:
    from prometheus_client import CollectorRegistry, Histogram, generate_latest

    from service.metrics import STAGE_BUCKETS, Metrics

    ours = Metrics()
    reference_registry = CollectorRegistry()
    reference = Histogram("nextbest_stage_duration_seconds", "x", ["stage"],
                          buckets=STAGE_BUCKETS, registry=reference_registry)
    observations = [("offline", 3e-5), ("offline", 0.0001), ("offline", 0.2), ("features", 0.0004)]
    for stage, seconds in observations:
        ours.stage_latency.observe(stage, seconds)
        reference.labels(stage).observe(seconds)

    def series(text: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
        return {(s.name, tuple(sorted(s.labels.items()))): s.value
                for f in text_string_to_metric_families(text) for s in f.samples
                if s.name.startswith("nextbest_stage_duration_seconds")
                and not s.name.endswith("_created")}

    mine = series(generate_latest(ours.registry).decode())
    expected = series(generate_latest(reference_registry).decode())
    assert expected and all(mine[k] == v for k, v in expected.items())
    # a decision's steps observed at once: the same series
    laps = Metrics()
    clock, done = 10.0, []
    for stage, seconds in observations:
        clock += seconds
        done.append((stage, clock))
    laps.stage_latency.observe_laps(10.0, done)
    by_laps = series(generate_latest(laps.registry).decode())
    assert all(by_laps[k] == pytest.approx(v) for k, v in expected.items())
    # stages never observed are exposed too, at zero
    assert mine[("nextbest_stage_duration_seconds_count", (("stage", "log"),))] == 0


def test_loop_counter_exposes_what_a_prometheus_counter_would() -> None:
    from prometheus_client import CollectorRegistry, Counter, generate_latest

    from service.metrics import LoopCounter

    ours, reference = CollectorRegistry(), CollectorRegistry()
    mine = LoopCounter("nb_things_total", "Things.", ["channel", "reason"], registry=ours)
    theirs = Counter("nb_things_total", "Things.", ["channel", "reason"], registry=reference)
    for labels, amount in ((("web", "a"), 1.0), (("pos", "b"), 3.0), (("web", "a"), 2.5)):
        mine.inc(*labels, amount=amount)
        theirs.labels(*labels).inc(amount)

    def series(registry: CollectorRegistry) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
        return {(s.name, tuple(sorted(s.labels.items()))): s.value
                for f in text_string_to_metric_families(generate_latest(registry).decode())
                for s in f.samples if not s.name.endswith("_created")}

    assert series(ours) == series(reference) != {}
    assert mine.value("web", "a") == 3.5 and mine.value("app", "a") == 0
    with pytest.raises(ValueError, match="takes labels"):
        mine.inc("web")


def _stage_counts(metrics: object) -> dict[str, float]:
    from prometheus_client import generate_latest

    text = generate_latest(metrics.registry).decode()  # type: ignore[attr-defined]
    return {s.labels["stage"]: s.value for f in text_string_to_metric_families(text)
            for s in f.samples if s.name == "nextbest_stage_duration_seconds_count"}


def test_stage_clock_observes_each_step_once_and_counts_the_step_that_failed() -> None:
    from service.metrics import Metrics

    m = Metrics()
    with m.stages() as stage:
        stage.done("candidates")
        stage.done("eligibility")
    counts = _stage_counts(m)
    assert counts["candidates"] == counts["eligibility"] == 1 and counts["contacts"] == 0
    assert m.stage_latency._sums["candidates"] >= 0.0

    with pytest.raises(RuntimeError), m.stages() as stage:
        stage.done("candidates")
        raise RuntimeError("the customer step broke")
    assert m.stage_failures.labels("customer")._value.get() == 1
    assert _stage_counts(m)["candidates"] == 2  # steps done before the failure still count

    with pytest.raises(RuntimeError), m.stages():
        raise RuntimeError("before any step")
    assert m.stage_failures.labels(STAGES[0])._value.get() == 1


def test_the_export_watermarks_in_redis_become_gauges(demo: DemoDirs, demo_redis: str) -> None:
    """With Redis, the runtime reads what `nextbest export` stored into its export gauges."""
    clear_service_state(demo_redis)
    r = redis.Redis.from_url(demo_redis)
    r.xadd("nb:decisions", {"d": b"{}"}, id="1780272600000-0")  # no replica reads this stream
    r.hset("nb:export:decisions", mapping={"last_id": "1780272000000-0", "exported": "10", "lost": "7"})
    r.close()
    with TestClient(create_app(make_settings(demo, demo_redis))) as client:
        deadline = time.monotonic() + 10
        while "nextbest_export_lost_events" not in (s := samples(client)) and time.monotonic() < deadline:
            time.sleep(0.05)
    assert [(x.labels, x.value) for x in s["nextbest_export_lost_events"]] == [({"stream": "decisions"}, 7)]
    assert [(x.labels, x.value) for x in s["nextbest_export_lag_seconds"]] == [({"stream": "decisions"}, 600)]
