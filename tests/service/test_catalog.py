"""The catalog file: what is refused at load, and how the error names it."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from features.schema import CATEGORIES
from service.catalog import load_catalog


def write(tmp_path: Path, *actions: dict[str, Any]) -> Path:
    path = tmp_path / "catalog.json"
    path.write_text(json.dumps({"version": "t", "actions": list(actions)}))
    return path


def test_a_valid_catalog_loads(tmp_path: Path) -> None:
    catalog = load_catalog(write(tmp_path, {"action_id": "p1", "category": CATEGORIES[1],
                                            "kind": "offer", "channels": ["pos"]}))
    assert catalog.ids == ["p1"] and catalog.kind == ["offer"]


def test_a_category_outside_the_vocabulary_names_the_action_and_the_field(tmp_path: Path) -> None:
    path = write(tmp_path, {"action_id": "p1", "category": "electronics"},
                 {"action_id": "p2", "category": "toys"})
    with pytest.raises(ValueError) as caught:
        load_catalog(path)
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
        load_catalog(write(tmp_path, {"action_id": "x9", field: value}))


def test_every_problem_is_reported_at_once(tmp_path: Path) -> None:
    with pytest.raises(ValueError) as caught:
        load_catalog(write(tmp_path, {"action_id": "a", "category": "toys", "kind": "voucher"},
                           {"action_id": "b", "category": "garden"}))
    message = str(caught.value)
    assert "'a' field 'kind'" in message and "'a' field 'category'" in message
    assert "'b' field 'category'" in message


def test_an_inactive_action_is_checked_too(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="action 'old' field 'category'"):
        load_catalog(write(tmp_path, {"action_id": "new"},
                           {"action_id": "old", "category": "toys", "active": False}))
