"""Eligibility rules per action: each rule type on its own, and what is refused at load."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from features.config import shipped_world
from service.catalog import Catalog, load_catalog, parse_catalog
from service.rules import Decision

RETAIL = shipped_world("retail")


class Ctx:
    """A request context with the retail world's fields."""

    def __init__(self, **values: Any) -> None:
        self.store_id = values.get("store_id")
        self.basket = values.get("basket", [])
        self.device = values.get("device")
        self.cart_value = values.get("cart_value", 0.0)
        self.journey_stage = values.get("journey_stage")


def catalog(*rules: dict[str, Any] | None, **extra: Any) -> Catalog:
    actions = [{"action_id": f"a{i}", "category": "electronics" if i % 2 else "fashion",
                **({"rules": r} if r is not None else {}), **extra.get(f"a{i}", {})}
               for i, r in enumerate(rules)]
    return Catalog(parse_catalog(json.dumps({"actions": actions})), RETAIL)


def allowed(c: Catalog, now: float | None = None, labels: dict[str, str] | None = None,
            values: dict[str, Any] | None = None, ctx: Ctx | None = None,
            basket: list[str] = (), held: list[str] = ()) -> list[str]:  # type: ignore[assignment]
    held_mask = None
    if held:
        held_mask = np.zeros(len(c), dtype=bool)
        held_mask[[c.index[a] for a in held]] = True
    d = Decision(labels or {"segment": "regular", "journey_stage": "awareness"}, values or {},
                 ctx or Ctx(basket=list(basket)),
                 np.array([c.index[a] for a in basket], dtype=np.int64), held_mask)
    mask = c.rules.mask(d, now)
    assert mask is not None
    return [a for a, ok in zip(c.ids, mask.tolist(), strict=True) if ok]


def test_no_rules_cost_nothing() -> None:
    c = catalog(None, None)
    assert not c.rules.active and c.rules.mask(Decision({}, {}, Ctx(), np.zeros(0, dtype=np.int64), None)) is None


def test_segments_and_journey_stages() -> None:
    c = catalog({"segments": ["vip", "loyal"]}, {"journey_stages": ["churn_risk"]}, None)
    assert allowed(c, labels={"segment": "vip", "journey_stage": "awareness"}) == ["a0", "a2"]
    assert allowed(c, labels={"segment": "new", "journey_stage": "churn_risk"}) == ["a1", "a2"]


def test_validity_window_dates_days_and_hours_in_a_time_zone() -> None:
    c = catalog({"valid": {"from": "2026-03-01T00:00:00Z", "until": "2026-04-01T00:00:00Z"}},
                {"valid": {"days": ["sat", "sun"]}},
                {"valid": {"hours": ["09:00", "17:30"], "timezone": "Europe/Berlin"}},
                {"valid": {"hours": ["22:00", "06:00"]}})
    # Saturday 2026-03-14 10:00 UTC = 11:00 in Berlin
    sat = datetime(2026, 3, 14, 10, 0, tzinfo=UTC).timestamp()
    assert allowed(c, now=sat) == ["a0", "a1", "a2"]
    # Monday 2026-04-06 16:45 UTC = 18:45 in Berlin (summer time): all closed but none
    mon = datetime(2026, 4, 6, 16, 45, tzinfo=UTC).timestamp()
    assert allowed(c, now=mon) == []
    # 23:30 UTC: the window across midnight is open
    assert allowed(c, now=datetime(2026, 4, 6, 23, 30, tzinfo=UTC).timestamp()) == ["a3"]


def test_the_window_mask_is_kept_until_the_next_minute() -> None:
    c = catalog({"valid": {"hours": ["10:00", "11:00"]}})
    t = datetime(2026, 4, 6, 9, 59, 30, tzinfo=UTC).timestamp()
    first = c.rules.window_mask(t)
    assert first is not None and not first[0]
    assert c.rules.window_mask(t + 10) is first  # same minute: the cached mask
    later = c.rules.window_mask(t + 30)
    assert later is not None and later[0]


def test_customer_feature_bounds() -> None:
    c = catalog({"customer": {"price_sensitivity": {"min": 0.6}}},
                {"customer": {"monetary_90d": {"max": 100}}})
    assert allowed(c, values={"price_sensitivity": 0.7, "monetary_90d": 500.0}) == ["a0"]
    # missing features read as the world's defaults (price_sensitivity 0.5, monetary 50)
    assert allowed(c, values={}) == ["a1"]


def test_request_context_conditions() -> None:
    c = catalog({"context": {"cart_value": {"min": 50}}},
                {"context": {"store_id": {"in": ["s1", "s2"]}}},
                {"context": {"device": {"in": ["terminal"]}}})
    assert allowed(c, ctx=Ctx(cart_value=49.9)) == []
    assert allowed(c, ctx=Ctx(cart_value=50, store_id="s2", device="terminal")) == ["a0", "a1", "a2"]


def test_basket_has_category() -> None:
    c = catalog({"basket_has_category": ["electronics"]}, None)  # a1 is electronics
    assert allowed(c) == ["a1"]
    assert allowed(c, basket=["a1"]) == ["a0", "a1"]


def test_prerequisites_and_exclusions_of_holders() -> None:
    c = catalog({"requires": ["a2"]}, {"excludes_holders_of": ["a2"]}, None)
    assert allowed(c) == ["a1", "a2"]
    assert allowed(c, held=["a2"]) == ["a0", "a2"]


def test_the_mask_over_some_rows_is_the_catalog_wide_mask_at_those_rows() -> None:
    c = catalog({"segments": ["vip"]}, {"customer": {"price_sensitivity": {"min": 0.6}}},
                {"context": {"cart_value": {"max": 10}}}, {"basket_has_category": ["fashion"]},
                {"requires": ["a0"]}, None)
    for values, ctx, basket in (({"price_sensitivity": 0.7}, Ctx(cart_value=5.0), [1]),
                                ({"price_sensitivity": 0.1}, Ctx(cart_value=50.0), [0])):
        d = Decision({"segment": "vip"}, values, ctx, np.array(basket, dtype=np.int64), None)
        whole = c.rules.mask(d)
        rows = np.array([5, 1, 3, 2])
        some = c.rules.mask(d, rows=rows)
        assert whole is not None and some is not None
        assert some.tolist() == whole[rows].tolist()


def test_reasons_name_the_first_rule_each_removed_candidate_failed() -> None:
    c = catalog({"segments": ["vip"]}, {"context": {"cart_value": {"min": 50}}}, None)
    d = Decision({"segment": "new"}, {}, Ctx(), np.zeros(0, dtype=np.int64), None)
    assert c.rules.reasons(d, np.arange(3)) == ["rule:segments", "rule:context.cart_value", ""]


@pytest.mark.parametrize(("rules", "message"), [
    ({"segments": ["platinum"]}, "action 'a0' field 'rules.segments': 'platinum' is not one of new"),
    ({"journey_stages": ["bored"]}, "action 'a0' field 'rules.journey_stages': 'bored' is not one of"),
    ({"customer": {"shoe_size": {"min": 3}}},
     "action 'a0' field 'rules.customer.shoe_size': 'shoe_size' is not a customer feature"),
    ({"context": {"weather": {"in": ["sun"]}}},
     "action 'a0' field 'rules.context.weather': 'weather' is not a context field"),
    ({"context": {"cart_value": {"in": ["50"]}}}, "'cart_value' is a number"),
    ({"customer": {"segment": {"min": 1}}}, "'segment' is not a number"),
    ({"basket_has_category": ["toys"]}, "'rules.basket_has_category': 'toys' is not one of"),
    ({"requires": ["nope"]}, "'rules.requires': 'nope' is not an active action"),
    ({"valid": {"timezone": "Mars/Olympus"}}, "action 'a0' field 'rules.valid.timezone'"),
    ({"valid": {"days": ["funday"]}}, "action 'a0' field 'rules.valid.days.0'"),
    ({"segment": ["vip"]}, "action 'a0' field 'rules.segment': Extra inputs are not permitted"),
])
def test_a_rule_naming_what_the_world_lacks_is_refused_naming_action_and_field(
        tmp_path: Path, rules: dict[str, Any], message: str) -> None:
    path = tmp_path / "catalog.json"
    path.write_text(json.dumps({"actions": [{"action_id": "a0", "rules": rules}]}))
    with pytest.raises(ValueError) as caught:
        load_catalog(path, RETAIL)
    assert message in str(caught.value) and str(path) in str(caught.value)
