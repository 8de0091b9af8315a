"""Simulated customer dynamics: fatigue, drift, stages, common random numbers."""

from __future__ import annotations

from datetime import UTC, datetime

import numpy as np

from training.environment import MAX_DISMISS_PROBABILITY, CustomerState, draw_scenario
from training.world import DISMISS_RATES, World


def _world() -> World:
    return World.build(3, 200, datetime(2026, 1, 1, tzinfo=UTC))


def test_the_same_seed_draws_the_same_scenario() -> None:
    world = _world()
    a, b = draw_scenario(world, 200, 9, 0.5), draw_scenario(world, 200, 9, 0.5)
    assert np.array_equal(a.customers, b.customers)
    assert np.array_equal(a.response_u, b.response_u)
    assert np.array_equal(a.baskets, b.baskets)
    assert a.drift_step == 100


def test_fatigue_lowers_acceptance() -> None:
    world = _world()
    scenario = draw_scenario(world, 50, 1, 0.5)
    state = CustomerState.start(world)
    action = int(scenario.candidates(0)[0])
    before = state.accept_probability(scenario, 0, np.array([action]))[0]
    state.respond(scenario, 0, action)
    after = state.accept_probability(scenario, 0, np.array([action]))[0]
    assert after < before


def test_drift_lowers_only_the_drifting_category() -> None:
    world = _world()
    scenario = draw_scenario(world, 50, 1, 0.5)
    state = CustomerState.start(world)
    rows = scenario.candidates(0)
    before = state.accept_probability(scenario, 0, rows)
    cats = world.action_arrays()["category"][rows]
    state.drift_category = int(cats[0])
    after = state.accept_probability(scenario, 0, rows)
    hit = cats == cats[0]
    assert np.all(after[hit] < before[hit])
    assert np.allclose(after[~hit], before[~hit])


def test_acceptance_advances_the_journey_stage() -> None:
    world = _world()
    scenario = draw_scenario(world, 50, 1, 0.5)
    state = CustomerState.start(world)
    c = int(scenario.customers[0])
    state.stage[c] = 0  # awareness
    scenario.response_u[0] = 0.0  # always accepted
    state.respond(scenario, 0, int(scenario.candidates(0)[0]))
    assert state.stage_name(c) == "consideration"


def test_dismissals_follow_the_channel_and_grow_with_exposures() -> None:
    world = _world()
    scenario = draw_scenario(world, 400, 1, 0.5)
    state = CustomerState.start(world)
    step = next(s for s in range(len(scenario)) if scenario.channels[s] == "pos")
    action = int(scenario.candidates(step)[0])
    first = state.dismiss_probability(scenario, step, action)
    assert first == DISMISS_RATES["pos"]
    for _ in range(2):
        state.respond(scenario, step, action)
    assert state.dismiss_probability(scenario, step, action) == 3 * first
    for _ in range(10):
        state.respond(scenario, step, action)
    assert state.dismiss_probability(scenario, step, action) == MAX_DISMISS_PROBABILITY
    web = next(s for s in range(len(scenario)) if scenario.channels[s] == "web")
    assert state.dismiss_probability(scenario, web, int(scenario.candidates(web)[0])) \
        == DISMISS_RATES["web"]


def test_the_dismissal_draws_leave_the_other_draws_as_they_were() -> None:
    """`dismiss_u` is drawn last: a scenario's customers and responses do not move with it."""
    world = _world()
    scenario = draw_scenario(world, 300, 4, 0.5)
    rng = np.random.default_rng([4, 101])
    rng.choice(len(world.customer_ids), size=300, p=world.activity / world.activity.sum())
    world.draw_requests(rng, scenario.customers)
    response_u, choice_u, dismiss_u = rng.random(300), rng.random(300), rng.random(300)
    assert np.array_equal(scenario.response_u, response_u)
    assert np.array_equal(scenario.choice_u, choice_u)
    assert np.array_equal(scenario.dismiss_u, dismiss_u)
