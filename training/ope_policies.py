"""Target policies for off-policy evaluation (`training/ope.py`).

A target policy is any callable `LoggedBandit -> (n, K) probabilities` over each row's
candidate slots (zero in padding).
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

from training.ope_log import FloatArray, LoggedBandit

TargetPolicy = Callable[[LoggedBandit], FloatArray]


def uniform(log: LoggedBandit) -> FloatArray:
    """Uniform over each decision's candidates."""
    mask = log.mask.astype(np.float64)
    return mask / mask.sum(axis=1, keepdims=True)


def logged(log: LoggedBandit) -> FloatArray:
    """The logging policy as far as the log shows it: the logged propensity on the logged
    action, the rest spread evenly over the other candidates. Its IPS weights are all 1."""
    counts = log.mask.sum(axis=1)
    others = np.where(counts > 1, (1.0 - log.propensity) / np.maximum(counts - 1, 1), 0.0)
    probs = np.where(log.mask, others[:, None], 0.0)
    probs[np.arange(log.n), log.chosen] = log.propensity
    return probs


def _score_matrix(log: LoggedBandit, scores: FloatArray | None) -> FloatArray:
    matrix = log.scores if scores is None else np.asarray(scores, dtype=np.float64)
    if matrix.shape != log.mask.shape:
        raise ValueError(f"scores have shape {matrix.shape}, the log's candidates {log.mask.shape}")
    usable = np.isfinite(matrix) & log.mask
    missing = np.flatnonzero(~usable.any(axis=1))
    if missing.size:
        i = int(missing[0])
        raise ValueError(f"{missing.size} decisions have no scores (first: row {i + 1}, "
                         f"decision_id {log.decision_ids[i]!r}); greedy policies need them")
    return np.where(usable, matrix, -np.inf)


def greedy(scores: FloatArray | None = None) -> TargetPolicy:
    """Argmax of the scores per decision, ties split evenly; candidates without a score
    are never chosen. `scores` is `(n, K)` aligned with `log.candidates`."""

    def policy(log: LoggedBandit) -> FloatArray:
        matrix = _score_matrix(log, scores)
        best = matrix == matrix.max(axis=1, keepdims=True)
        return best / best.sum(axis=1, keepdims=True)

    return policy


def epsilon_greedy(scores: FloatArray | None = None, eps: float = 0.1) -> TargetPolicy:
    """Greedy with probability 1 - eps, uniform over the candidates with probability eps."""
    if not 0.0 <= eps <= 1.0:
        raise ValueError(f"eps must be in [0, 1], got {eps}")
    pick = greedy(scores)

    def policy(log: LoggedBandit) -> FloatArray:
        return (1.0 - eps) * pick(log) + eps * uniform(log)

    return policy


def check_policy(log: LoggedBandit, probs: FloatArray) -> FloatArray:
    """Refuse target probabilities that are not a distribution over the candidates."""
    probs = np.asarray(probs, dtype=np.float64)
    if probs.shape != log.mask.shape:
        raise ValueError(f"policy returned shape {probs.shape}, expected {log.mask.shape}")
    if not np.all(np.isfinite(probs)) or np.any(probs < -1e-12):
        raise ValueError("policy returned negative or non-finite probabilities")
    if np.any(probs[~log.mask] > 1e-12):
        raise ValueError("policy put probability on padding (not a candidate)")
    if np.any(probs.sum(axis=1) > 1.0 + 1e-6):
        raise ValueError("policy probabilities sum to more than 1 for some decision")
    return np.clip(probs, 0.0, None)


def exploring(scores: FloatArray | None = None, eps: float = 0.1, top: int = 0) -> TargetPolicy:
    """The service's exploration at rank 1 (service/exploration.py): the best candidate
    with probability 1 - eps, else one drawn uniformly from the `top` best (0: from all),
    so P(a) = (1 - eps) [a is best] + eps / m for the m candidates of the window."""
    if not 0.0 <= eps <= 1.0:
        raise ValueError(f"eps must be in [0, 1], got {eps}")
    if top < 0:
        raise ValueError(f"top must be 0 (all) or positive, got {top}")
    pick = greedy(scores)

    def policy(log: LoggedBandit) -> FloatArray:
        matrix = _score_matrix(log, scores)
        scored = np.isfinite(matrix)
        order = np.argsort(-matrix, axis=1, kind="stable")  # unscored (-inf) last
        rank = np.empty_like(order)
        np.put_along_axis(rank, order, np.broadcast_to(np.arange(order.shape[1]), order.shape), axis=1)
        count = scored.sum(axis=1, keepdims=True)
        window = np.minimum(count, top) if top > 0 else count
        inside = scored & (rank < window)
        return (1.0 - eps) * pick(log) + eps * inside / window

    return policy
