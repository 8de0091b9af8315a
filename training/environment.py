"""Simulated customers for the closed loop: an example world's truth plus dynamics.

The world's truth (`training/truth.py`: retail's `training/world.py`, telco's
`training/telco_world.py`) owns the static ground truth and says how an acceptance
moves a customer's journey stage. The simulator needs three things on top, the same
for every world, and they live here so the truths stay the static truth the demo data
was drawn from:

- journey stages that move: each customer starts at their latest true stage and moves
  as the truth's `advance` says when they accept (retail: awareness -> consideration
  -> purchase -> retention; telco: an at-risk customer who takes a retention offer is
  active again);
- fatigue: every earlier exposure of the same action to the same customer lowers the
  acceptance logit by `FATIGUE_LOGIT` (capped), so showing the same thing again and
  again stops paying;
- drift: from the drift step on, one category falls out of favour (its logit drops by
  `DRIFT_LOGIT` for everyone);
- dismissals (when the simulator asks for them): a customer who does not accept may say
  no, with the truth's `dismiss_rates` of the channel for a first offer, and more often
  for an action shown to them before (`dismiss_probability`).

`Scenario` is the sequence every policy faces (customer, request and the uniforms that
decide responses), drawn once up front: common random numbers, so the differences
between policies are the policies' doing. `CustomerState` is one policy's private copy
of the dynamic state (stages, exposure counts): each policy lives in its own world that
starts identical and receives the same draws.
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass, field

import numpy as np

from training.truth import Requests, Truth

FATIGUE_LOGIT = 0.6
MAX_FATIGUE_EXPOSURES = 4
DRIFT_LOGIT = 2.0
MAX_DISMISS_PROBABILITY = 0.9

@dataclass(frozen=True)
class Scenario:
    """Everything drawn up front, shared by every policy (common random numbers)."""

    customers: np.ndarray  # (n,) customer rows
    requests: Requests  # (n,) the slot, basket and context of each step
    response_u: np.ndarray  # (n,) uniforms: accepted iff u < p(shown action)
    dismiss_u: np.ndarray  # (n,) uniforms: dismissed (when not accepted) iff u < q
    choice_u: np.ndarray  # (n,) uniforms for the random policy's pick
    drift_step: int
    eligible: dict[tuple[str, str], np.ndarray]

    def __len__(self) -> int:
        return len(self.customers)

    @property
    def channels(self) -> np.ndarray:
        return self.requests.channels

    @property
    def placements(self) -> np.ndarray:
        return self.requests.placements

    @property
    def baskets(self) -> np.ndarray:
        return self.requests.baskets

    def candidates(self, step: int) -> np.ndarray:
        """Action rows allowed in this step's slot, minus what is already in the basket."""
        rows = self.eligible[(str(self.channels[step]), str(self.placements[step]))]
        return rows[~self.baskets[step, rows]]

    def basket_rows(self, step: int) -> np.ndarray:
        return np.flatnonzero(self.baskets[step])


def draw_scenario(world: Truth, n: int, seed: int, drift_at: float) -> Scenario:
    """n steps: activity-weighted customers, each with a request drawn by the truth."""
    rng = np.random.default_rng([seed, 101])
    customers = rng.choice(len(world.customer_ids), size=n, p=world.activity / world.activity.sum())
    requests = world.draw_requests(rng, customers)
    eligible = {(c, p): world.eligible(c, p) for c, slots in world.slots().items() for p in slots}
    return Scenario(
        customers=customers, requests=requests, response_u=rng.random(n), choice_u=rng.random(n),
        drift_step=int(round(drift_at * n)), eligible=eligible,
        # drawn after the others, so that the other draws stay what they were without it
        dismiss_u=rng.random(n),
    )


@dataclass
class CustomerState:
    """One policy's private dynamic world: current stages and exposure counts."""

    world: Truth
    stage: np.ndarray  # (customers,) int codes into the truth's stage_names
    exposures: defaultdict[tuple[int, int], int] = field(default_factory=lambda: defaultdict(int))
    drift_category: int | None = None

    @classmethod
    def start(cls, world: Truth) -> CustomerState:
        return cls(world, world.stages[:, -1].copy())

    def stage_name(self, customer: int) -> str:
        return self.world.stage_names[int(self.stage[customer])]

    def accept_probability(
        self, scenario: Scenario, step: int, actions: np.ndarray, fatigue: bool = True
    ) -> np.ndarray:
        """True P(accept) of each action row for this step, with drift and (by default) fatigue."""
        c = int(scenario.customers[step])
        n = len(actions)
        p = self.world.response_probability(
            np.full(n, c), actions, scenario.requests, np.full(n, step), np.full(n, self.stage[c]))
        z = np.log(p) - np.log1p(-p)
        seen = np.array([min(self.exposures.get((c, int(a)), 0), MAX_FATIGUE_EXPOSURES)
                         for a in actions.tolist()], dtype=np.float64)
        if fatigue:
            z -= FATIGUE_LOGIT * seen
        if self.drift_category is not None:
            cat = self.world.action_arrays()["category"][actions]
            z -= np.where(cat == self.drift_category, DRIFT_LOGIT, 0.0)
        return 1.0 / (1.0 + np.exp(-z))

    def dismiss_probability(self, scenario: Scenario, step: int, action: int) -> float:
        """P(the customer dismisses `action` at `step` if they do not accept it): the
        channel's rate, times one more for every earlier exposure (capped)."""
        c = int(scenario.customers[step])
        seen = min(self.exposures.get((c, action), 0), MAX_FATIGUE_EXPOSURES)
        rate = self.world.dismiss_rates.get(str(scenario.channels[step]), 0.0)
        return min(MAX_DISMISS_PROBABILITY, rate * (1 + seen))

    def respond(self, scenario: Scenario, step: int, action: int) -> tuple[bool, float]:
        """Show `action` at `step`: (accepted, true p) from the shared uniform; update state."""
        p = float(self.accept_probability(scenario, step, np.array([action]))[0])
        accepted = bool(scenario.response_u[step] < p)
        c = int(scenario.customers[step])
        self.exposures[(c, action)] += 1
        if accepted:
            self.stage[c] = self.world.advance(int(self.stage[c]), action)
        return accepted, p

