"""The control group: sticky membership, the baseline policies, the flag in response and log."""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from service.app import create_app
from service.control import CONTROL, TREATMENT, ControlGroup
from service.settings import Settings
from tests.demo_fixtures import DemoDirs, clear_service_state
from tests.service.conftest import make_settings
from tests.service.test_rules_api import rules_catalog

CUSTOMERS = [f"c{i:05d}" for i in range(1, 121)]


def test_membership_is_sticky_salted_and_has_the_share() -> None:
    control = ControlGroup(0.3)
    ids = [f"customer-{i}" for i in range(20_000)]
    groups = [control.group_of(c, "any-decision") for c in ids]
    share = groups.count(CONTROL) / len(ids)
    assert abs(share - 0.3) < 0.015  # binomial sd is 0.0032: 4.6 sd
    # the same customer, any decision: the same group
    assert all(control.group_of(c, f"d{i}") == g for i, (c, g) in enumerate(zip(ids[:500], groups, strict=False)))
    # another salt draws another group, of the same share
    other = [ControlGroup(0.3, salt="another").group_of(c, "x") for c in ids]
    assert abs(other.count(CONTROL) / len(ids) - 0.3) < 0.015
    assert sum(a != b for a, b in zip(groups, other, strict=True)) > 0.3 * len(ids)
    # a bigger share keeps everyone who was in the smaller one
    bigger = ControlGroup(0.5)
    assert all(bigger.group_of(c, "x") == CONTROL for c, g in zip(ids, groups, strict=True) if g == CONTROL)


def test_anonymous_decisions_are_drawn_by_their_decision_id() -> None:
    control = ControlGroup(0.4)
    groups = [control.group_of(None, f"{i:032x}") for i in range(10_000)]
    assert abs(groups.count(CONTROL) / len(groups) - 0.4) < 0.02
    assert control.group_of(None, "ab" * 16) == control.group_of(None, "ab" * 16)


@pytest.fixture(params=["memory", "redis"])
def control_settings(request: pytest.FixtureRequest, demo: DemoDirs) -> Settings:
    url = None
    if request.param == "redis":
        url = request.getfixturevalue("demo_redis")
        clear_service_state(url)
    return make_settings(demo, url, control_share=0.5, epsilon=0.05)


@pytest.fixture
def control_client(control_settings: Settings) -> Iterator[TestClient]:
    with TestClient(create_app(control_settings)) as c:
        yield c


def decide(client: TestClient, customer: str | None, **body: object) -> dict:
    r = client.post("/v1/decisions", json={"customer_id": customer, "channel": "web",
                                           "placement": "home", **body})
    assert r.status_code == 200, r.text
    return r.json()


def test_random_control_draws_uniformly_among_the_eligible(control_client: TestClient) -> None:
    control = ControlGroup(0.5)
    seen_groups = set()
    first_picks: dict[str, int] = {}
    catalog = control_client.app.state.runtime.engine.catalog  # type: ignore[attr-defined]
    for customer in CUSTOMERS:
        d = decide(control_client, customer, limit=3, explain=True)
        assert d["group"] == control.group_of(customer, d["decision_id"])
        seen_groups.add(d["group"])
        if d["group"] != CONTROL:
            continue
        removed = {r["action_id"] for r in d["removed"]}
        shown = [a["action_id"] for a in d["actions"]]
        assert not removed & set(shown)  # what the rules removed is never shown to the control
        # the catalog's eligible count for web/home, minus what the rules removed
        eligible = len(catalog.candidates("web", "home")) - len(
            [r for r in d["removed"] if r["rule"] not in ("channel", "placement")])
        assert [a["probability"] for a in d["actions"]] == pytest.approx(
            [1 / eligible, 1 / (eligible - 1), 1 / (eligible - 2)])
        assert not any(a["explored"] for a in d["actions"])
        first_picks[shown[0]] = first_picks.get(shown[0], 0) + 1
    assert seen_groups == {CONTROL, TREATMENT}
    # random first picks spread over many actions (the treatment would repeat its best few)
    assert len(first_picks) >= min(10, sum(first_picks.values()) // 2)


def test_a_customer_stays_in_their_group(control_client: TestClient) -> None:
    for customer in CUSTOMERS[:10]:
        groups = {decide(control_client, customer)["group"] for _ in range(4)}
        groups |= {decide(control_client, customer, channel="app")["group"]}
        assert len(groups) == 1


def test_the_group_is_logged_and_carried_by_feedback(control_client: TestClient) -> None:
    runtime = control_client.app.state.runtime  # type: ignore[attr-defined]
    for customer in CUSTOMERS[:20]:
        d = decide(control_client, customer)
        r = control_client.post("/v1/feedback", json={
            "decision_id": d["decision_id"], "action_id": d["actions"][0]["action_id"],
            "outcome": "impression"})
        assert r.status_code == 202, r.text
        record = control_client.portal.call(runtime.decision_log.get_many, [d["decision_id"]])[0]  # type: ignore[union-attr]
        assert record["group"] == d["group"]
    events = control_client.portal.call(runtime.state.read_feedback, "0", 1000, 10)  # type: ignore[union-attr]
    groups = {e["decision_id"]: e["group"] for _, e in events}
    assert len(groups) == 20 and set(groups.values()) == {CONTROL, TREATMENT}


def test_offline_control_ranks_by_the_offline_model_alone(demo: DemoDirs) -> None:
    settings = make_settings(demo, control_share=0.999, control_policy="offline", epsilon=0.5)
    with TestClient(create_app(settings)) as client:
        for customer in CUSTOMERS[:15]:
            d = decide(client, customer, limit=4, explain=True)
            assert d["group"] == CONTROL
            assert [a["probability"] for a in d["actions"]] == [1.0] * 4  # no exploration
            terms = [a["explanation"] for a in d["actions"]]
            offline = [t["offline_propensity"] * t["value"] * t["context_weight"] * t["lever"] for t in terms]
            assert [a["score"] for a in d["actions"]] == pytest.approx(offline)
            assert offline == sorted(offline, reverse=True)


def test_no_control_group_by_default(client: TestClient) -> None:
    r = client.post("/v1/decisions", json={"customer_id": "c00001", "channel": "web", "placement": "home"})
    assert r.json()["group"] == TREATMENT


def test_control_share_is_validated(demo: DemoDirs) -> None:
    with pytest.raises(ValueError, match="control_share"):
        make_settings(demo, control_share=1.0)
    with pytest.raises(ValueError, match="control_policy"):
        make_settings(demo, control_policy="oracle")


def test_rules_caps_and_budgets_hold_for_the_control_group(demo: DemoDirs, tmp_path: Path) -> None:
    catalog = rules_catalog(demo, tmp_path / "catalog.json")
    settings = make_settings(demo, control_share=0.999, catalog_path=catalog)
    with TestClient(create_app(settings)) as client:
        shown: Counter[str] = Counter()
        refused = 0
        for i in range(60):
            d = decide(client, CUSTOMERS[i % 3], limit=3, explain=True)
            assert d["group"] == CONTROL
            ids = [a["action_id"] for a in d["actions"]]
            shown.update(ids)
            assert "p001" not in ids and "p007" not in ids  # eligibility rules
            assert sum(a in ("o005", "o006", "o007") for a in ids) <= 1  # one discount
            refused += {r["action_id"]: r["rule"] for r in d["removed"]}.get("p003") == "budget"
        assert shown["p003"] == 2  # its total impression budget, shown by a random baseline
        assert refused >= 1  # the baseline picked it again after, and the budget refused it
