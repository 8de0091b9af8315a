"""Arbitration: priority = propensity x value x context weight x business lever.

Pega's P*V*C*L: a likely but worthless action loses to a less likely valuable one, the
channel can favour kinds of action (offers at the till), and the business can push or
hold back an action with its lever without retraining anything.
"""

from __future__ import annotations

from typing import NamedTuple

import numpy as np

from service.catalog import Catalog


class Priorities(NamedTuple):  # a tuple: built once per decision, cheaper than a dataclass
    priority: np.ndarray
    value: np.ndarray
    context_weight: np.ndarray
    lever: np.ndarray


def arbitrate(catalog: Catalog, rows: np.ndarray, propensity: np.ndarray, channel: str) -> Priorities:
    value = catalog.value[rows]
    weight = catalog.context_weight(channel)[rows]
    lever = catalog.lever[rows]
    return Priorities(propensity * value * weight * lever, value, weight, lever)
