"""The telco world's ground truth: sane probabilities, its levers, and choosing well pays."""

from __future__ import annotations

from datetime import UTC, datetime

import numpy as np
import pytest

from training.environment import CustomerState, draw_scenario
from training.telco_world import CALL_REASONS, FAMILIES, KINDS, SLOTS, STAGES, TelcoWorld
from training.worlds import build_truth, truth_from_json


@pytest.fixture(scope="module")
def world() -> TelcoWorld:
    return TelcoWorld.build(seed=5, n_customers=2000, now=datetime(2026, 1, 1, tzinfo=UTC))


def _rows(world: TelcoWorld, kind: str, family: str | None = None) -> list[int]:
    return [i for i, a in enumerate(world.actions)
            if a.kind == kind and (family is None or a.category == family)]


def test_the_catalog_has_the_operator_s_kinds_and_families(world: TelcoWorld) -> None:
    kinds = [a.kind for a in world.actions]
    assert {k: kinds.count(k) for k in KINDS} == {
        "plan": 8, "addon": 14, "retention": 8, "device": 12, "service": 6}
    assert {a.category for a in world.actions} == set(FAMILIES) and len(FAMILIES) >= 8
    assert all(a.value > 0 for a in world.actions)
    for channel, placements in SLOTS.items():
        for placement in placements:
            assert len(world.eligible(channel, placement)) >= 4, (channel, placement)


def test_an_oracle_earns_at_least_twice_what_random_picks_earn(world: TelcoWorld) -> None:
    rng = np.random.default_rng(1)
    customers = rng.integers(0, len(world.customer_ids), 4000)
    requests = world.draw_requests(rng, customers)
    stage = world.stages[customers, -1]
    oracle = random = 0.0
    rates = []
    for channel, placements in SLOTS.items():
        for placement in placements:
            rows = np.flatnonzero((requests.channels == channel) & (requests.placements == placement))
            eligible = world.eligible(channel, placement)
            p = np.stack([world.response_probability(customers[rows], np.full(len(rows), a),
                                                     requests, rows, stage[rows])
                          for a in eligible], axis=1)
            assert np.all((p >= 0) & (p <= 1))
            rates.append(p.mean())
            expected = p * world.action_value[eligible]
            oracle += expected.max(axis=1).sum()
            random += expected.mean(axis=1).sum()
    assert 0.01 <= np.mean(rates) <= 0.15
    assert oracle >= 2.0 * random, oracle / random


def test_a_call_to_cancel_makes_retention_offers_pay(world: TelcoWorld) -> None:
    n = len(world.customer_ids)
    c, offer = np.arange(n), np.full(n, _rows(world, "retention")[0])

    def p(reason: str) -> np.ndarray:
        return world.accept_probability(c, offer, "call_center", "agent", "active",
                                        np.full(n, reason, dtype=object))

    assert np.all(p("cancel") > p("technical"))
    assert "cancel" in CALL_REASONS
    # ... and more so for the subscribers about to leave
    at_risk = world.accept_probability(c, offer, "call_center", "agent", "at_risk")
    assert np.all(at_risk > world.accept_probability(c, offer, "call_center", "agent", "active"))
    likely = world.churn > np.quantile(world.churn, 0.8)
    unlikely = world.churn < np.quantile(world.churn, 0.2)
    assert p("cancel")[likely].mean() > 2 * p("cancel")[unlikely].mean()


def test_old_handsets_near_contract_end_take_new_phones(world: TelcoWorld) -> None:
    n = len(world.customer_ids)
    phone = np.full(n, _rows(world, "device", "handsets")[0])
    p = world.accept_probability(np.arange(n), phone, "retail_store", "shop", "active")
    due = (world.handset_age > 30) & (world.contract_days < 90)
    fresh = (world.handset_age < 10) & (world.contract_days > 300)
    assert due.sum() > 10 and fresh.sum() > 10
    assert p[due].mean() > 3 * p[fresh].mean()


def test_heavy_users_take_data_add_ons(world: TelcoWorld) -> None:
    n = len(world.customer_ids)
    boost = np.full(n, _rows(world, "addon", "data")[0])
    p = world.accept_probability(np.arange(n), boost, "app", "account", "active")
    ratio = world.data_need / world.allowance
    assert p[ratio > 2].mean() > 2 * p[ratio < 0.3].mean()


def test_call_reasons_follow_the_subscriber_state(world: TelcoWorld) -> None:
    rng = np.random.default_rng(0)
    customers = rng.integers(0, len(world.customer_ids), 20_000)
    requests = world.draw_requests(rng, customers)
    reasons = requests.fields["call_reason"]
    calls = requests.channels == "call_center"
    assert calls.any() and all(r is None for r in reasons[~calls])
    assert set(reasons[calls]) <= set(CALL_REASONS)
    cancels = calls & (reasons == "cancel")
    assert world.churn[customers[cancels]].mean() > world.churn[customers[calls]].mean()
    assert not requests.baskets.any()  # no basket in this world


def test_observed_features_are_noisy_views_of_the_latent_state(world: TelcoWorld) -> None:
    obs = world.observe_customers(np.random.default_rng(0), snapshot=-1)
    affinity = np.stack([obs[f"family_affinity_{f}"] for f in FAMILIES], axis=1)
    assert np.allclose(affinity.sum(axis=1), 1.0, atol=1e-5)
    assert not np.allclose(affinity, world.interest, atol=0.05)  # noisy ...
    assert (affinity.argmax(1) == world.interest.argmax(1)).mean() > 0.4  # ... but informative
    assert np.corrcoef(np.log(obs["data_usage_gb"]), np.log(world.data_need))[0, 1] > 0.8
    assert np.corrcoef(obs["support_calls_90d"], world.dissatisfaction)[0, 1] > 0.3
    stage = np.array([STAGES.index(s) for s in obs["journey_stage"]])
    assert 0.7 < (stage == world.stages[:, -1]).mean() < 0.95


def test_a_retention_offer_taken_makes_an_at_risk_subscriber_active_again() -> None:
    world = TelcoWorld.build(3, 200, datetime(2026, 1, 1, tzinfo=UTC))
    scenario = draw_scenario(world, 50, 1, 0.5)
    state = CustomerState.start(world)
    c = int(scenario.customers[0])
    scenario.response_u[0] = 0.0  # always accepted
    state.stage[c] = STAGES.index("at_risk")
    addon = _rows(world, "addon")[0]
    state.respond(scenario, 0, addon)
    assert state.stage_name(c) == "at_risk"  # an add-on does not keep them
    state.respond(scenario, 0, _rows(world, "retention")[0])
    assert state.stage_name(c) == "active"
    state.stage[c] = STAGES.index("upgrade_window")
    state.respond(scenario, 0, _rows(world, "device")[0])
    assert state.stage_name(c) == "active"


def test_the_world_is_rebuilt_from_its_json(world: TelcoWorld) -> None:
    saved = world.to_json()
    assert saved["world"] == "telco"
    again = truth_from_json(saved)
    assert isinstance(again, TelcoWorld)
    assert again.customer_ids == world.customer_ids and again.actions == world.actions
    for name in ("segment", "interest", "churn", "contract_days", "stages", "quality"):
        assert np.array_equal(getattr(again, name), getattr(world, name)), name
    assert build_truth("retail", 5, 10, world.now).name == "retail"
    with pytest.raises(ValueError, match="no example world 'bank'"):
        build_truth("bank", 5, 10, world.now)
