"""The demo world's ground truth: sane probabilities, and choosing well pays."""

from __future__ import annotations

from datetime import UTC, datetime

import numpy as np
import pytest

from tests.features.retail_schema import ACTION_KINDS, CATEGORIES
from training.world import SLOTS, World


@pytest.fixture(scope="module")
def world() -> World:
    return World.build(seed=5, n_customers=2000, now=datetime(2026, 1, 1, tzinfo=UTC))


def _slot_matrix(world: World, channel: str, placement: str, n: int, seed: int = 0):
    rng = np.random.default_rng(seed)
    customers = rng.integers(0, len(world.customer_ids), n)
    eligible = world.eligible(channel, placement)
    p = np.stack([
        world.accept_probability(customers, np.full(n, a), channel, placement)
        for a in eligible
    ], axis=1)
    return customers, eligible, p


def test_catalog_has_products_offers_and_services(world: World) -> None:
    kinds = [a.kind for a in world.actions]
    assert (kinds.count("product"), kinds.count("offer"), kinds.count("service")) == (42, 12, 6)
    assert {a.category for a in world.actions if a.kind == "product"} == set(CATEGORIES)
    assert all(a.value > 0 for a in world.actions)
    for channel, placements in SLOTS.items():
        for placement in placements:
            assert len(world.eligible(channel, placement)) >= 4, (channel, placement)


def test_probabilities_are_probabilities_with_plausible_rates(world: World) -> None:
    rates = []
    for channel, placements in SLOTS.items():
        for placement in placements:
            _, _, p = _slot_matrix(world, channel, placement, 500)
            assert np.all((p >= 0) & (p <= 1))
            rates.append(p.mean())
    assert 0.01 <= np.mean(rates) <= 0.15
    assert 0.005 <= min(rates) and max(rates) <= 0.2


def test_an_oracle_earns_at_least_twice_what_random_picks_earn(world: World) -> None:
    oracle = random = 0.0
    for channel, placements in SLOTS.items():
        for placement in placements:
            _, eligible, p = _slot_matrix(world, channel, placement, 1000, seed=1)
            expected_value = p * world.action_value[eligible]
            oracle += expected_value.max(axis=1).sum()
            random += expected_value.mean(axis=1).sum()
    assert oracle >= 2.0 * random, oracle / random


def test_basket_contents_matter(world: World) -> None:
    n = len(world.customer_ids)
    customers = np.arange(n)
    product = next(i for i, a in enumerate(world.actions) if a.kind == "product")
    empty = np.zeros((n, len(world.actions)), dtype=bool)
    holding = empty.copy()
    holding[:, product] = True
    base = world.accept_probability(customers, np.full(n, product), "web", "cart", basket=empty)
    in_basket = world.accept_probability(customers, np.full(n, product), "web", "cart",
                                         basket=holding)
    assert in_basket.max() < 0.01 < base.mean()
    # an electronics product in the basket lifts home & garden (complementary)
    home = next(i for i, a in enumerate(world.actions)
                if a.kind == "product" and a.category == "home_garden")
    lifted = world.accept_probability(customers, np.full(n, home), "web", "cart", basket=holding)
    alone = world.accept_probability(customers, np.full(n, home), "web", "cart", basket=empty)
    assert world.actions[product].category == "electronics"
    assert np.all(lifted > alone)


def test_churn_risk_customers_prefer_offers_and_services(world: World) -> None:
    n = len(world.customer_ids)
    customers = np.arange(n)
    kinds = np.array([ACTION_KINDS.index(a.kind) for a in world.actions])
    offer = int(np.flatnonzero(kinds == 1)[0])
    p_churn = world.accept_probability(customers, np.full(n, offer), "pos", "checkout",
                                       journey_stage="churn_risk")
    p_aware = world.accept_probability(customers, np.full(n, offer), "pos", "checkout",
                                       journey_stage="awareness")
    assert np.all(p_churn > p_aware)


def test_observed_features_are_noisy_views_of_the_latent_state(world: World) -> None:
    obs = world.observe_customers(np.random.default_rng(0), snapshot=-1)
    affinity = np.stack([obs[f"category_affinity_{c}"] for c in CATEGORIES], axis=1)
    assert np.allclose(affinity.sum(axis=1), 1.0, atol=1e-5)
    assert not np.allclose(affinity, world.preference, atol=0.05)  # noisy ...
    top_match = (affinity.argmax(1) == world.preference.argmax(1)).mean()
    assert top_match > 0.5  # ... but informative
    error = np.abs(obs["price_sensitivity"] - world.price_sensitivity)
    assert 0.02 < error.mean() < 0.2


def test_the_world_is_rebuilt_from_its_json(world: World) -> None:
    again = World.from_json(world.to_json())
    assert again.customer_ids == world.customer_ids
    assert again.actions == world.actions
    for name in ("segment", "preference", "price_sensitivity", "habits", "stages", "quality"):
        assert np.array_equal(getattr(again, name), getattr(world, name)), name
