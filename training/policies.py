"""Baseline policies the simulator runs next to nextbest, on the same draws.

Each policy picks ONE action for a step from the step's candidates and may learn from
its own outcome. They bracket nextbest from both sides:

- `Oracle`: knows the true response model (with fatigue and drift): argmax p x value;
  its fatigue-blind variant is a diagnostic (what knowing everything but the exposure
  history is worth), and so is its observed-customer variant (`observed_world`): the
  truth's form, the dynamics and the hidden action appeal, but each customer only as
  the service's features show them, i.e. what a perfect model of the service's inputs
  could earn;
- `UniformRandom`: uniform among the eligible actions (the floor);
- `OfflineOnly`: the same ONNX model and encoder the service uses, ranking by
  p x value x context weight x lever with no online learning (what nextbest would be
  without its learner and exploration);
- `ContextFreeThompson`: Beta(1, 1) per action on acceptance, priority = sampled p x
  value; learns, but knows nothing of the customer or the slot.
"""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path
from typing import Any, Protocol, TypeVar, cast

import numpy as np
import pandas as pd

from features.config import World, shipped_world, source_path
from features.encoding import ActionMatrix, Encoder
from service.catalog import Catalog, load_catalog
from service.model import OnnxScorer, resolve_model_dir
from training.environment import CustomerState, Scenario
from training.truth import Truth


class Policy(Protocol):
    name: str

    def choose(self, scenario: Scenario, step: int, state: CustomerState) -> int:
        """The action row to show at `step` (candidates are never empty)."""
        ...

    def update(self, action: int, accepted: bool) -> None:
        """Learn from the outcome of the action this policy showed."""
        ...


class Oracle:
    """Argmax of true p x value under the current truth (fatigue, drift) of its world.

    `fatigue_aware=False` is a diagnostic ceiling: the truth without the exposure
    history, i.e. the best a policy without a per-customer contact ledger could do.
    """

    def __init__(self, values: np.ndarray, fatigue_aware: bool = True,
                 view: Truth | None = None, name: str | None = None) -> None:
        """`view`: rank with this world's customer traits (dynamics stay the state's)."""
        self._values = values
        self._fatigue_aware = fatigue_aware
        self._view = view
        self.name = name or ("oracle" if fatigue_aware else "oracle_fatigue_blind")

    def choose(self, scenario: Scenario, step: int, state: CustomerState) -> int:
        rows = scenario.candidates(step)
        if self._view is not None:  # same stages, exposures and drift, other traits
            state = replace(state, world=self._view)
        p = state.accept_probability(scenario, step, rows, fatigue=self._fatigue_aware)
        return int(rows[int(np.argmax(p * self._values[rows]))])

    def update(self, action: int, accepted: bool) -> None:
        pass


class UniformRandom:
    """Uniform among the eligible actions, using the scenario's pre-drawn uniform."""

    name = "random"

    def choose(self, scenario: Scenario, step: int, state: CustomerState) -> int:
        rows = scenario.candidates(step)
        return int(rows[min(int(scenario.choice_u[step] * len(rows)), len(rows) - 1)])

    def update(self, action: int, accepted: bool) -> None:
        pass


class ContextFreeThompson:
    """Per-action Beta posterior of acceptance; priority = sampled p x value."""

    name = "thompson"

    def __init__(self, values: np.ndarray, seed: int) -> None:
        self._values = values
        self.alpha = np.ones(len(values))
        self.beta = np.ones(len(values))
        self._rng = np.random.default_rng([seed, 202])

    def choose(self, scenario: Scenario, step: int, state: CustomerState) -> int:
        rows = scenario.candidates(step)
        p = self._rng.beta(self.alpha[rows], self.beta[rows])
        return int(rows[int(np.argmax(p * self._values[rows]))])

    def update(self, action: int, accepted: bool) -> None:
        if accepted:
            self.alpha[action] += 1.0
        else:
            self.beta[action] += 1.0


class FeatureSnapshot:
    """The customer and action features the online store serves (the latest snapshot).

    Read from the source files the online store was materialized from, so the
    offline baseline sees exactly what the service reads, without importing Feast.
    """

    def __init__(self, data_dir: Path, world: World) -> None:
        customer = world.customer_entity
        self.customers = ({} if customer is None else
                          _latest(pd.read_parquet(source_path(data_dir, customer)),
                                  world.join_key(customer)))
        action = world.action_entity
        self.actions = _latest(pd.read_parquet(source_path(data_dir, action)), world.join_key(action))


def _latest(frame: pd.DataFrame, key: str) -> dict[str, dict[str, Any]]:
    frame = frame.sort_values("event_timestamp").drop_duplicates(key, keep="last")
    cols = [c for c in frame.columns if c not in (key, "event_timestamp", "created")]
    return {str(k): dict(zip(cols, row, strict=True))
            for k, row in zip(frame[key], frame[cols].itertuples(index=False), strict=True)}


TruthT = TypeVar("TruthT", bound=Truth)


def observed_world(truth: TruthT, data_dir: Path) -> TruthT:
    """`truth` with each customer's latent traits replaced by what the online store shows
    (the truth's `observed`: which traits, and how, is the world's own)."""
    return cast(TruthT, truth.observed(FeatureSnapshot(data_dir, shipped_world(truth.name)).customers))


class OfflineModel:
    """The service's offline propensity, computed in-process with the service's code."""

    def __init__(self, data_dir: Path, models_dir: Path, truth: Truth,
                 model_name: str = "nextbest-ranker", catalog: Catalog | None = None) -> None:
        world = shipped_world(truth.name)  # the example world the simulator plays
        self._truth = truth
        self.catalog = catalog or load_catalog(Path(data_dir) / "catalog.json", world)
        self.encoder = Encoder(world)
        self.scorer = OnnxScorer(resolve_model_dir(Path(models_dir), model_name, None),
                                 self.encoder.columns, self.encoder.encoding)
        snapshot = FeatureSnapshot(data_dir, world)
        customer_ids = truth.customer_ids
        self._customers = [snapshot.customers.get(c, {}) for c in customer_ids]
        self._actions: ActionMatrix = self.encoder.encode_actions(
            {a: snapshot.actions.get(a, {}) for a in self.catalog.ids})

    def propensity(self, scenario: Scenario, step: int, stage: str, rows: np.ndarray) -> np.ndarray:
        """P(accept) per action row, as the service's offline model would score it."""
        c = int(scenario.customers[step])
        channel, placement = str(scenario.channels[step]), str(scenario.placements[step])
        basket = scenario.basket_rows(step)
        ctx = self._truth.request_context(scenario.requests, step, stage, self.catalog.ids)
        _, x = self.encoder.encode_decision(self.encoder.encode_customer(self._customers[c]),
                                            channel, placement, ctx, self._actions, rows, basket)
        return self.scorer.predict(x)

    def priority(self, scenario: Scenario, step: int, stage: str, rows: np.ndarray) -> np.ndarray:
        p = self.propensity(scenario, step, stage, rows)
        channel = str(scenario.channels[step])
        cat = self.catalog
        return p * cat.value[rows] * cat.context_weight(channel)[rows] * cat.lever[rows]


class OfflineOnly:
    """The offline model's P x V x C x L ranking, greedy, never updated."""

    name = "offline"

    def __init__(self, model: OfflineModel) -> None:
        self._model = model

    def choose(self, scenario: Scenario, step: int, state: CustomerState) -> int:
        rows = scenario.candidates(step)
        stage = state.stage_name(int(scenario.customers[step]))
        return int(rows[int(np.argmax(self._model.priority(scenario, step, stage, rows)))])

    def update(self, action: int, accepted: bool) -> None:
        pass
