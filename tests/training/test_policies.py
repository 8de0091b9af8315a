"""Baseline policies: the oracle's argmax (and its observed-customer view), Thompson's
updates, random's uniformity."""

from __future__ import annotations

import json
from dataclasses import replace
from datetime import UTC, datetime

import numpy as np
import pytest

from tests.demo_fixtures import DemoDirs
from training.environment import CustomerState, Scenario, draw_scenario
from training.policies import ContextFreeThompson, Oracle, UniformRandom, observed_world
from training.world import World


@pytest.fixture(scope="module")
def world() -> World:
    return World.build(3, 200, datetime(2026, 1, 1, tzinfo=UTC))


@pytest.fixture(scope="module")
def scenario(world: World) -> Scenario:
    return draw_scenario(world, 300, seed=5, drift_at=0.5)


def test_oracle_picks_the_argmax_of_true_p_times_value(world: World, scenario: Scenario) -> None:
    state = CustomerState.start(world)
    oracle = Oracle(world.action_value)
    for step in range(50):
        rows = scenario.candidates(step)
        expected = state.accept_probability(scenario, step, rows) * world.action_value[rows]
        assert oracle.choose(scenario, step, state) == rows[int(np.argmax(expected))]


def test_random_is_uniform_over_the_eligible_actions(world: World, scenario: Scenario) -> None:
    state = CustomerState.start(world)
    step = 0
    rows = scenario.candidates(step)
    picks = []
    for u in np.linspace(0.0, 0.999999, 10 * len(rows)):
        scenario.choice_u[step] = u  # the scenario's arrays are plain numpy: poke one uniform
        picks.append(UniformRandom().choose(scenario, step, state))
    values, counts = np.unique(picks, return_counts=True)
    assert set(values.tolist()) == set(rows.tolist())
    assert counts.min() == counts.max() == 10


def test_thompson_counts_successes_and_failures(world: World) -> None:
    ts = ContextFreeThompson(world.action_value, seed=1)
    ts.update(3, True)
    ts.update(3, False)
    ts.update(3, False)
    assert ts.alpha[3] == 2.0 and ts.beta[3] == 3.0
    assert ts.alpha.sum() == len(world.action_value) + 1


def test_thompson_prefers_an_action_that_always_pays(world: World, scenario: Scenario) -> None:
    state = CustomerState.start(world)
    ts = ContextFreeThompson(np.ones(len(world.action_value)), seed=1)
    rows = scenario.candidates(0)
    good = int(rows[0])
    for a in rows.tolist():
        for _ in range(50):
            ts.update(a, a == good)
    assert all(ts.choose(scenario, 0, state) == good for _ in range(20))


def test_observed_world_swaps_only_the_customer_traits(demo: DemoDirs) -> None:
    truth = World.from_json(json.loads((demo.data_dir / "demo" / "world.json").read_text()))
    seen = observed_world(truth, demo.data_dir)
    np.testing.assert_allclose(seen.preference.sum(axis=1), 1.0)
    np.testing.assert_allclose(seen.habits.sum(axis=1), 1.0)
    assert not np.allclose(seen.preference, truth.preference)  # noisy observations...
    assert np.corrcoef(seen.preference.ravel(), truth.preference.ravel())[0, 1] > 0.5  # ...of it
    assert not np.allclose(seen.price_sensitivity, truth.price_sensitivity)
    np.testing.assert_array_equal(seen.quality, truth.quality)
    np.testing.assert_array_equal(seen.segment, truth.segment)


def test_oracle_with_a_view_ranks_by_the_view_under_the_state_s_dynamics(demo: DemoDirs) -> None:
    truth = World.from_json(json.loads((demo.data_dir / "demo" / "world.json").read_text()))
    view = observed_world(truth, demo.data_dir)
    scenario = draw_scenario(truth, 200, seed=2, drift_at=0.5)
    state = CustomerState.start(truth)
    oracle = Oracle(truth.action_value, view=view, name="oracle_observed")
    differs = 0
    for step in range(200):
        rows = scenario.candidates(step)
        seen = replace(state, world=view).accept_probability(scenario, step, rows)
        choice = oracle.choose(scenario, step, state)
        assert choice == rows[int(np.argmax(seen * truth.action_value[rows]))]
        true_p = state.accept_probability(scenario, step, rows)
        differs += choice != rows[int(np.argmax(true_p * truth.action_value[rows]))]
        state.respond(scenario, step, choice)  # exposures and stages move in the true state
    assert sum(state.exposures.values()) == 200
    assert 0 < differs < 200  # the view is informative, not the truth
