"""The world configuration: the shipped retail world is today's world, and a bad file
is refused with errors that name the file and the key."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest
import yaml

from features.config import WORLDS_DIR, World, WorldConfigError, load_world, shipped_world
from service.learner import EXPOSURE_CAP, LearningExample, _keys
from service.schemas import request_models
from tests.features import retail_schema as schema
from training.world import SLOTS

RETAIL = WORLDS_DIR / "retail.yaml"


@pytest.fixture(scope="module")
def retail() -> World:
    return shipped_world("retail")


def test_retail_declares_the_vocabularies_the_service_encodes_with(retail: World) -> None:
    assert retail.project == schema.PROJECT
    assert tuple(retail.channels) == schema.CHANNELS
    assert tuple(retail.placements) == schema.PLACEMENTS
    for name, constant in (("devices", schema.DEVICES), ("segments", schema.SEGMENTS),
                           ("journey_stages", schema.JOURNEY_STAGES),
                           ("action_kinds", schema.ACTION_KINDS), ("categories", schema.CATEGORIES)):
        assert tuple(retail.vocabulary(name)) == constant, name


def test_retail_placements_appear_where_the_demo_world_shows_them(retail: World) -> None:
    shown = {(channel, p) for channel, placements in SLOTS.items() for p in placements}
    declared = {(channel, p) for p, channels in retail.placements.items() for channel in channels}
    assert declared == shown


def test_retail_declares_the_feast_views_and_defaults_of_the_schema(retail: World) -> None:
    views = {name: list(view.features.items()) for name, view in retail.feature_views.items()}
    assert views == {**schema.CUSTOMER_VIEWS, **schema.ACTION_VIEWS}
    assert retail.entities["customer"].join_key == schema.CUSTOMER_JOIN_KEY
    assert retail.entities["action"].join_key == schema.ACTION_JOIN_KEY
    assert retail.defaults["customer"] == pytest.approx(schema.CUSTOMER_DEFAULTS)
    assert retail.defaults["action"] == schema.ACTION_DEFAULTS
    assert retail.model.feature_service == schema.FEATURE_SERVICE


def test_retail_encodes_into_todays_model_columns(retail: World) -> None:
    golden = np.load(Path(__file__).parent / "data" / "retail_encoding_golden.npz")
    assert retail.model_columns() == golden["columns"].tolist()


def test_retail_context_is_the_request_context(retail: World) -> None:
    fields = request_models(retail).context.model_fields
    assert list(retail.context) == list(fields)
    basket = retail.context["basket"]
    assert basket.type == "id_list" and basket.max_items == 50
    cart = retail.context["cart_value"]
    assert cart.type == "number" and (cart.min, cart.max, cart.default) == (0, 1_000_000, 0)


def test_retail_learner_crosses_are_the_learners(retail: World) -> None:
    example = LearningExample(action_id="a1", channel="web", placement="home",
                              journey_stage="purchase", offline_logit=0.0, outcome="accept")
    keys = _keys(example, retail.learner.crosses)
    # the learner's keys are the action alone, then the action crossed with each of these
    assert keys == ("a:a1", "a:a1|c:web", "a:a1|p:home", "a:a1|s:purchase")
    assert retail.learner.crosses == ["channel", "placement", "journey_stage"]
    assert retail.learner.group_by == "category"
    assert retail.learner.exposure_cap == EXPOSURE_CAP


# --- the shipped telco world ---------------------------------------------------------------
@pytest.fixture(scope="module")
def telco() -> World:
    return shipped_world("telco")


def test_telco_declares_the_vocabularies_its_truth_draws_from(telco: World, retail: World) -> None:
    from training import telco_world as truth

    assert tuple(telco.channels) == truth.CHANNELS
    assert tuple(telco.placements) == truth.PLACEMENTS
    assert {"retail_store", "sms"} <= set(telco.channels) - set(retail.channels)  # channels of its own
    for name, constant in (("segments", truth.SEGMENTS), ("journey_stages", truth.STAGES),
                           ("action_kinds", truth.KINDS), ("families", truth.FAMILIES),
                           ("call_reasons", truth.CALL_REASONS)):
        assert tuple(telco.vocabulary(name)) == constant, name
    assert telco.action_vocabulary("category") == "families" and len(truth.FAMILIES) >= 8
    assert telco.action_vocabulary("kind") == "action_kinds"
    shown = {(channel, p) for channel, placements in truth.SLOTS.items() for p in placements}
    declared = {(channel, p) for p, channels in telco.placements.items() for channel in channels}
    assert declared == shown


def test_telco_declares_the_features_its_truth_observes(telco: World) -> None:
    from datetime import UTC, datetime

    from training.telco_world import TelcoWorld

    world = TelcoWorld.build(1, 20, datetime(2026, 1, 1, tzinfo=UTC))
    rng = np.random.default_rng(0)
    assert list(world.observe_customers(rng, 0)) == list(telco.features_of("customer"))
    assert list(world.observe_actions(rng)) == list(telco.features_of("action"))
    assert set(telco.defaults["customer"]) == set(telco.features_of("customer"))
    assert set(telco.defaults["action"]) == set(telco.features_of("action"))


def test_telco_lives_apart_from_retail(telco: World, retail: World) -> None:
    assert telco.world == "telco"
    assert telco.project != retail.project  # both can share one Redis
    assert telco.model.feature_service != retail.model.feature_service
    call_reason = telco.context["call_reason"]
    assert call_reason.type == "category" and call_reason.vocabulary == "call_reasons"
    assert "call_reason" not in retail.context and "basket" not in telco.context
    assert telco.learner.crosses == ["channel", "placement", "journey_stage"]
    assert telco.learner.group_by == "category"
    columns = telco.model_columns()
    assert len(columns) == len(set(columns))
    assert {"call_reason=cancel", "kind=retention", "category=handsets", "log_days_to_contract_end",
            "family_affinity", "channel_affinity"} <= set(columns)


# --- refusals -----------------------------------------------------------------------------
def _retail_document() -> dict[str, Any]:
    document: dict[str, Any] = yaml.safe_load(RETAIL.read_text())
    return document


def _refused(tmp_path: Path, document: object) -> str:
    path = tmp_path / "world.yaml"
    path.write_text(yaml.safe_dump(document) if not isinstance(document, str) else document)
    with pytest.raises(WorldConfigError) as caught:
        load_world(path)
    message = str(caught.value)
    assert str(path) in message
    return message


def test_an_unknown_key_is_named(tmp_path: Path) -> None:
    document = _retail_document()
    document["context"]["cart_value"]["maximum"] = 10
    assert "context.cart_value.number.maximum: Extra inputs are not permitted" in _refused(tmp_path, document)


def test_a_placement_on_an_undeclared_channel_is_named(tmp_path: Path) -> None:
    document = _retail_document()
    document["placements"]["checkout"] = ["pos", "kiosk"]
    assert "placements.checkout: channel 'kiosk' is not in channels" in _refused(tmp_path, document)


def test_a_one_hot_over_an_undeclared_vocabulary_is_named(tmp_path: Path) -> None:
    document = _retail_document()
    document["model"]["action"][1]["vocabulary"] = "families"
    message = _refused(tmp_path, document)
    assert "model.action.1.vocabulary: 'families' is not a declared vocabulary" in message


def test_an_encoding_of_an_undeclared_feature_is_named(tmp_path: Path) -> None:
    document = _retail_document()
    document["model"]["customer"][0]["feature"] = "tenure_months"
    assert "model.customer.0.feature: 'tenure_months' is not a customer feature" in _refused(tmp_path, document)


def test_a_default_outside_its_bounds_or_vocabulary_is_named(tmp_path: Path) -> None:
    document = _retail_document()
    document["context"]["cart_value"]["default"] = -1
    assert "context.cart_value.number: default -1.0 is outside [0.0, 1000000.0]" in _refused(tmp_path, document)
    document = _retail_document()
    document["context"]["device"]["default"] = "watch"
    assert "context.device.default: 'watch' is not in vocabulary 'devices'" in _refused(tmp_path, document)


def test_a_wrong_type_is_named(tmp_path: Path) -> None:
    document = _retail_document()
    document["feature_views"]["customer_profile"]["features"]["recency_days"] = "double"
    message = _refused(tmp_path, document)
    assert "feature_views.customer_profile.features.recency_days: Input should be 'string', 'float' or 'int'" \
        in message


def test_several_problems_are_reported_together(tmp_path: Path) -> None:
    document = _retail_document()
    document["placements"]["inbox"] = ["sms"]
    document["defaults"]["customer"]["tenure_months"] = 3
    message = _refused(tmp_path, document)
    assert "placements.inbox: channel 'sms' is not in channels" in message
    assert "defaults.customer.tenure_months: no feature view of 'customer' has it" in message


def test_not_yaml_not_a_mapping_and_no_file(tmp_path: Path) -> None:
    assert "not valid YAML" in _refused(tmp_path, "channels: [web\n")
    assert "expected a mapping of keys at the top, got list" in _refused(tmp_path, "- web\n")
    with pytest.raises(WorldConfigError, match="no such world configuration file"):
        load_world(tmp_path / "missing.yaml")
