"""Simulated customer dynamics: fatigue, drift, stages, common random numbers."""

from __future__ import annotations

from datetime import UTC, datetime

import numpy as np

from training.environment import CustomerState, draw_scenario
from training.world import World


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
