"""The insight counts (service/insights.py) and the reports over HTTP, on both backends."""

from __future__ import annotations

import time
from typing import Any

import pytest
import redis
from fastapi.testclient import TestClient

from features.config import shipped_world
from service.app import create_app
from service.insights import HOUR, Insights, Labels, MemoryCounts, RedisCounts
from service.metrics import Metrics
from service.settings import Settings
from tests.demo_fixtures import DemoDirs, clear_service_state
from tests.service.conftest import make_settings


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"  # the stores' clients are asyncio's

WORLD = shipped_world("retail")


def test_labels_are_bounded_by_the_world() -> None:
    labels = Labels.of(WORLD, kinds=["voucher"])
    assert labels.channel("web") == "web" and labels.channel("fax") == "other"
    assert labels.stage("purchase") == "purchase" and labels.stage("c00042") == "other"
    assert labels.stage("") == labels.stage(None) == "unknown"
    assert labels.kind("voucher") == "voucher"
    assert labels.group("control") == "control" and labels.group("x") == "other"


class FailingCounts(MemoryCounts):
    fail = True

    async def add(self, hour: int, counts: Any, ttl_seconds: int) -> None:
        if self.fail:
            raise ConnectionError("store away")
        await super().add(hour, counts, ttl_seconds)


def event(outcome: str, value: float | None = None, **fields: Any) -> dict[str, Any]:
    now = time.time()
    return {"action_id": "p001", "outcome": outcome, "value": value, "channel": "web",
            "journey_stage": "purchase", "group": "treatment", "decided_at": now, "ts": now,
            **fields}


@pytest.mark.anyio
async def test_counts_survive_a_failed_flush_and_reach_prometheus() -> None:
    metrics = Metrics()
    store = FailingCounts()
    insights = Insights(store, metrics, Labels.of(WORLD), lambda a: "product")
    insights.decided([{"ts": time.time(), "channel": "web", "group": "control"}])
    insights.observed([event("impression", group="control"), event("accept", 12.5, group="control"),
                       event("dismiss", customer_id="c00001", journey_stage="c00001")])
    await insights.flush()  # fails: kept
    store.fail = False
    counts, _ = await insights.counts()
    totals = counts.totals
    assert totals["d|control|web"] == 1
    assert totals["e|control|web|purchase|product|accept"] == 1
    assert totals["v|control|web|purchase|product"] == 12.5
    assert totals["q|control|web"] == 12.5 ** 2
    assert totals["e|treatment|web|other|product|dismiss"] == 1  # an id is never a label value
    assert metrics.touchpoint_events.value("web", "purchase", "product", "accept") == 1
    assert metrics.group_outcomes.value("control", "web", "accept") == 1
    assert metrics.group_value.value("control", "web") == 12.5
    assert metrics.group_decisions.value("control", "web") == 1
    scraped = "".join(line for line in __import__("prometheus_client").generate_latest(
        metrics.registry).decode().splitlines() if "touchpoint" in line)
    assert "c00001" not in scraped


@pytest.mark.anyio
async def test_since_and_retention_pick_the_hours(redis_url: str) -> None:
    import redis.asyncio as aioredis

    client = aioredis.from_url(redis_url)
    now = [1_000 * HOUR + 10.0]
    insights = Insights(RedisCounts(client), Metrics(), Labels.of(WORLD), lambda a: "product",
                        retention_hours=3, clock=lambda: now[0])
    for hours_ago in (5, 2, 1, 0):
        insights.decided([{"ts": now[0] - hours_ago * HOUR, "channel": "web"}])
    counts, start = await insights.counts()
    assert counts.totals == {"d|treatment|web": 3} and start == 998 * HOUR  # 3 hours retained
    counts, start = await insights.counts(since=now[0] - HOUR)
    assert counts.totals == {"d|treatment|web": 2} and start == 999 * HOUR
    assert await client.ttl(f"nb:insights:{1000}") > 2 * HOUR
    await client.aclose()


def decide(client: TestClient, customer: str, **body: Any) -> dict[str, Any]:
    r = client.post("/v1/decisions", json={"customer_id": customer, "channel": "web",
                                           "placement": "home", "limit": 1, **body})
    assert r.status_code == 200, r.text
    return r.json()


def feedback(client: TestClient, d: dict[str, Any], outcome: str, value: float | None = None) -> None:
    r = client.post("/v1/feedback", json={"decision_id": d["decision_id"],
                                          "action_id": d["actions"][0]["action_id"],
                                          "outcome": outcome, "value": value})
    assert r.status_code == 202, r.text


def settle(client: TestClient) -> None:
    """Wait until the replica's decision records are written (and so counted)."""
    log = client.app.state.runtime.decision_log  # type: ignore[attr-defined]
    deadline = time.monotonic() + 10
    while log.depth:
        assert time.monotonic() < deadline, "decision records not written"
        time.sleep(0.01)


def test_reports_over_http(backend_settings: Settings) -> None:
    settings = backend_settings.model_copy(update={"control_share": 0.5})
    with TestClient(create_app(settings)) as client:
        groups: dict[str, int] = {"treatment": 0, "control": 0}
        accepted = {"treatment": 0, "control": 0}
        for i in range(40):
            d = decide(client, f"c{i + 1:05d}")
            groups[d["group"]] += 1
            feedback(client, d, "impression")
            if i % 4 == 0:
                feedback(client, d, "accept", 10.0)
                feedback(client, d, "accept", 10.0)  # a resend: applied, and counted, once
                accepted[d["group"]] += 1
            elif i % 4 == 1:
                feedback(client, d, "dismiss")
        settle(client)
        r = client.get("/v1/reports/uplift")
        assert r.status_code == 200, r.text
        report = r.json()
        assert report["control_share"] == 0.5 and report["control_policy"] == "random"
        rows = {(g["channel"], g["group"]): g for g in report["groups"]}
        for group in ("treatment", "control"):
            row = rows[("web", group)]
            assert row["decisions"] == groups[group] and row["accepts"] == accepted[group]
            assert row["value"] == 10.0 * accepted[group]
            assert rows[("all", group)]["decisions"] == groups[group]
        assert {(u["channel"], u["metric"]) for u in report["uplift"]} == {
            (c, m) for c in ("web", "all") for m in ("acceptance_rate", "value_per_decision")}

        r = client.get("/v1/insights/touchpoints", params={"min_impressions": 5})
        assert r.status_code == 200, r.text
        t = r.json()
        (web,) = t["channels"]
        assert (web["impressions"], web["accepts"], web["dismissals"]) == (40, 10, 10)
        assert web["acceptance_rate"]["value"] == pytest.approx(0.25)
        assert web["dismissal_rate"] == pytest.approx(0.25)
        assert web["value_per_impression"] == pytest.approx(2.5)
        assert sum(p["impressions"] for p in t["touchpoints"]) == 40
        assert sum(p["impressions"] for p in t["by_kind"]) == 40
        for p in t["pleasure_points"]:
            assert p["lift"] > 1 and p["impressions"] >= 5
        for p in t["pain_points"]:
            assert p["dismissal_rate"] > 0
        lifts = [p["lift"] for p in t["pleasure_points"]]
        assert lifts == sorted(lifts, reverse=True)
        only = client.get("/v1/insights/touchpoints", params={"group": "control"}).json()
        assert only["channels"][0]["impressions"] == groups["control"]

        metrics = client.get("/metrics").text
        assert 'nextbest_group_decisions_total{channel="web",group="control"}' in metrics
        assert "nextbest_touchpoint_events_total{" in metrics


def test_report_parameters_are_validated(client: TestClient) -> None:
    r = client.get("/v1/reports/uplift", params={"since": "yesterday"})
    assert r.status_code == 422 and "since" in r.json()["message"]
    r = client.get("/v1/reports/uplift", params={"level": 1.5})
    assert r.status_code == 422 and "level" in r.json()["message"]
    r = client.get("/v1/insights/touchpoints", params={"group": "everyone"})
    assert r.status_code == 422 and "group" in r.json()["message"]
    r = client.get("/v1/reports/uplift", params={"since": "2999-01-01T00:00:00Z"})
    assert r.status_code == 200 and all(g["decisions"] == 0 for g in r.json()["groups"])


def test_reports_need_the_api_key(demo: DemoDirs) -> None:
    """The reports take any valid key; the console's catalog view (budgets left) the admin scope."""
    settings = make_settings(demo, api_keys="shop:k1:decide+feedback,ops:k2:admin")
    with TestClient(create_app(settings)) as client:
        for path in ("/v1/reports/uplift", "/v1/insights/touchpoints", "/v1/console/catalog"):
            assert client.get(path).status_code == 401
            assert client.get(path, headers={"x-api-key": "k2"}).status_code == 200
        assert client.get("/v1/reports/uplift", headers={"x-api-key": "k1"}).status_code == 200
        assert client.get("/v1/console/catalog", headers={"x-api-key": "k1"}).status_code == 403


def test_the_reports_are_cluster_wide(demo: DemoDirs, demo_redis: str) -> None:
    """Decisions on one replica, feedback to the other: either one reports everything."""
    clear_service_state(demo_redis)
    settings = make_settings(demo, demo_redis, control_share=0.5, insights_flush_seconds=0.1)
    with TestClient(create_app(settings)) as a, TestClient(create_app(settings)) as b:
        decisions = [decide(a, f"c{i + 1:05d}") for i in range(30)]
        settle(a)
        for d in decisions:
            feedback(b, d, "impression")
            feedback(b, d, "accept", 4.0)
        # each replica adds its counts every insights_flush_seconds: both see all soon
        for reporter in (a, b):
            deadline = time.monotonic() + 5
            while True:
                groups = [g for g in reporter.get("/v1/reports/uplift").json()["groups"]
                          if g["channel"] == "all"]
                seen = [sum(g[k] for g in groups) for k in ("decisions", "accepts", "value")]
                if seen == [30, 30, 120.0] or time.monotonic() > deadline:
                    break
                time.sleep(0.05)
            assert seen == [30, 30, 120.0]
    assert redis.Redis.from_url(demo_redis).keys("nb:insights:*")  # in Redis, not only in the replicas
