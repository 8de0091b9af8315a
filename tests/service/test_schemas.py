"""The request models follow the world: what a world declares, requests are checked
against, and `/openapi.json` shows."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from fastapi.testclient import TestClient
from pydantic import ValidationError

from features.config import WORLDS_DIR, World
from service.app import create_app
from service.schemas import RequestModels, request_models
from tests.demo_fixtures import DemoDirs, promote
from tests.service.conftest import make_settings


def kiosk_document() -> dict[str, Any]:
    """Retail with a `kiosk` channel, its `lobby` placement and a `weather` context field.

    The model's channel one-hot keeps retail's five channels (a vocabulary of its own);
    its placement one-hot gains `lobby`, so the service needs a model trained for this
    world (`kiosk_client` trains one on the demo's data).
    """
    document: dict[str, Any] = yaml.safe_load((WORLDS_DIR / "retail.yaml").read_text())
    document["channels"].append("kiosk")
    document["placements"]["lobby"] = ["kiosk"]
    document["vocabularies"]["shop_channels"] = ["web", "app", "pos", "call_center", "email"]
    document["vocabularies"]["weathers"] = ["sun", "rain", "snow"]
    document["context"]["weather"] = {"type": "category", "vocabulary": "weathers", "default": "sun"}
    document["context"]["visitors"] = {"type": "number", "min": 0, "max": 500, "default": 1}
    for encoding in document["model"]["context"]:
        if encoding["feature"] == "channel":
            encoding["vocabulary"] = "shop_channels"
    return document


@pytest.fixture(scope="module")
def kiosk() -> RequestModels:
    return request_models(World.model_validate(kiosk_document()))


def test_the_context_has_one_field_per_declared_field_with_its_type_and_default(kiosk: RequestModels) -> None:
    ctx = kiosk.context.model_validate({})
    assert list(kiosk.context.model_fields) == ["store_id", "basket", "device", "cart_value",
                                                "journey_stage", "weather", "visitors"]
    assert (ctx.weather, ctx.visitors, ctx.basket, ctx.device) == ("sun", 1.0, [], None)  # type: ignore[attr-defined]
    assert kiosk.decision.model_validate({"channel": "kiosk", "placement": "lobby",
                                          "context": {"weather": "rain"}}).context.weather == "rain"  # type: ignore[attr-defined]


@pytest.mark.parametrize(("body", "loc", "named"), [
    ({"channel": "tv"}, ("channel",), "'web', 'app', 'pos', 'call_center', 'email' or 'kiosk'"),
    ({"channel": "web", "placement": "attic"}, ("placement",), "'home', 'product'"),
    ({"channel": "kiosk", "placement": "home"}, ("placement",), "its placements are 'lobby'"),
    ({"channel": "web", "context": {"weather": "fog"}}, ("context", "weather"), "'sun', 'rain' or 'snow'"),
    ({"channel": "web", "context": {"visitors": 501}}, ("context", "visitors"), "less than or equal to 500"),
    ({"channel": "web", "context": {"basket": ["a"] * 51}}, ("context", "basket"), "at most 50 items"),
])
def test_a_request_outside_the_world_is_refused_naming_what_is_allowed(
        kiosk: RequestModels, body: dict[str, Any], loc: tuple[str, ...], named: str) -> None:
    with pytest.raises(ValidationError) as caught:
        kiosk.decision.model_validate(body)
    (error,) = caught.value.errors()
    assert error["loc"] == loc and named in error["msg"]


def test_placement_defaults_to_home_only_where_the_world_declares_it() -> None:
    document = kiosk_document()
    retail = request_models(World.model_validate(document))
    assert retail.decision.model_validate({"channel": "web"}).placement == "home"
    del document["placements"]["home"]
    document["model"]["context"] = [e for e in document["model"]["context"] if e["feature"] != "placement"]
    without = request_models(World.model_validate(document))
    with pytest.raises(ValidationError, match="placement\n  Field required"):
        without.decision.model_validate({"channel": "web"})


def test_the_warmup_request_is_valid_for_the_world(kiosk: RequestModels) -> None:
    warmup = kiosk.warmup()
    assert (warmup.channel, warmup.placement) == ("web", "home")


@pytest.fixture(scope="module")
def kiosk_client(demo: DemoDirs, tmp_path_factory: pytest.TempPathFactory) -> Iterator[TestClient]:
    from training.train import train

    root = tmp_path_factory.mktemp("world")
    path: Path = root / "kiosk.yaml"
    path.write_text(yaml.safe_dump(kiosk_document(), sort_keys=False))
    models = root / "models"
    world = World.model_validate(kiosk_document())
    _, manifest = train(demo.data_dir, models, progress=False, world=world)
    dirs = DemoDirs(demo.data_dir, models)
    promote(dirs, manifest.version, world=world)
    with TestClient(create_app(make_settings(dirs, config=path))) as c:
        yield c


def test_the_demo_model_is_refused_for_a_world_it_was_not_trained_for(
        demo: DemoDirs, tmp_path: Path) -> None:
    from service.errors import ModelError

    path = tmp_path / "kiosk.yaml"
    path.write_text(yaml.safe_dump(kiosk_document(), sort_keys=False))
    with pytest.raises(ModelError, match=r"missing \['placement=lobby'\]"), \
            TestClient(create_app(make_settings(demo, config=path))):
        pass


def test_openapi_shows_the_configured_request(kiosk_client: TestClient) -> None:
    schemas = kiosk_client.get("/openapi.json").json()["components"]["schemas"]
    request = schemas["DecisionRequest"]["properties"]
    assert "kiosk" in request["channel"]["enum"] and "lobby" in request["placement"]["enum"]
    weather = schemas["DecisionContext"]["properties"]["weather"]
    assert weather["enum"] == ["sun", "rain", "snow"] and weather["default"] == "sun"
    assert schemas["DecisionContext"]["additionalProperties"] is False


def test_the_service_answers_422_naming_the_allowed_values(kiosk_client: TestClient) -> None:
    r = kiosk_client.post("/v1/decisions", json={"channel": "tv"})
    assert r.status_code == 422 and "'email' or 'kiosk'" in r.json()["message"]
    r = kiosk_client.post("/v1/decisions", json={"channel": "web", "context": {"colour": "red"}})
    assert r.status_code == 422
    assert "body.context.colour: Extra inputs are not permitted" in r.json()["message"]
    assert "'weather', 'visitors'" in r.json()["message"]
    r = kiosk_client.post("/v1/decisions", json={"channel": "web", "context": {"visitors": -1}})
    assert r.status_code == 422 and "body.context.visitors" in r.json()["message"]
    assert "greater than or equal to 0" in r.json()["message"]
    r = kiosk_client.post("/v1/decisions", json={"channel": "pos", "placement": "home"})
    assert r.status_code == 422 and "its placements are 'checkout'" in r.json()["message"]


def test_a_context_field_of_its_own_is_accepted(kiosk_client: TestClient) -> None:
    r = kiosk_client.post("/v1/decisions", json={"channel": "web", "context": {"weather": "rain"}})
    assert r.status_code == 200, r.text
