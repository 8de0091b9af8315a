"""The shared encoder: a customer's cached vector with another journey stage; basket columns."""

from __future__ import annotations

import numpy as np
import pytest

from features.encoding import (
    BASKET_COLUMNS,
    MIN_AFFINITY,
    MODEL_COLUMNS,
    encode_actions,
    encode_candidates,
    encode_context,
    encode_customer,
    with_journey_stage,
)
from features.schema import CATEGORIES, JOURNEY_STAGES

RAW = {"recency_days": 3.0, "segment": "loyal", "journey_stage": "consideration",
       "category_affinity_electronics": 0.7, "price_sensitivity": 0.2}


@pytest.mark.parametrize("stage", [None, *JOURNEY_STAGES, "not-a-stage"])
def test_with_journey_stage_equals_encoding_with_that_stage(stage: str | None) -> None:
    cached = encode_customer(RAW)
    before = cached.block.copy()
    got, want = with_journey_stage(cached, stage), encode_customer(RAW, stage)
    np.testing.assert_array_equal(got.block, want.block)
    np.testing.assert_array_equal(got.category_affinity, want.category_affinity)
    assert (got.journey_stage, got.segment) == (want.journey_stage, want.segment)
    np.testing.assert_array_equal(cached.block, before)  # the cached vector is never changed


def test_the_same_stage_returns_the_cached_vector() -> None:
    cached = encode_customer(RAW)
    assert with_journey_stage(cached, "consideration") is cached
    assert with_journey_stage(cached, None) is cached


def test_basket_columns_flag_the_basket_categories_and_log_affinity_is_clipped() -> None:
    actions = encode_actions({
        "a": {"kind": "product", "category": "electronics"},
        "b": {"kind": "offer", "category": "beauty"},
        "c": {"kind": "product", "category": "not-a-category"},
    })
    customer = encode_customer(RAW)
    context = encode_context("pos", "checkout", "terminal", 30.0, 1)
    x = encode_candidates(customer, context, "pos", actions, np.array([0, 2]), np.array([1]))
    flags = dict(zip(BASKET_COLUMNS, x[0, -len(BASKET_COLUMNS):].tolist(), strict=True))
    assert flags == {f"basket_has={c}": float(c == "beauty") for c in CATEGORIES}
    np.testing.assert_array_equal(x[0, -len(BASKET_COLUMNS):], x[1, -len(BASKET_COLUMNS):])
    log_affinity = x[:, MODEL_COLUMNS.index("log_category_affinity")]
    assert log_affinity[0] == pytest.approx(np.log(0.7))
    assert log_affinity[1] == pytest.approx(np.log(MIN_AFFINITY))  # unknown category: 0

    empty = encode_candidates(customer, context, "pos", actions, np.array([0]), np.array([], int))
    assert not empty[0, -len(BASKET_COLUMNS):].any()
