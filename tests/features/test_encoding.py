"""The shared encoder: a customer's cached vector with another journey stage."""

from __future__ import annotations

import numpy as np
import pytest

from features.encoding import encode_customer, with_journey_stage
from features.schema import JOURNEY_STAGES

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
