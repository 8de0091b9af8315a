"""The control group: a share of customers served by a baseline policy, to measure uplift.

A customer belongs to the control group when a salted hash of their id falls below the
configured share, so they stay in it on every channel, replica and restart, and changing
the salt draws another group. An anonymous decision has no id to hash: it is drawn into
the control group by the hash of its decision id, with the same share, so anonymous
traffic weighs the same in both groups and the comparison stays fair (it is not sticky:
there is no one to stick to).

The baseline only ranks: the candidates it ranks have passed the same eligibility, rules
and contact policy, and what it picks goes through the same caps, budgets and
arbitration constraints as the treatment's picks (`service/engine.py`). Its picks carry
exact probabilities, as the treatment's do:
- `random` draws each slot uniformly among the remaining eligible actions (probability
  1 / remaining at each slot), which is `select_top_k` with epsilon 1 over all remaining;
- `offline` ranks by the offline model's propensity alone (no online correction, no
  exploration), arbitrated like the treatment (value, context weight, lever): greedy,
  probability 1 at each slot.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from typing import Literal

import numpy as np

from service.arbitration import arbitrate
from service.catalog import Catalog
from service.model import sigmoid

Group = Literal["control", "treatment"]
CONTROL: Group = "control"
TREATMENT: Group = "treatment"
GROUPS: tuple[Group, ...] = (TREATMENT, CONTROL)

_SCALE = float(2**64)


@dataclass(frozen=True)
class Ranking:
    """How the selection ranks: priorities, the exploration rate and window to draw with."""

    priority: np.ndarray
    epsilon: float
    explore_top: int


@dataclass(frozen=True)
class ControlGroup:
    share: float
    policy: Literal["random", "offline"] = "random"
    salt: str = "nextbest-control"

    def group_of(self, customer_id: str | None, decision_id: str) -> Group:
        """The customer's group (an anonymous decision's: by its decision id)."""
        key = f"{self.salt}:{customer_id}" if customer_id is not None else f"{self.salt}:~{decision_id}"
        digest = hashlib.blake2b(key.encode(), digest_size=8).digest()
        return CONTROL if int.from_bytes(digest, "big") / _SCALE < self.share else TREATMENT

    def ranking(self, catalog: Catalog, rows: np.ndarray, offline_logits: np.ndarray,
                channel: str) -> Ranking:
        """The baseline's ranking of the candidate `rows` (see the module docstring)."""
        if self.policy == "random":
            return Ranking(np.zeros(len(rows)), 1.0, 0)
        return Ranking(arbitrate(catalog, rows, sigmoid(offline_logits), channel).priority, 0.0, 0)
