"""The encoder compiled from a world: overrides on a cached vector, basket columns, and the
generic paths the retail world does not take (`unknown: other`, no customer entity, a
clipped numeric), on small worlds derived from retail.yaml."""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import yaml

from features.config import WORLDS_DIR, World, load_world, shipped_world
from features.encoding import Encoder

RETAIL = shipped_world("retail")
ENCODER = Encoder(RETAIL)
STAGES = RETAIL.vocabulary("journey_stages")
CATEGORIES = RETAIL.vocabulary("categories")
RAW = {"recency_days": 3.0, "segment": "loyal", "journey_stage": "consideration",
       "category_affinity_electronics": 0.7, "price_sensitivity": 0.2}


def _context(**fields: Any) -> dict[str, Any]:
    return {"device": None, "cart_value": 0.0, "basket": [], "journey_stage": None, **fields}


def _world(tmp_path: Path, change: Any) -> World:
    document = yaml.safe_load((WORLDS_DIR / "retail.yaml").read_text())
    change(document)
    path = tmp_path / "world.yaml"
    path.write_text(yaml.safe_dump(document))
    return load_world(path)


def test_columns_are_the_worlds() -> None:
    assert ENCODER.columns == RETAIL.model_columns()


@pytest.mark.parametrize("stage", [None, *STAGES, "not-a-stage"])
def test_with_context_equals_encoding_with_that_context(stage: str | None) -> None:
    cached = ENCODER.encode_customer(RAW)
    before = cached.block.copy()
    ctx = _context(journey_stage=stage)
    got, want = ENCODER.with_context(cached, ctx), ENCODER.encode_customer(RAW, ctx)
    np.testing.assert_array_equal(got.block, want.block)
    for a, b in zip(got.affinities, want.affinities, strict=True):
        np.testing.assert_array_equal(a, b)
    assert got.labels == want.labels
    np.testing.assert_array_equal(cached.block, before)  # the cached vector is never changed


def test_the_same_stage_returns_the_cached_vector() -> None:
    cached = ENCODER.encode_customer(RAW)
    assert ENCODER.with_context(cached, _context(journey_stage="consideration")) is cached
    assert ENCODER.with_context(cached, _context()) is cached
    assert cached.labels["journey_stage"] == "consideration" and cached.labels["segment"] == "loyal"


def test_basket_columns_flag_the_basket_categories_and_log_affinity_is_clipped() -> None:
    actions = ENCODER.encode_actions({
        "a": {"kind": "product", "category": "electronics"},
        "b": {"kind": "offer", "category": "beauty"},
        "c": {"kind": "product", "category": "not-a-category"},
    })
    customer = ENCODER.encode_customer(RAW)
    context = ENCODER.encode_context("pos", "checkout", _context(device="terminal", cart_value=30.0,
                                                                 basket=["b"]))
    x = ENCODER.encode_candidates(customer, context, actions, np.array([0, 2]), np.array([1]))
    has = [c for c in ENCODER.columns if c.startswith("basket_has=")]
    flags = dict(zip(has, x[0, -len(has):].tolist(), strict=True))
    assert flags == {f"basket_has={c}": float(c == "beauty") for c in CATEGORIES}
    np.testing.assert_array_equal(x[0, -len(has):], x[1, -len(has):])
    log_affinity = x[:, ENCODER.columns.index("log_category_affinity")]
    assert log_affinity[0] == pytest.approx(np.log(0.7))
    assert log_affinity[1] == pytest.approx(np.log(1e-3))  # unknown category: affinity 0, floored

    empty = ENCODER.encode_candidates(customer, context, actions, np.array([0]), np.array([], int))
    assert not empty[0, -len(has):].any()


def test_a_context_given_as_attributes_encodes_as_the_same_dict() -> None:
    from features.config import shipped_world
    from service.schemas import request_models

    context_model = request_models(shipped_world("retail")).context
    ctx = context_model.model_validate(
        {"device": "tablet", "cart_value": 12.0, "basket": ["a", "b"], "journey_stage": "churn_risk"})
    as_dict = _context(device="tablet", cart_value=12.0, basket=["a", "b"], journey_stage="churn_risk")
    np.testing.assert_array_equal(ENCODER.encode_context("app", "cart", ctx).block,
                                  ENCODER.encode_context("app", "cart", as_dict).block)


def test_unknown_other_sets_the_other_column(tmp_path: Path) -> None:
    def other(document: dict[str, Any]) -> None:
        document["model"]["action"][1]["unknown"] = "other"  # category
        document["model"]["customer"][4]["unknown"] = "other"  # segment
    encoder = Encoder(_world(tmp_path, other))
    columns = encoder.columns
    assert "category=other" in columns and "segment=other" in columns
    assert columns.index("category=other") == columns.index("category=grocery") + 1
    actions = encoder.encode_actions({"known": {"category": "beauty"}, "unknown": {"category": "toys"}})
    block = dict(zip(columns[columns.index("kind=product"):], actions.block[1].tolist(), strict=False))
    assert block["category=other"] == 1.0
    assert not any(v for k, v in block.items() if k.startswith("category=") and k != "category=other")
    assert actions.block[0, columns.index("category=other") - columns.index("kind=product")] == 0.0
    assert actions.code("category").tolist() == [CATEGORIES.index("beauty"), -1]

    customer = encoder.encode_customer({"segment": "whale"})
    assert customer.block[columns.index("segment=other")] == 1.0
    assert customer.block[columns.index("segment=new"):columns.index("segment=other")].sum() == 0.0
    # the crosses read an unknown value as no value
    x = encoder.encode_candidates(customer, encoder.encode_context("web", "home", _context(basket=["unknown"])),
                                  actions, np.array([1]), np.array([1]))
    assert x[0, columns.index("category_affinity")] == 0.0
    assert x[0, columns.index("basket_category_share")] == 0.0
    assert x[0, columns.index("in_basket")] == 1.0


def test_a_world_without_customers_has_an_empty_customer_block(tmp_path: Path) -> None:
    def no_customers(document: dict[str, Any]) -> None:
        document["customer_entity"] = None
        document["model"]["customer"] = []
        document["model"]["crosses"] = [c for c in document["model"]["crosses"] if c["cross"] != "affinity"]
        document["context"]["journey_stage"].pop("overrides")
        document["learner"]["crosses"] = ["channel", "placement"]
    encoder = Encoder(_world(tmp_path, no_customers))
    assert encoder.columns[0] == "channel=web"
    customer = encoder.encode_customer({})
    assert customer.block.shape == (0,) and customer.affinities == ()
    actions = encoder.encode_actions({"a": {"category": "beauty"}, "b": {"category": "sports"}})
    context = encoder.encode_context("web", "home", _context(basket=["a"], cart_value=9.0))
    x = encoder.encode_candidates(customer, context, actions, np.array([0, 1]), np.array([0]))
    assert x.shape == (2, len(encoder.columns))
    np.testing.assert_array_equal(x[:, :len(context.block)], np.stack([context.block] * 2))
    assert x[:, encoder.columns.index("in_basket")].tolist() == [1.0, 0.0]


def test_a_clipped_numeric(tmp_path: Path) -> None:
    def clipped(document: dict[str, Any]) -> None:
        document["model"]["customer"][3] = {"encode": "numeric", "feature": "price_sensitivity",
                                            "clip_min": 0.1, "clip_max": 0.8}
        document["model"]["action"][2] = {"encode": "numeric", "feature": "price", "clip_max": 100.0,
                                          "transform": "log1p", "column": "capped_log_price"}
    encoder = Encoder(_world(tmp_path, clipped))
    i = encoder.columns.index("price_sensitivity")
    for value, want in ((0.95, 0.8), (0.5, 0.5), (0.0, 0.1)):
        assert encoder.encode_customer({"price_sensitivity": value}).block[i] == np.float32(want)
    assert encoder.encode_customer({}).block[i] == np.float32(0.5)  # the default, inside the bounds
    actions = encoder.encode_actions({"cheap": {"price": 9.0}, "dear": {"price": 5000.0}})
    j = encoder.columns.index("capped_log_price") - encoder.columns.index("kind=product")
    assert actions.block[:, j].tolist() == pytest.approx([np.log1p(9.0), np.log1p(100.0)])


def test_training_rows_equal_decisions_row_by_row() -> None:
    actions = ENCODER.encode_actions({f"a{i}": {"category": CATEGORIES[i % 6], "kind": "offer",
                                                "price": float(i)} for i in range(8)})
    customers = [ENCODER.encode_customer(RAW, _context(journey_stage="churn_risk")),
                 ENCODER.encode_customer({})]
    contexts = [_context(basket=["a1", "a2", "zz"], device="mobile"), _context(cart_value=4.0)]
    encoded = [ENCODER.encode_context(ch, "home", c) for ch, c in zip(("web", "email"), contexts, strict=True)]
    baskets = [np.array([1, 2]), np.array([], np.int64)]
    rows = np.array([1, 5])
    examples = ENCODER.encode_examples(
        customers, encoded, ENCODER.encode_actions({str(i): {"category": CATEGORIES[r % 6], "kind": "offer",
                                                        "price": float(r)} for i, r in enumerate(rows)}),
        actions, baskets, rows)
    for i in range(2):
        want = ENCODER.encode_candidates(customers[i], encoded[i], actions, rows[i:i + 1], baskets[i])
        np.testing.assert_array_equal(examples[i], want[0])


def test_the_encoding_description_names_what_the_columns_depend_on() -> None:
    encoding = ENCODER.encoding
    assert encoding["vocabularies"]["segments"] == RETAIL.vocabulary("segments")
    assert set(encoding["vocabularies"]) == {"segments", "journey_stages", "channels", "placements",
                                            "devices", "action_kinds", "categories"}
    assert "last_channel" not in encoding["defaults"]["customer"]  # not encoded
    assert encoding["defaults"]["customer"]["recency_days"] == 30.0
    assert "store_id" not in encoding["context_fields"]
    assert copy.deepcopy(encoding) == Encoder(shipped_world("retail")).encoding


def test_a_context_block_reused_for_the_same_categories_is_not_shared() -> None:
    first = ENCODER.encode_context("pos", "checkout", _context(device="terminal", cart_value=10.0))
    second = ENCODER.encode_context("pos", "checkout", _context(device="terminal", cart_value=99.0))
    assert first.block is not second.block
    column = ENCODER.columns.index("log_cart_value") - ENCODER.columns.index("channel=web")
    assert first.block[column] != second.block[column]
    assert (first.block != second.block).sum() == 1  # only the number differs
