"""Exploration: epsilon-greedy top-k with the exact probability of every pick.

Slot by slot, the policy shows the best remaining action with probability 1 - epsilon
and, with probability epsilon, one drawn uniformly from the `explore_top` best remaining
ones (0: from all remaining). With m = the size of that window, the probability that it
picks the action it showed at a slot, given the slots above, is therefore
(1 - epsilon) * [action is the best remaining] + epsilon / m for an action in the window,
and 0 outside it. That number is logged with the decision so off-policy estimators (IPS,
SNIPS, DR) can reweight it.

Why a window: an exploratory pick among all candidates usually shows something the
model rightly ranks near the bottom, and costs nearly the whole value of the slot
(in the world of `nextbest simulate`, such picks earn far less of the oracle's reward
than greedy ones). Drawing from the best few keeps the learner's data on the actions that
compete for the slot. The price is support: off-policy estimates of a policy that would
show actions outside the window are biased, because those actions were never logged;
set `explore_top` to 0 when the logs must support evaluating arbitrary policies.

Arbitration constraints (`Constraints`) narrow what remains after each pick: an action
of an exclusion group takes the group's only place (the others of the group leave the
remaining ones), and a category holds at most `max_per_category` places. The
probabilities above then hold over the remaining actions as narrowed, slot by slot.
`excluded` drops candidates before anything is picked (what caps refused).
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache
from typing import NamedTuple

import numpy as np


class Selection(NamedTuple):  # a tuple: built once per decision, cheaper than a dataclass
    positions: np.ndarray  # indices into the priority vector, in rank order
    probability: np.ndarray  # probability the policy picked each at its rank
    explored: np.ndarray  # bool: shown by exploration rather than by rank
    #: with constraints: per position, what a pick left it out for (0 nothing, else a code)
    left_out: np.ndarray | None = None


#: `Selection.left_out` codes
EXCLUSION_GROUP, DIVERSITY = 1, 2


@dataclass(frozen=True)
class Constraints:
    """Per candidate position: its exclusion group and its category (codes, -1: none)."""

    group: np.ndarray
    category: np.ndarray
    max_per_category: int  # 0: no diversity constraint


def select_top_k(
    priority: np.ndarray, k: int, epsilon: float, rng: np.random.Generator, explore_top: int = 0,
    constraints: Constraints | None = None, excluded: np.ndarray | None = None,
) -> Selection:
    order = (-priority).argsort(kind="stable")  # the method: np.argsort's wrapper costs more
    if excluded is not None:
        order = order[~excluded[order]]
    n = len(order)
    k = min(k, n)
    if k == 0:
        empty = np.zeros(0, dtype=np.int64)
        return Selection(empty, np.zeros(0), np.zeros(0, dtype=bool))
    if constraints is not None:
        return _constrained(priority, order, k, epsilon, rng, explore_top, constraints)
    if epsilon <= 0.0:
        return Selection(order[:k], np.ones(k), np.zeros(k, dtype=bool))
    draws = rng.random(k)
    if min(draws.tolist()) >= epsilon:  # most decisions: every slot greedy
        return Selection(order[:k], *_greedy(n, k, epsilon, explore_top))
    remaining = order.tolist()
    picks = np.empty(k, dtype=np.int64)
    probs = np.empty(k)
    explored = np.zeros(k, dtype=bool)
    for slot in range(k):
        m = min(len(remaining), explore_top) if explore_top > 0 else len(remaining)
        j = int(rng.integers(m)) if draws[slot] < epsilon else 0
        picks[slot] = remaining.pop(j)
        probs[slot] = (1.0 - epsilon) * (j == 0) + epsilon / m
        explored[slot] = j != 0
    return Selection(picks, probs, explored)


def _constrained(priority: np.ndarray, order: np.ndarray, k: int, epsilon: float,
                 rng: np.random.Generator, explore_top: int, c: Constraints) -> Selection:
    """Slot by slot, over the remaining actions the constraints leave."""
    draws = rng.random(k) if epsilon > 0 else np.ones(k)
    alive = np.ones(len(order), dtype=bool)
    group, category = c.group[order], c.category[order]
    left_out = np.zeros(len(priority), dtype=np.int8)
    held: dict[int, int] = {}
    picks: list[int] = []
    probs: list[float] = []
    explored: list[bool] = []
    for slot in range(k):
        remaining = np.flatnonzero(alive)
        if not remaining.size:
            break
        m = min(remaining.size, explore_top) if explore_top > 0 else remaining.size
        j = int(rng.integers(m)) if draws[slot] < epsilon else 0
        p = int(remaining[j])
        alive[p] = False
        picks.append(int(order[p]))
        probs.append((1.0 - epsilon) * (j == 0) + epsilon / m)
        explored.append(j != 0)
        if group[p] >= 0:
            out = alive & (group == group[p])
            left_out[order[out]] = EXCLUSION_GROUP
            alive &= ~out
        if c.max_per_category and category[p] >= 0:
            held[int(category[p])] = held.get(int(category[p]), 0) + 1
            if held[int(category[p])] >= c.max_per_category:
                out = alive & (category == category[p])
                left_out[order[out]] = DIVERSITY
                alive &= ~out
    return Selection(np.array(picks, dtype=np.int64), np.array(probs), np.array(explored, dtype=bool),
                     left_out)


@lru_cache(maxsize=1024)
def _greedy(n: int, k: int, epsilon: float, explore_top: int) -> tuple[np.ndarray, np.ndarray]:
    """Probabilities and explored flags of k greedy slots among n (shared, read-only)."""
    left = np.arange(n, n - k, -1)  # remaining actions at each slot
    window = np.minimum(left, explore_top) if explore_top > 0 else left
    probability = (1.0 - epsilon) + epsilon / window
    explored = np.zeros(k, dtype=bool)
    probability.flags.writeable = explored.flags.writeable = False
    return probability, explored


def probabilities_of(priority: np.ndarray, shown: np.ndarray, epsilon: float,
                     explore_top: int = 0) -> np.ndarray:
    """The probability that `select_top_k` over `priority` picks each of `shown` at its
    rank, given the ones above it: another policy's propensities for the shown actions
    (what a shadow challenger logs for off-policy comparison)."""
    remaining = (-priority).argsort(kind="stable").tolist()
    out = np.empty(len(shown))
    for slot, position in enumerate(shown.tolist()):
        m = min(len(remaining), explore_top) if explore_top > 0 else len(remaining)
        j = remaining.index(position)
        out[slot] = (1.0 - epsilon) * (j == 0) + (epsilon / m if j < m else 0.0)
        remaining.pop(j)
    return out
