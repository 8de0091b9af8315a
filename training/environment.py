"""Simulated customers for the closed loop: the demo world's truth plus dynamics.

`training/world.py` owns the static ground truth (latent preferences, channel habits,
price sensitivity, stage x kind fit). The simulator needs three things on top, and
they live here so world.py stays the single static truth the demo data was drawn from:

- journey stages that move: each customer starts at their latest true stage and
  advances when they accept (awareness -> consideration -> purchase -> retention;
  churn_risk customers who accept come back to retention);
- fatigue: every earlier exposure of the same action to the same customer lowers the
  acceptance logit by `FATIGUE_LOGIT` (capped), so showing the same thing again and
  again stops paying;
- drift: from the drift step on, one category falls out of favour (its logit drops by
  `DRIFT_LOGIT` for everyone).

`Scenario` is the sequence every policy faces (customer, slot, device, basket and the
uniforms that decide responses), drawn once up front: common random numbers, so the
differences between policies are the policies' doing. `CustomerState` is one policy's
private copy of the dynamic state (stages, exposure counts): each policy lives in its
own world that starts identical and receives the same draws.
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass, field

import numpy as np

from features.schema import CATEGORIES, JOURNEY_STAGES
from training.demo_data import draw_baskets, draw_slots
from training.world import SLOTS, World, sample_rows

FATIGUE_LOGIT = 0.6
MAX_FATIGUE_EXPOSURES = 4
DRIFT_LOGIT = 2.0

#: stage -> stage after an acceptance
_ADVANCE = {
    "awareness": "consideration",
    "consideration": "purchase",
    "purchase": "retention",
    "retention": "retention",
    "churn_risk": "retention",
}
_ADVANCE_CODES = np.array([JOURNEY_STAGES.index(_ADVANCE[s]) for s in JOURNEY_STAGES])


@dataclass(frozen=True)
class Scenario:
    """Everything drawn up front, shared by every policy (common random numbers)."""

    customers: np.ndarray  # (n,) customer rows
    channels: np.ndarray  # (n,) object, channel names
    placements: np.ndarray  # (n,) object
    devices: np.ndarray  # (n,) object
    baskets: np.ndarray  # (n, actions) bool
    cart_values: np.ndarray  # (n,) sum of the basket's prices
    response_u: np.ndarray  # (n,) uniforms: accepted iff u < p(shown action)
    choice_u: np.ndarray  # (n,) uniforms for the random policy's pick
    drift_step: int
    eligible: dict[tuple[str, str], np.ndarray]

    def __len__(self) -> int:
        return len(self.customers)

    def candidates(self, step: int) -> np.ndarray:
        """Action rows allowed in this step's slot, minus what is already in the basket."""
        rows = self.eligible[(str(self.channels[step]), str(self.placements[step]))]
        return rows[~self.baskets[step, rows]]

    def basket_rows(self, step: int) -> np.ndarray:
        return np.flatnonzero(self.baskets[step])


def draw_scenario(world: World, n: int, seed: int, drift_at: float) -> Scenario:
    """n steps: activity-weighted customers, channels from their habits, slots, baskets."""
    rng = np.random.default_rng([seed, 101])
    customers = rng.choice(len(world.customer_ids), size=n, p=world.activity / world.activity.sum())
    channel_names = np.array(list(SLOTS), dtype=object)[sample_rows(rng, world.habits[customers])]
    placements, devices = draw_slots(rng, channel_names)
    baskets = draw_baskets(world, rng, customers, placements)
    prices = np.array([a.price for a in world.actions])
    eligible = {(c, p): world.eligible(c, p) for c, slots in SLOTS.items() for p in slots}
    return Scenario(
        customers=customers, channels=channel_names, placements=placements, devices=devices,
        baskets=baskets, cart_values=(baskets @ prices).round(2), response_u=rng.random(n), choice_u=rng.random(n),
        drift_step=int(round(drift_at * n)), eligible=eligible,
    )


@dataclass
class CustomerState:
    """One policy's private dynamic world: current stages and exposure counts."""

    world: World
    stage: np.ndarray  # (customers,) int codes into JOURNEY_STAGES
    exposures: defaultdict[tuple[int, int], int] = field(default_factory=lambda: defaultdict(int))
    drift_category: int | None = None

    @classmethod
    def start(cls, world: World) -> CustomerState:
        return cls(world, world.stages[:, -1].copy())

    def stage_name(self, customer: int) -> str:
        return JOURNEY_STAGES[int(self.stage[customer])]

    def accept_probability(
        self, scenario: Scenario, step: int, actions: np.ndarray, fatigue: bool = True
    ) -> np.ndarray:
        """True P(accept) of each action row for this step, with drift and (by default) fatigue."""
        c = int(scenario.customers[step])
        n = len(actions)
        p = self.world.accept_probability(
            np.full(n, c), actions, str(scenario.channels[step]), str(scenario.placements[step]),
            int(self.stage[c]), np.broadcast_to(scenario.baskets[step], (n, scenario.baskets.shape[1])),
        )
        z = np.log(p) - np.log1p(-p)
        seen = np.array([min(self.exposures.get((c, int(a)), 0), MAX_FATIGUE_EXPOSURES)
                         for a in actions.tolist()], dtype=np.float64)
        if fatigue:
            z -= FATIGUE_LOGIT * seen
        if self.drift_category is not None:
            cat = self.world.action_arrays()["category"][actions]
            z -= np.where(cat == self.drift_category, DRIFT_LOGIT, 0.0)
        return 1.0 / (1.0 + np.exp(-z))

    def respond(self, scenario: Scenario, step: int, action: int) -> tuple[bool, float]:
        """Show `action` at `step`: (accepted, true p) from the shared uniform; update state."""
        p = float(self.accept_probability(scenario, step, np.array([action]))[0])
        accepted = bool(scenario.response_u[step] < p)
        c = int(scenario.customers[step])
        self.exposures[(c, action)] += 1
        if accepted:
            self.stage[c] = _ADVANCE_CODES[self.stage[c]]
        return accepted, p


def category_code(name: str) -> int:
    return CATEGORIES.index(name)
