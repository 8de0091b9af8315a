from __future__ import annotations

import numpy as np
import pytest

from service.exploration import select_top_k


def test_no_exploration_is_greedy_top_k() -> None:
    sel = select_top_k(np.array([1.0, 5.0, 3.0, 4.0]), 3, 0.0, np.random.default_rng(0))
    assert sel.positions.tolist() == [1, 3, 2]
    assert sel.probability.tolist() == [1.0, 1.0, 1.0]
    assert not sel.explored.any()


def test_k_larger_than_candidates_and_empty() -> None:
    rng = np.random.default_rng(0)
    assert len(select_top_k(np.array([1.0, 2.0]), 5, 0.1, rng).positions) == 2
    assert len(select_top_k(np.zeros(0), 3, 0.1, rng).positions) == 0


def test_logged_probabilities_match_empirical_frequencies() -> None:
    priority = np.array([4.0, 3.0, 2.0, 1.0])
    eps, n = 0.3, 20_000
    rng = np.random.default_rng(1)
    first = np.zeros(4)
    logged = np.zeros(4)
    for _ in range(n):
        sel = select_top_k(priority, 2, eps, rng)
        first[sel.positions[0]] += 1
        logged[sel.positions[0]] = sel.probability[0]
    assert first / n == pytest.approx(logged, abs=0.015)
    assert logged[0] == pytest.approx(1 - eps + eps / 4)
    assert logged[3] == pytest.approx(eps / 4)


def test_picks_are_distinct() -> None:
    rng = np.random.default_rng(2)
    for _ in range(200):
        sel = select_top_k(rng.random(10), 5, 0.5, rng)
        assert len(set(sel.positions.tolist())) == 5
        assert ((sel.probability > 0) & (sel.probability <= 1)).all()


def test_an_exploration_window_draws_only_from_the_best_remaining() -> None:
    priority = np.array([6.0, 5.0, 4.0, 3.0, 2.0, 1.0])
    eps, n = 0.4, 20_000
    rng = np.random.default_rng(3)
    counts = np.zeros((2, 6))
    logged = np.zeros((2, 6))
    for _ in range(n):
        sel = select_top_k(priority, 2, eps, rng, explore_top=3)
        for slot in range(2):
            counts[slot, sel.positions[slot]] += 1
            logged[slot, sel.positions[slot]] = sel.probability[slot]
    assert counts[0, 3:].sum() == 0  # outside the window for the first slot: never shown
    assert counts[0] / n == pytest.approx([1 - eps + eps / 3, eps / 3, eps / 3, 0, 0, 0], abs=0.015)
    assert logged[0, 0] == pytest.approx(1 - eps + eps / 3)
    assert logged[0, 2] == pytest.approx(eps / 3)
    # the second slot's window is the three best of what the first slot left
    assert counts[1, 4:].sum() == 0 and counts[1, 3] > 0


def test_a_window_larger_than_the_candidates_is_all_of_them() -> None:
    priority = np.array([3.0, 2.0, 1.0])
    a = select_top_k(priority, 3, 0.5, np.random.default_rng(4), explore_top=10)
    b = select_top_k(priority, 3, 0.5, np.random.default_rng(4), explore_top=0)
    assert a.positions.tolist() == b.positions.tolist()
    assert a.probability.tolist() == b.probability.tolist()


class Draws:
    """An rng whose uniform draws are given (integers as numpy's would be)."""

    def __init__(self, draws: list[float]) -> None:
        self.draws = np.array(draws)
        self.rng = np.random.default_rng(5)

    def random(self, k: int) -> np.ndarray:
        return self.draws[:k]

    def integers(self, m: int) -> int:
        return int(self.rng.integers(m))


@pytest.mark.parametrize("explore_top", [0, 2, 3])
def test_greedy_slots_log_the_same_probability_whether_or_not_a_slot_explored(explore_top: int) -> None:
    priority = np.array([5.0, 4.0, 3.0, 2.0, 1.0])
    eps = 0.1
    greedy = select_top_k(priority, 3, eps, Draws([0.5, 0.5, 0.5]), explore_top)  # type: ignore[arg-type]
    mixed = select_top_k(priority, 3, eps, Draws([0.5, 0.5, 0.01]), explore_top)  # type: ignore[arg-type]
    assert greedy.positions.tolist() == [0, 1, 2] and not greedy.explored.any()
    window = [min(5 - slot, explore_top) if explore_top else 5 - slot for slot in range(3)]
    assert greedy.probability.tolist() == pytest.approx([1 - eps + eps / m for m in window])
    assert mixed.probability[:2].tolist() == pytest.approx(greedy.probability[:2].tolist())
