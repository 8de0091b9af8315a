"""Remembered offline scores equal the model's, and the model runs only for what is new."""

from __future__ import annotations

import json

import numpy as np
import pytest

from features.encoding import (
    MODEL_COLUMNS,
    ActionMatrix,
    CustomerVector,
    encode_actions,
    encode_candidates,
    encode_context,
    encode_customer,
)
from service.metrics import Metrics
from service.model import OnnxScorer, resolve_model_dir
from service.offline_scores import OfflineScores
from tests.demo_fixtures import DemoDirs

N_ACTIONS = 12


class CountingScorer(OnnxScorer):
    """The real demo model, counting the rows it scores."""

    rows_scored = 0

    def logits(self, x: np.ndarray) -> np.ndarray:
        self.rows_scored += len(x)
        return super().logits(x)


@pytest.fixture
def scorer(demo: DemoDirs) -> CountingScorer:
    return CountingScorer(resolve_model_dir(demo.models_dir, "nextbest-ranker", None), MODEL_COLUMNS)


def actions(demo: DemoDirs) -> ActionMatrix:
    catalog = json.loads((demo.data_dir / "catalog.json").read_text())["actions"][:N_ACTIONS]
    return encode_actions({a["action_id"]: {"kind": a["kind"], "category": a["category"],
                                            "price": 10.0 + i} for i, a in enumerate(catalog)})


def direct(scorer: OnnxScorer, customer: CustomerVector, context: np.ndarray, matrix: ActionMatrix,
           rows: np.ndarray, basket: np.ndarray) -> np.ndarray:
    """The model itself on the full rows (CountingScorer's count left alone)."""
    return OnnxScorer.logits(scorer, encode_candidates(customer, context, "web", matrix, rows, basket))


def test_remembered_scores_equal_the_models_and_only_new_rows_are_scored(
    demo: DemoDirs, scorer: CountingScorer,
) -> None:
    metrics = Metrics()
    scores = OfflineScores(scorer, memory_mb=1, ttl_seconds=5, n_actions=N_ACTIONS, metrics=metrics)
    matrix = actions(demo)
    alice = encode_customer({"segment": "vip", "category_affinity_electronics": 0.9})
    bob = encode_customer({"segment": "new", "price_sensitivity": 0.9})
    home = encode_context("web", "home", "mobile", 0.0, 0)
    basket = np.array([3], dtype=np.int64)
    first, second = np.array([0, 1, 2, 5]), np.array([5, 2, 7, 8])

    z1 = scores.logits(alice, home, "web", matrix, first, basket)
    z2 = scores.logits(alice, home, "web", matrix, second, basket)
    np.testing.assert_array_equal(z1, direct(scorer, alice, home, matrix, first, basket))
    np.testing.assert_array_equal(z2, direct(scorer, alice, home, matrix, second, basket))
    assert scorer.rows_scored == 4 + 2  # 5 and 2 were remembered

    # another customer, context or basket is another input: scored, and scored right
    cart = encode_context("web", "cart", "mobile", 80.0, 1)
    for customer, context, b in ((bob, home, basket), (alice, cart, basket),
                                 (alice, home, np.zeros(0, dtype=np.int64))):
        before = scorer.rows_scored
        z = scores.logits(customer, context, "web", matrix, first, b)
        np.testing.assert_array_equal(z, direct(scorer, customer, context, matrix, first, b))
        assert scorer.rows_scored == before + len(first)

    def counted(source: str) -> float | None:
        return metrics.registry.get_sample_value("nextbest_offline_scores_total", {"source": source})

    assert (counted("model"), counted("memo")) == (6 + 3 * 4, 2)


def test_a_refreshed_action_matrix_forgets_everything(demo: DemoDirs, scorer: CountingScorer) -> None:
    scores = OfflineScores(scorer, memory_mb=1, ttl_seconds=5, n_actions=N_ACTIONS, metrics=Metrics())
    customer, home, rows = encode_customer({}), encode_context("app", "home", None, 0.0, 0), np.arange(4)
    no_basket = np.zeros(0, dtype=np.int64)
    scores.logits(customer, home, "app", actions(demo), rows, no_basket)
    scores.logits(customer, home, "app", actions(demo), rows, no_basket)  # a new, equal matrix
    assert scorer.rows_scored == 8


def test_memory_bounds_the_entries_and_zero_turns_it_off(demo: DemoDirs, scorer: CountingScorer) -> None:
    matrix, rows, no_basket = actions(demo), np.arange(3), np.zeros(0, dtype=np.int64)
    bounded = OfflineScores(scorer, memory_mb=3 * 8 * N_ACTIONS / 2**20, ttl_seconds=5, n_actions=N_ACTIONS,
                            metrics=Metrics())
    assert bounded.max_entries == 3
    for cart_value in range(10):
        context = encode_context("web", "cart", None, float(cart_value), 0)
        bounded.logits(encode_customer({}), context, "web", matrix, rows, no_basket)
    assert len(bounded) == 3

    for off in (OfflineScores(scorer, memory_mb=0, ttl_seconds=5, n_actions=N_ACTIONS, metrics=Metrics()),
                OfflineScores(scorer, memory_mb=1, ttl_seconds=0, n_actions=N_ACTIONS, metrics=Metrics())):
        before = scorer.rows_scored
        for _ in range(2):
            off.logits(encode_customer({}), encode_context("web", "home", None, 0.0, 0), "web",
                       matrix, rows, no_basket)
        assert scorer.rows_scored == before + 6 and len(off) == 0
    assert len(off.logits(encode_customer({}), encode_context("web", "home", None, 0.0, 0), "web",
                          matrix, np.zeros(0, dtype=np.int64), no_basket)) == 0


def test_scores_are_remembered_only_for_the_ttl(demo: DemoDirs, scorer: CountingScorer) -> None:
    now = [100.0]
    scores = OfflineScores(scorer, memory_mb=1, ttl_seconds=5, n_actions=N_ACTIONS,
                           metrics=Metrics(), clock=lambda: now[0])
    matrix, rows, no_basket = actions(demo), np.arange(4), np.zeros(0, dtype=np.int64)
    customer, home = encode_customer({}), encode_context("web", "home", None, 0.0, 0)
    for t, scored in ((100.0, 4), (104.9, 0), (105.0, 4), (109.0, 0), (110.5, 4)):
        now[0] = t
        before = scorer.rows_scored
        z = scores.logits(customer, home, "web", matrix, rows, no_basket)
        assert scorer.rows_scored - before == scored, t
        np.testing.assert_array_equal(z, direct(scorer, customer, home, matrix, rows, no_basket))
