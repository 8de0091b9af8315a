"""The HTTP API through httpx (Starlette's TestClient), on both state backends."""

from __future__ import annotations

import re
import time

import numpy as np
import pytest
from fastapi.testclient import TestClient

import service
from features.config import shipped_world
from service.app import create_app
from service.catalog import load_catalog
from service.settings import Settings
from tests.demo_fixtures import DemoDirs, clear_service_state, redis_client
from tests.service.conftest import make_settings

KNOWN = "c00001"


def decide(client: TestClient, **body: object) -> dict:
    payload = {"customer_id": KNOWN, "channel": "web", "placement": "home", **body}
    r = client.post("/v1/decisions", json=payload)
    assert r.status_code == 200, r.text
    return r.json()


def test_decision_shape(client: TestClient) -> None:
    d = decide(client, limit=5)
    assert len(d["decision_id"]) == 32
    assert [a["rank"] for a in d["actions"]] == [1, 2, 3, 4, 5]
    assert len({a["action_id"] for a in d["actions"]}) == 5
    scores = [a["score"] for a in d["actions"]]
    assert scores == sorted(scores, reverse=True)  # epsilon=0 in tests: pure ranking
    for a in d["actions"]:
        assert 0 < a["propensity"] < 1 and a["probability"] == 1.0 and not a["explored"]
    assert d["model_versions"]["offline"].startswith("nextbest-ranker:")
    assert d["degraded"] == []


def test_degraded_flags_for_anonymous_and_unknown(client: TestClient) -> None:
    assert decide(client, customer_id=None)["degraded"] == ["anonymous"]
    unknown = decide(client, customer_id="nobody-here")
    assert unknown["degraded"] == ["unknown_customer"] and len(unknown["actions"]) == 3


def test_explain_terms_multiply_to_priority(client: TestClient) -> None:
    for a in decide(client, explain=True, limit=4)["actions"]:
        e = a["explanation"]
        assert e["priority"] == pytest.approx(
            e["propensity"] * e["value"] * e["context_weight"] * e["lever"]
        )
        assert e["online_correction"] == pytest.approx(0.0, abs=1e-9)
        assert e["propensity"] == pytest.approx(e["offline_propensity"])
        assert a["score"] == pytest.approx(e["priority"])


def test_candidates_restrict_and_basket_excludes(client: TestClient) -> None:
    full = decide(client, limit=6)["actions"]
    ids = [a["action_id"] for a in full]
    restricted = decide(client, candidates=ids[3:], limit=3)["actions"]
    assert {a["action_id"] for a in restricted} <= set(ids[3:])
    without_top = decide(client, limit=6, context={"basket": [ids[0]]})["actions"]
    assert ids[0] not in {a["action_id"] for a in without_top}


@pytest.mark.parametrize(("body", "needle"), [
    ({"channel": "fax"}, "'web', 'app', 'pos', 'call_center' or 'email'"),
    ({"channel": "web", "limit": 0}, "limit"),
    ({"channel": "web", "limit": 21}, "limit"),
    ({"channel": "web", "context": {"colour": "red"}}, "colour"),
    ({"channel": "web", "candidates": ["no-such-action"]}, "no-such-action"),
    ({"channel": "web", "customer_id": "x" * 65}, "customer_id"),
])
def test_bad_requests_are_422_with_a_message(client: TestClient, body: dict, needle: str) -> None:
    r = client.post("/v1/decisions", json=body)
    assert r.status_code == 422
    assert needle in r.json()["message"]


def test_malformed_json_is_422(client: TestClient) -> None:
    r = client.post("/v1/decisions", content=b"{not json", headers={"content-type": "application/json"})
    assert r.status_code == 422


def test_feedback_single_batch_and_errors(client: TestClient) -> None:
    d = decide(client)
    shown = d["actions"][0]["action_id"]
    ok = client.post("/v1/feedback", json={"decision_id": d["decision_id"], "action_id": shown,
                                           "outcome": "click"})
    assert ok.status_code == 202 and ok.json() == {"accepted": 1, "duplicates": 0, "rejected": []}

    unknown = client.post("/v1/feedback", json={"decision_id": "0" * 32, "action_id": shown,
                                                "outcome": "accept"})
    assert unknown.status_code == 404 and unknown.json()["error"] == "unknown_decision"

    not_shown = next(a for a in decide(client, limit=10)["actions"][3:])["action_id"]
    wrong = client.post("/v1/feedback", json={"decision_id": d["decision_id"],
                                              "action_id": not_shown, "outcome": "accept"})
    assert wrong.status_code == 422 and wrong.json()["error"] == "action_not_in_decision"

    batch = client.post("/v1/feedback", json={"events": [
        {"decision_id": d["decision_id"], "action_id": shown, "outcome": "impression"},
        {"decision_id": "f" * 32, "action_id": shown, "outcome": "accept"},
    ]})
    assert batch.status_code == 202
    body = batch.json()
    assert body["accepted"] == 1
    assert [(r["index"], r["reason"]) for r in body["rejected"]] == [(1, "unknown_decision")]

    bad = client.post("/v1/feedback", json={"decision_id": d["decision_id"], "action_id": shown,
                                            "outcome": "love"})
    assert bad.status_code == 422


def test_a_resent_event_is_applied_once(client: TestClient) -> None:
    """Five sends of one accept (alone and in one batch) are accepted and applied once: the
    stream, the counters and the learner see one event."""
    runtime = client.app.state.runtime  # type: ignore[attr-defined]
    d = decide(client)
    event = {"decision_id": d["decision_id"], "action_id": d["actions"][0]["action_id"],
             "outcome": "accept", "value": 5.0}
    before = client.portal.call(runtime.state.feedback_length)  # type: ignore[union-attr]
    answers = [client.post("/v1/feedback", json=event).json() for _ in range(5)]
    assert [a["accepted"] for a in answers] == [1] * 5
    assert [a["duplicates"] for a in answers] == [0, 1, 1, 1, 1]
    batch = client.post("/v1/feedback", json={"events": [event] * 5}).json()
    assert batch["accepted"] == 5 and batch["duplicates"] == 5
    mine = {**event, "event_id": "order-1:accept"}  # the caller's id: a new event, once
    assert client.post("/v1/feedback", json={"events": [mine, mine]}).json()["duplicates"] == 1
    assert client.portal.call(runtime.state.feedback_length) == before + 2  # type: ignore[union-attr]
    metrics = client.get("/metrics").text
    assert "nextbest_feedback_duplicates_total 10.0" in metrics


def _rank_of(client: TestClient, action_id: str, **body: object) -> int:
    actions = decide(client, limit=20, **body)["actions"]
    ids = [a["action_id"] for a in actions]
    return ids.index(action_id) + 1 if action_id in ids else 99


def test_positive_feedback_raises_the_action_in_that_context(client: TestClient) -> None:
    """Through the HTTP API alone: accepts on a low-ranked action move it up."""
    context = {"channel": "app", "placement": "product", "context": {"journey_stage": "consideration"}}
    ranked = [a["action_id"] for a in decide(client, limit=20, **context)["actions"]]
    target = ranked[len(ranked) // 2]
    before = _rank_of(client, target, **context)
    for _ in range(40):
        d = decide(client, candidates=[target], limit=1, **context)
        assert d["actions"][0]["action_id"] == target
        for outcome in ("impression", "accept"):
            r = client.post("/v1/feedback", json={"decision_id": d["decision_id"],
                                                  "action_id": target, "outcome": outcome})
            assert r.status_code == 202
    deadline = time.monotonic() + 10
    after = before
    while time.monotonic() < deadline:
        after = _rank_of(client, target, **context)
        if after < before:
            break
        time.sleep(0.05)
    assert after < before, f"rank stayed {before} -> {after}"
    explained = decide(client, candidates=[target], limit=1, explain=True, **context)
    assert explained["actions"][0]["explanation"]["online_correction"] > 0


def _send(client: TestClient, decision: dict, action_id: str, outcome: str) -> None:
    r = client.post("/v1/feedback", json={"decision_id": decision["decision_id"],
                                          "action_id": action_id, "outcome": outcome})
    assert r.status_code == 202, r.text


def test_dismissed_at_the_till_is_not_pushed_on_the_web(
    client: TestClient, backend_settings: Settings
) -> None:
    """The contact ledger follows the customer across channels, on both backends."""
    cart = {"channel": "web", "placement": "cart"}
    catalog = load_catalog(backend_settings.catalog_file, shipped_world("retail"))
    both = catalog.allowed("web", "cart") & catalog.allowed("pos", "checkout")
    assert both.any(), "no action is allowed on both pos and web in the demo catalog"
    target = catalog.ids[int(np.flatnonzero(both)[0])]
    assert target in [a["action_id"] for a in decide(client, candidates=[target], **cart)["actions"]]
    at_till = decide(client, channel="pos", placement="checkout", candidates=[target], limit=1)
    _send(client, at_till, target, "impression")
    _send(client, at_till, target, "dismiss")

    deadline = time.monotonic() + 10
    while decide(client, candidates=[target], limit=1, **cart)["actions"]:
        assert time.monotonic() < deadline, "the dismissed action is still proposed on the web"
        time.sleep(0.05)
    ids = [a["action_id"] for a in decide(client, limit=20, **cart)["actions"]]
    assert ids and target not in ids, "other actions are still proposed, the dismissed one not"
    # Asked for the dismissed action alone: fewer actions, not an error.
    only = decide(client, candidates=[target], limit=1, **cart)
    assert only["actions"] == [] and "no_eligible_actions" in only["degraded"]
    other = decide(client, customer_id="c00002", candidates=[target], limit=1, **cart)
    assert [a["action_id"] for a in other["actions"]] == [target]


def _learned(client: TestClient) -> float:
    """Feedback events the learner has learned and published to the decision path."""
    return _metric(client, "nextbest_learner_updates_total")


def _metric(client: TestClient, name: str) -> float:
    found = re.search(rf"^{name} ([0-9.e+]+)$", client.get("/metrics").text, re.MULTILINE)
    assert found is not None, f"{name} is not exported"
    return float(found[1])


def test_repeated_impressions_lower_the_action_for_that_customer(client: TestClient) -> None:
    """Learned fatigue: shown again and again without taking it, the action's online
    correction for this customer falls below that of a customer who never saw it."""
    context = {"channel": "web", "placement": "product", "context": {"journey_stage": "consideration"}}
    target = decide(client, limit=1, **context)["actions"][0]["action_id"]
    shown = 8
    learned_before = _learned(client)
    for _ in range(shown):
        d = decide(client, candidates=[target], limit=1, **context)
        _send(client, d, target, "impression")

    def explained(customer: str) -> dict:
        d = decide(client, customer_id=customer, candidates=[target], limit=1, explain=True,
                   **context)
        return d["actions"][0]["explanation"]

    deadline = time.monotonic() + 10
    # every impression learned and published (not just some: the comparison depends on it)
    while _learned(client) < learned_before + shown:
        assert time.monotonic() < deadline, "the learner did not learn the impressions"
        time.sleep(0.05)
    tired = explained(KNOWN)
    assert tired["exposures"] == shown
    fresh = explained("c00002")
    assert fresh["exposures"] == 0
    assert tired["online_correction"] < fresh["online_correction"] - 0.1


def test_health_ready_and_docs(client: TestClient) -> None:
    assert client.get("/healthz").json() == {"status": "ok"}
    ready = client.get("/readyz")
    assert ready.status_code == 200 and ready.json()["status"] == "ready"
    assert ready.json()["state_backend"] == "up" and ready.json()["online_store"] == "ok"
    assert ready.json()["degraded"] == []
    assert client.get("/docs").status_code == 200
    spec = client.get("/openapi.json").json()
    assert "/v1/decisions" in spec["paths"]
    assert spec["info"]["version"] == service.__version__


def test_api_keys_are_enforced(demo: DemoDirs) -> None:
    settings = make_settings(demo, api_keys="k1,k2")
    with TestClient(create_app(settings)) as c:
        body = {"channel": "web"}
        assert c.post("/v1/decisions", json=body).status_code == 401
        assert c.post("/v1/decisions", json=body, headers={"X-API-Key": "nope"}).status_code == 401
        assert c.post("/v1/decisions", json=body, headers={"X-API-Key": "k2"}).status_code == 200
        assert c.get("/healthz").status_code == 200


def test_the_exploration_window_setting_reaches_the_decisions(demo: DemoDirs) -> None:
    """epsilon 1: every slot explores; a window of 2 keeps each pick among the best two."""
    with TestClient(create_app(make_settings(demo))) as c:
        best_two = [a["action_id"] for a in decide(c, limit=2)["actions"]]
    shown = []
    with TestClient(create_app(make_settings(demo, epsilon=1.0, explore_top=2, seed=5))) as c:
        for _ in range(30):
            top = decide(c, limit=1)["actions"][0]
            assert top["probability"] == pytest.approx(0.5)  # eps / 2, with eps = 1
            shown.append(top["action_id"])
    assert set(shown) == set(best_two)


def _stream_event(customer: str, action: str, outcome: str, channel: str = "pos",
                  placement: str = "checkout") -> dict[str, object]:
    """A feedback stream entry as `/v1/feedback` writes it (a self-contained example)."""
    now = time.time()
    return {"decision_id": f"d-{customer}-{action}", "action_id": action, "outcome": outcome,
            "value": 0.0, "ts": now, "accepted_at": now, "customer_id": customer,
            "channel": channel, "placement": placement, "journey_stage": "consideration",
            "segment": "regular", "rank": 1, "probability": 1.0, "offline_logit": 0.0,
            "exposures": 0}


def _append_to_stream(url: str, events: list[dict[str, object]], cluster: bool = False) -> None:
    """Events in the feedback stream as other replicas' `/v1/feedback` put them there."""
    import orjson

    r = redis_client(url, cluster)
    pipe = r.pipeline(transaction=False)
    for e in events:
        pipe.xadd("nb:feedback", {"e": orjson.dumps(e)})
    pipe.execute()
    r.close()


def test_a_new_replica_knows_the_stream_before_it_turns_ready(
    demo: DemoDirs, shared_redis: tuple[str, bool]
) -> None:
    """A replica starting after a dismissal on another replica does not offer it again,
    from its first decision: it replays the feedback stream before /readyz says ready.
    The replay is history, not learner lag: the lag histogram does not see it."""
    demo_redis, cluster = shared_redis
    settings = make_settings(demo, demo_redis, redis_cluster=cluster)
    catalog = load_catalog(settings.catalog_file, shipped_world("retail"))
    both = catalog.allowed("web", "cart") & catalog.allowed("pos", "checkout")
    target = catalog.ids[int(np.flatnonzero(both)[0])]
    others = [a for a in catalog.ids if a != target]
    # Other replicas' history: 20,000 events of other customers, then the dismissal at the
    # till, last in the stream (a replica that served before replaying it would miss it).
    history = [_stream_event(f"x{i:05d}", others[i % len(others)], ("impression", "accept")[i % 2])
               for i in range(20_000)]
    history += [_stream_event(KNOWN, target, "impression"), _stream_event(KNOWN, target, "dismiss")]
    _append_to_stream(demo_redis, history, cluster)

    with TestClient(create_app(settings)) as client:
        first = decide(client, candidates=[target], limit=1, channel="web", placement="cart")
        assert first["actions"] == [], "a new replica offered what was dismissed at the till"
        assert "no_eligible_actions" in first["degraded"]
        # every replayed example learned (impressions, accepts and dismissals all train)
        assert _learned(client) == len(history)
        assert _metric(client, "nextbest_learner_lag_seconds_count") == 0.0


def test_a_new_replica_starts_from_the_snapshot_and_replays_only_the_rest(
    demo: DemoDirs, shared_redis: tuple[str, bool]
) -> None:
    """One replica writes a snapshot of its learner and ledger; one started later
    restores it and replays only the events after it, and knows both dismissals."""
    demo_redis, cluster = shared_redis
    settings = make_settings(demo, demo_redis, snapshot_seconds=0.2, redis_cluster=cluster)
    catalog = load_catalog(settings.catalog_file, shipped_world("retail"))
    on_web = np.flatnonzero(catalog.allowed("web", "cart"))
    early, late = catalog.ids[int(on_web[0])], catalog.ids[int(on_web[1])]
    before = [_stream_event(f"x{i:05d}", catalog.ids[i % len(catalog.ids)], "impression")
              for i in range(2_000)] + [_stream_event(KNOWN, early, "dismiss")]
    _append_to_stream(demo_redis, before, cluster)
    r = redis_client(demo_redis, cluster)
    with TestClient(create_app(settings)) as first:
        assert _metric(first, "nextbest_replayed_events") == len(before)
        deadline = time.monotonic() + 10
        while _metric(first, "nextbest_snapshots_written_total") < 1:
            assert time.monotonic() < deadline, "no snapshot written"
            time.sleep(0.05)
        snapshot_updates = int(first.get("/readyz").json()["models"]["online"].split(":")[1])
    assert r.exists("nb:snapshot")
    after = [_stream_event(f"y{i:05d}", catalog.ids[i % len(catalog.ids)], "accept")
             for i in range(30)] + [_stream_event(KNOWN, late, "dismiss")]
    _append_to_stream(demo_redis, after, cluster)
    r.close()

    with TestClient(create_app(settings)) as second:
        assert _metric(second, "nextbest_replayed_events") == len(after)
        offered = decide(second, candidates=[early, late], limit=2, channel="web",
                         placement="cart")
        assert offered["actions"] == [], "a dismissal was lost between snapshot and stream"
        online = second.get("/readyz").json()["models"]["online"]
        assert online == f"river-logreg:{snapshot_updates + len(after)}"
        assert snapshot_updates == len(before)


def test_a_snapshot_older_than_the_stream_is_used_with_a_warning(
    demo: DemoDirs, demo_redis: str, caplog: pytest.LogCaptureFixture
) -> None:
    """Events trimmed from the stream after the snapshot are lost to a new replica: it
    says so, and starts from what is left."""
    import logging

    import redis

    clear_service_state(demo_redis)
    settings = make_settings(demo, demo_redis, snapshot_seconds=0.2)
    _append_to_stream(demo_redis, [_stream_event(f"x{i}", "p001", "impression")
                                   for i in range(200)])
    with TestClient(create_app(settings)) as first:
        deadline = time.monotonic() + 10
        while _metric(first, "nextbest_snapshots_written_total") < 1:
            assert time.monotonic() < deadline, "no snapshot written"
            time.sleep(0.05)
    _append_to_stream(demo_redis, [_stream_event(f"y{i}", "p002", "impression")
                                   for i in range(100)])
    r = redis.Redis.from_url(demo_redis)
    r.xtrim("nb:feedback", maxlen=10, approximate=False)
    r.close()
    with caplog.at_level(logging.WARNING, logger="service.runtime"):
        with TestClient(create_app(settings)) as second:
            assert _metric(second, "nextbest_replayed_events") == 10
    assert "older than the feedback stream's oldest event" in caplog.text
