"""The catalog admin API through HTTP, on both state backends: reads, changes, the errors
(naming the action and the field, 404, 412 on a stale If-Match), the audit trail, and
the change serving in decisions without a restart: a new action offered, a deleted one
never again, learned state kept for the actions that stayed."""

from __future__ import annotations

import json
import shutil
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient

from service.app import create_app
from service.settings import Settings
from tests.demo_fixtures import DemoDirs, clear_service_state

NEW = {"action_id": "n001", "name": "new offer", "kind": "offer", "category": "electronics",
       "value": 500.0, "lever": 50.0, "channels": ["web"], "placements": ["home"]}


@pytest.fixture
def catalog_path(demo: DemoDirs, tmp_path: Path) -> Path:
    path = tmp_path / "catalog.json"
    shutil.copy(demo.data_dir / "catalog.json", path)
    return path


@pytest.fixture
def settings(backend_settings: Settings, catalog_path: Path) -> Iterator[Settings]:
    yield backend_settings.model_copy(update={"catalog_path": catalog_path,
                                              "catalog_watch_seconds": 0.1})
    if backend_settings.redis_url:  # the next test imports its own file
        clear_service_state(backend_settings.redis_url, cluster=backend_settings.redis_cluster)


@pytest.fixture
def api(settings: Settings) -> Iterator[TestClient]:
    with TestClient(create_app(settings)) as c:
        yield c


def decide(client: TestClient, **body: Any) -> dict[str, Any]:
    r = client.post("/v1/decisions", json={"customer_id": "c00001", "channel": "web",
                                           "placement": "home", "limit": 3, **body})
    assert r.status_code == 200, r.text
    return r.json()


def serving(client: TestClient, version: int, timeout: float = 5.0) -> dict[str, Any]:
    """The first decision that reports catalog `version` (fails after `timeout`)."""
    deadline = time.monotonic() + timeout
    while True:
        d = decide(client)
        if d["model_versions"]["catalog"] == str(version):
            return d
        assert time.monotonic() < deadline, f"still serving {d['model_versions']['catalog']}"
        time.sleep(0.02)


def test_reads_name_the_version_in_the_body_and_the_etag(api: TestClient, catalog_path: Path) -> None:
    actions = api.get("/v1/actions")
    assert actions.status_code == 200 and actions.headers["etag"] == '"1"'
    ids = [a["action_id"] for a in actions.json()["actions"]]
    assert ids == [a["action_id"] for a in json.loads(catalog_path.read_text())["actions"]]
    one = api.get(f"/v1/actions/{ids[0]}")
    assert one.status_code == 200 and one.json() == {"version": 1, "action": actions.json()["actions"][0]}
    whole = api.get("/v1/catalog").json()
    assert (whole["version"], whole["serving"]) == (1, "1")
    assert whole["updated_by"] == f"file {catalog_path}"
    assert whole["document"]["actions"] == actions.json()["actions"]
    missing = api.get("/v1/actions/nope")
    assert missing.status_code == 404 and missing.json()["error"] == "unknown_action"


def test_an_added_action_is_offered_without_a_restart(api: TestClient) -> None:
    assert all(a["action_id"] != "n001" for a in decide(api)["actions"])
    r = api.put("/v1/actions/n001", json={k: v for k, v in NEW.items() if k != "action_id"})
    assert r.status_code == 201, r.text
    assert r.headers["etag"] == '"2"' and r.json()["changed"] is True
    assert r.json()["audit"]["changes"]["added"] == ["n001"]
    d = serving(api, 2)
    assert d["actions"][0]["action_id"] == "n001"  # its lever puts it first
    again = api.put("/v1/actions/n001", json=NEW)
    assert again.status_code == 200 and again.json() == {
        "version": 2, "sha256": r.json()["sha256"], "changed": False, "audit": None}


def test_a_deleted_action_is_never_offered_again(api: TestClient) -> None:
    api.put("/v1/actions/n001", json=NEW)
    assert serving(api, 2)["actions"][0]["action_id"] == "n001"
    r = api.delete("/v1/actions/n001")
    assert r.status_code == 200 and r.json()["audit"]["changes"]["removed"] == ["n001"]
    serving(api, 3)
    for _ in range(20):
        assert all(a["action_id"] != "n001" for a in decide(api)["actions"])
    asked = api.post("/v1/decisions", json={"customer_id": "c00001", "channel": "web",
                                            "placement": "home", "candidates": ["n001"]})
    assert asked.status_code == 422 and asked.json()["error"] == "unknown_candidates"
    assert api.delete("/v1/actions/n001").status_code == 404
    # back again: it gets its row (and what was learned for it) back
    assert api.put("/v1/actions/n001", json=NEW).status_code == 201
    assert serving(api, 4)["actions"][0]["action_id"] == "n001"


def test_learned_state_stays_with_its_action_across_versions(api: TestClient) -> None:
    runtime = api.app.state.runtime  # type: ignore[attr-defined]
    learner = runtime.engine.learner
    row = runtime.engine.catalog.index["p001"]
    learner.model._weights["a:p001"] = 0.75
    learner.publish()
    api.put("/v1/actions/n001", json=NEW)
    api.delete("/v1/actions/p002")
    serving(api, 3)
    catalog = runtime.engine.catalog
    assert catalog.index["p001"] == row and "p002" not in catalog.index
    assert learner.weights.action[row] == 0.75
    assert len(learner.weights.action) == len(catalog) and catalog.ids[-1] == "n001"
    assert runtime.action_cache.matrix is not None
    assert runtime.action_cache.matrix.ids == catalog.ids


@pytest.mark.parametrize(("path", "body", "message"), [
    ("/v1/actions/p001", {"value": -1}, "action 'p001' field 'value': Input should be greater than or equal to 0"),
    ("/v1/actions/p001", {"channels": ["web", "kiosk"]}, "action 'p001' field 'channels': 'kiosk' is not one of"),
    ("/v1/actions/p001", {"category": "toys"}, "action 'p001' field 'category': 'toys' is not one of"),
    ("/v1/actions/p001", {"action_id": "p002"}, "action 'p001' field 'action_id': the body names 'p002'"),
    ("/v1/actions/p001", {"rules": {"segments": ["platinum"]}}, "action 'p001'"),
    ("/v1/actions/p001", {"budget": {"limit": 5, "per": "week"}}, "action 'p001' field 'budget.per'"),
    ("/v1/catalog", {"actions": [{"action_id": "a"}, {"action_id": "b", "lever": -2}]},
     "action 'b' field 'lever'"),
    ("/v1/catalog", {"actions": [{"action_id": "a"}, {"action_id": "a"}]},
     "action 'a' field 'action_id': appears more than once"),
])
def test_invalid_changes_name_the_action_and_the_field(api: TestClient, path: str,
                                                       body: dict[str, Any], message: str) -> None:
    r = api.put(path, json=body)
    assert r.status_code == 422, r.text
    assert r.json()["error"] == "invalid_catalog" and message in r.json()["message"], r.json()
    assert api.get("/v1/catalog").json()["version"] == 1  # nothing written


def test_a_body_that_is_not_json_is_422(api: TestClient) -> None:
    r = api.put("/v1/actions/p001", content=b"{not json", headers={"content-type": "application/json"})
    assert r.status_code == 422 and r.json()["error"] == "invalid_catalog"
    r = api.put("/v1/catalog", content=b"[]", headers={"content-type": "application/json"})
    assert r.status_code == 422 and r.json()["error"] == "invalid_catalog"


def test_a_stale_if_match_is_refused_with_412(api: TestClient) -> None:
    document = api.get("/v1/catalog").json()["document"]
    assert api.put("/v1/actions/n001", json=NEW, headers={"if-match": '"1"'}).status_code == 201
    stale = api.put("/v1/catalog", json=document, headers={"if-match": '"1"'})
    assert stale.status_code == 412 and stale.json()["error"] == "version_mismatch"
    assert api.delete("/v1/actions/n001", headers={"if-match": '"1"'}).status_code == 412
    fresh = api.put("/v1/catalog", json=document, headers={"if-match": '"2"'})
    assert fresh.status_code == 200 and fresh.json()["version"] == 3
    assert fresh.json()["audit"]["changes"]["removed"] == ["n001"]
    assert api.put("/v1/catalog", json=document, headers={"if-match": "seven"}).status_code == 422


def test_a_whole_catalog_replace_serves_and_is_audited(api: TestClient) -> None:
    document = api.get("/v1/catalog").json()["document"]
    kept = [a for a in document["actions"] if a["action_id"].startswith("p")][:5]
    r = api.put("/v1/catalog", json={**document, "actions": [*kept, NEW]})
    assert r.status_code == 200 and r.json()["version"] == 2
    d = serving(api, 2)
    assert {a["action_id"] for a in d["actions"]} <= {a["action_id"] for a in [*kept, NEW]}
    entries = api.get("/v1/catalog/audit").json()
    assert [e["version"] for e in entries["entries"]] == [2, 1]
    newest = entries["entries"][0]
    assert newest["by"] == "anonymous" and newest["operation"] == "put_catalog"
    assert newest["changes"]["counts"]["removed"] == len(document["actions"]) - 5
    assert entries["entries"][1]["operation"] == "import"
    page = api.get("/v1/catalog/audit", params={"limit": 1}).json()
    assert [e["version"] for e in page["entries"]] == [2] and page["next_before"] == 2
    rest = api.get("/v1/catalog/audit", params={"limit": 1, "before": 2}).json()
    assert [e["version"] for e in rest["entries"]] == [1] and rest["next_before"] is None


def test_changes_survive_a_restart_and_a_changed_file_is_imported(settings: Settings,
                                                                  catalog_path: Path) -> None:
    with TestClient(create_app(settings)) as first:
        assert first.put("/v1/actions/n001", json=NEW).status_code == 201
    with TestClient(create_app(settings)) as second:  # the same file: not imported again
        assert second.get("/v1/catalog").json()["version"] == 2
        assert second.get("/v1/actions/n001").status_code == 200
    document = json.loads(catalog_path.read_text())
    document["actions"] = document["actions"][:3]
    catalog_path.write_text(json.dumps(document))
    with TestClient(create_app(settings)) as third:  # a new file: a new version
        whole = third.get("/v1/catalog").json()
        assert whole["version"] == 3 and len(whole["document"]["actions"]) == 3
        assert third.get("/v1/catalog/audit").json()["entries"][0]["operation"] == "import"
