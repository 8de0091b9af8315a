"""The catalog file: what is refused at load, and how the error names it."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from features.config import World, shipped_world
from service.catalog import Catalog, load_catalog
from tests.features.retail_schema import CATEGORIES

RETAIL = shipped_world("retail")


def write(tmp_path: Path, *actions: dict[str, Any]) -> Path:
    path = tmp_path / "catalog.json"
    path.write_text(json.dumps({"version": "t", "actions": list(actions)}))
    return path


def load(path: Path, world: World = RETAIL) -> Catalog:
    return load_catalog(path, world)


def test_a_valid_catalog_loads(tmp_path: Path) -> None:
    catalog = load(write(tmp_path, {"action_id": "p1", "category": CATEGORIES[1],
                                            "kind": "offer", "channels": ["pos"]}))
    assert catalog.ids == ["p1"] and catalog.kind == ["offer"]


def test_a_category_outside_the_vocabulary_names_the_action_and_the_field(tmp_path: Path) -> None:
    path = write(tmp_path, {"action_id": "p1", "category": "electronics"},
                 {"action_id": "p2", "category": "toys"})
    with pytest.raises(ValueError) as caught:
        load(path)
    message = str(caught.value)
    assert str(path) in message
    assert "action 'p2' field 'category': 'toys' is not one of " + ", ".join(CATEGORIES) in message
    assert "'p1'" not in message


@pytest.mark.parametrize(("field", "value", "shown"), [
    ("kind", "voucher", "'voucher'"),
    ("channels", ["web", "kiosk", "sms"], "'kiosk', 'sms'"),
])
def test_kind_and_channels_outside_their_vocabularies(tmp_path: Path, field: str, value: object,
                                                      shown: str) -> None:
    with pytest.raises(ValueError, match=f"action 'x9' field '{field}': {shown} is not one of"):
        load(write(tmp_path, {"action_id": "x9", field: value}))


def test_every_problem_is_reported_at_once(tmp_path: Path) -> None:
    with pytest.raises(ValueError) as caught:
        load(write(tmp_path, {"action_id": "a", "category": "toys", "kind": "voucher"},
                           {"action_id": "b", "category": "garden"}))
    message = str(caught.value)
    assert "'a' field 'kind'" in message and "'a' field 'category'" in message
    assert "'b' field 'category'" in message


def test_an_inactive_action_is_checked_too(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="action 'old' field 'category'"):
        load(write(tmp_path, {"action_id": "new"},
                           {"action_id": "old", "category": "toys", "active": False}))


def test_placements_must_be_declared(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="action 'x9' field 'placements': 'kiosk' is not one of home, "):
        load(write(tmp_path, {"action_id": "x9", "placements": ["home", "kiosk"]}))


def test_left_out_kind_and_category_are_the_worlds_action_defaults(tmp_path: Path) -> None:
    catalog = load(write(tmp_path, {"action_id": "p1"}))
    assert (catalog.actions[0].kind, catalog.actions[0].category) == ("product", "electronics")


def _world(**changes: object) -> World:
    """Retail with its own vocabularies and encodings, as a configuration file would say."""
    document = RETAIL.model_dump(mode="json")
    document["vocabularies"]["categories"] = ["toys", "books"]
    document["channels"] = [*document["channels"], "kiosk"]
    document["placements"]["lobby"] = ["kiosk"]
    for key, value in changes.items():
        document["model"]["action"] = [
            {**e, "unknown": value} if e.get("feature") == key else e
            for e in document["model"]["action"]]
    document["defaults"]["action"]["category"] = "toys"
    return World.model_validate(document)


def test_the_vocabularies_are_the_worlds(tmp_path: Path) -> None:
    world = _world()
    catalog = load(write(tmp_path, {"action_id": "k1", "category": "books", "channels": ["kiosk"],
                                    "placements": ["lobby"]}), world)
    assert catalog.actions[0].category == "books"
    assert catalog.context_weight("kiosk").tolist() == [1.0]
    with pytest.raises(ValueError, match="action 'e1' field 'category': 'electronics' is not one of toys, books"):
        load(write(tmp_path, {"action_id": "e1", "category": "electronics"}), world)


def test_an_encoding_that_maps_unknowns_to_other_accepts_them(tmp_path: Path) -> None:
    world = _world(category="other")
    catalog = load(write(tmp_path, {"action_id": "e1", "category": "electronics"}), world)
    assert catalog.actions[0].category == "electronics"
    with pytest.raises(ValueError, match="action 'e1' field 'kind': 'voucher'"):
        load(write(tmp_path, {"action_id": "e1", "category": "electronics", "kind": "voucher"}), world)


def _spec(*actions: dict[str, Any]) -> Any:
    from service.catalog import parse_catalog

    return parse_catalog(json.dumps({"actions": list(actions)}))


def test_a_new_version_keeps_the_rows_of_the_one_before_and_appends() -> None:
    first = Catalog(_spec({"action_id": "a"}, {"action_id": "b"}, {"action_id": "c"}), RETAIL)
    second = Catalog(_spec({"action_id": "c", "value": 9.0}, {"action_id": "d"},
                           {"action_id": "a", "active": False}), RETAIL, first, version="2")
    assert second.ids == ["a", "b", "c", "d"] and second.version == "2"
    assert second.live.tolist() == [False, False, True, True]
    assert second.index == {"c": 2, "d": 3}
    assert second.value.tolist()[2:] == [9.0, 1.0]
    assert second.candidates("web", "home").tolist() == [2, 3]
    third = Catalog(_spec({"action_id": "b"}), RETAIL, second)  # b comes back to its row
    assert third.ids == second.ids and third.index == {"b": 1}


def test_a_retired_row_carries_no_rules_caps_or_budget() -> None:
    first = Catalog(_spec({"action_id": "a", "budget": {"limit": 1}, "exclusion_group": "g",
                           "contact": {"once": True}}, {"action_id": "b"}), RETAIL)
    second = Catalog(_spec({"action_id": "b"}), RETAIL, first)
    assert first.limits.active and not second.limits.active
    assert second.actions[0].exclusion_group is None and second.constraints is None


def test_duplicate_ids_name_the_action_and_the_field(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="action 'a' field 'action_id': appears more than once"):
        load(write(tmp_path, {"action_id": "a"}, {"action_id": "a", "active": False}))
