"""API keys: formats, hashing, scopes per path (401/403), the key file and its reload."""

from __future__ import annotations

import hashlib
import json
import time
from collections.abc import Callable
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from service.access import (
    ANY_KEY,
    DEFAULT_SCOPES,
    AccessConfigError,
    AccessPolicy,
    KeyRing,
    KeySource,
    RateLimit,
    parse_env,
    parse_file,
)
from service.app import create_app
from service.settings import Settings
from tests.demo_fixtures import DemoDirs
from tests.service.conftest import make_settings

DECISION = {"channel": "web", "placement": "home", "limit": 2}
SHOP, TILL, OPS, GRAFANA = "shop-secret-1", "till-secret-2", "ops-secret-3", "grafana-secret-4"
STRUCTURED = (f"shop:{SHOP}:decide+feedback,till:{TILL}:decide:50/100,ops:{OPS}:admin,"
              f"grafana:{GRAFANA}:read")


def h(key: str) -> dict[str, str]:
    return {"X-API-Key": key}


# --- formats ------------------------------------------------------------------------

def test_the_original_form_gives_decide_and_feedback_and_no_limit() -> None:
    keys = parse_env(" k1 , k2,,")
    assert [(k.name, k.scopes, k.rate_limit) for k in keys] == [
        ("key-1", DEFAULT_SCOPES, None), ("key-2", DEFAULT_SCOPES, None)]
    assert keys[0].digest == hashlib.sha256(b"k1").digest()


def test_the_structured_form_names_scopes_and_limits() -> None:
    keys = {k.name: k for k in parse_env(STRUCTURED)}
    assert keys["till"].scopes == {"decide"} and keys["till"].rate_limit == RateLimit(50.0, 100)
    assert keys["ops"].scopes == {"admin"} and keys["ops"].rate_limit is None
    assert parse_env("a:s:decide:2.5")[0].rate_limit == RateLimit(2.5, 3)  # burst defaults to the rate


@pytest.mark.parametrize(("text", "needle"), [
    ("a:s", "NEXTBEST_API_KEYS entry 1: expected SECRET or NAME:SECRET"),
    ("ok, a:s:decide:1:2", "entry 2: expected"),
    ("a:s:decide+write", "entry 1: unknown scope(s) 'write'; the scopes are decide, feedback, admin, read"),
    ("a:s:decide:0", "the rate must be above 0"),
    ("a:s:decide:fast", "'fast' is not RATE or RATE/BURST"),
    ("a:s:decide:5/0", "the burst at least 1"),
])
def test_bad_entries_are_refused_naming_the_entry_not_the_key(text: str, needle: str) -> None:
    with pytest.raises(AccessConfigError) as err:
        KeySource(text, None)
    assert needle in str(err.value)
    assert ":s:" not in str(err.value) and "'s'" not in str(err.value)


def test_key_files_take_keys_or_their_digests() -> None:
    text = f"""
keys:
  - {{name: shop, key: {SHOP}, scopes: [decide, feedback], rate_limit: {{per_second: 10}}}}
  - name: ops
    sha256: {hashlib.sha256(OPS.encode()).hexdigest()}
    scopes: [admin]
"""
    ring = KeyRing(parse_file(text, "keys.yaml"))
    shop, ops = ring.find(SHOP.encode()), ring.find(OPS.encode())
    assert shop is not None and shop.name == "shop" and shop.rate_limit == RateLimit(10.0, 10)
    assert ops is not None and ops.scopes == {"admin"}
    assert ring.find(b"nope") is None and ring.find(b"") is None
    # JSON is YAML too.
    as_json = json.dumps({"keys": [{"name": "a", "key": "k", "scopes": ["read"]}]})
    assert parse_file(as_json, "keys.json")[0].scopes == {"read"}


@pytest.mark.parametrize(("text", "needle"), [
    ("keys: [{name: a, scopes: [decide]}]", "keys.0: Value error, give exactly one of `key`"),
    ("keys: [{name: a, key: k, sha256: " + "a" * 64 + ", scopes: [decide]}]", "exactly one of"),
    ("keys: [{name: a, sha256: abc, scopes: [decide]}]", "keys.0.sha256: String should match"),
    ("keys: [{name: a, key: k, scopes: [root]}]", "keys.0.scopes: Value error, unknown scope(s) 'root'"),
    ("keys: [{name: a, key: k, scopes: []}]", "keys.0.scopes: List should have at least 1 item"),
    ("keys: [{name: a, key: k, scope: [decide]}]", "keys.0.scope: Extra inputs are not permitted"),
    ("keys: [{name: a, key: k, scopes: [decide], rate_limit: {per_second: -1}}]",
     "keys.0.rate_limit.per_second: Input should be greater than 0"),
    ("keys: [{name: a, key: k, scopes: [decide]", "not valid YAML or JSON"),
    ("", "keys: Field required"),
])
def test_bad_key_files_are_refused_naming_the_field_not_the_key(text: str, needle: str) -> None:
    with pytest.raises(AccessConfigError) as err:
        parse_file(text, "keys.yaml")
    assert needle in str(err.value) and str(err.value).startswith("keys.yaml: ")
    assert "key: k" not in str(err.value) and "'k'" not in str(err.value)


def test_names_and_keys_are_unique() -> None:
    with pytest.raises(AccessConfigError, match="two keys are named 'a'"):
        KeySource("a:k1:decide,a:k2:decide", None)
    with pytest.raises(AccessConfigError, match="keys 'a' and 'b' are the same key"):
        KeySource("a:k1:decide,b:k1:decide", None)


def test_only_digests_are_held() -> None:
    source = KeySource(STRUCTURED, None)
    for key in [source.ring.find(s.encode()) for s in (SHOP, TILL, OPS, GRAFANA)]:
        assert key is not None
        held = [str(v) for v in vars(key).values()]
        assert not any(s in v for v in held for s in (SHOP, TILL, OPS, GRAFANA)), held
        assert SHOP not in repr(key) and "digest" not in repr(key)


def test_the_policy_maps_paths_to_scopes() -> None:
    policy = AccessPolicy({"/v1/models/": "admin", "/v1/report": "read"})
    assert policy.scope_for("/v1/decisions") == "decide"
    assert policy.scope_for("/v1/feedback") == "feedback"
    assert policy.scope_for("/v1/admin/catalog") == "admin"
    assert policy.scope_for("/v1/models/x/promote") == "admin"
    assert policy.scope_for("/v1/report") == "read"
    assert policy.scope_for("/v1/anything") == ANY_KEY
    for path in ("/healthz", "/readyz", "/metrics", "/docs", "/openapi.json", "/"):
        assert policy.scope_for(path) is None
    protected = AccessPolicy(protect_read=True)
    assert [protected.scope_for(p) for p in ("/metrics", "/docs", "/openapi.json", "/readyz")] == [
        "read", "read", "read", None]
    with pytest.raises(AccessConfigError, match="unknown scope"):
        AccessPolicy({"/v1/x": "superuser"})


def test_production_takes_a_key_file_alone(tmp_path: Path) -> None:
    keys = tmp_path / "keys.yaml"
    s = Settings(env="production", redis_url="redis://127.0.0.1:1/0", api_keys_file=keys)
    assert s.access_configured
    with pytest.raises(ValueError, match="NEXTBEST_API_KEYS or NEXTBEST_API_KEYS_FILE"):
        Settings(env="production", redis_url="redis://127.0.0.1:1/0", api_keys=" , ")


# --- over HTTP ------------------------------------------------------------------------

def test_keys_without_scopes_can_decide_and_give_feedback(demo: DemoDirs) -> None:
    with TestClient(create_app(make_settings(demo, api_keys="k1,k2"))) as c:
        assert c.post("/v1/decisions", json=DECISION, headers=h("k2")).status_code == 200
        r = c.post("/v1/feedback", json={"events": []}, headers=h("k1"))
        assert r.status_code == 422  # past the key check: an empty batch is invalid


def test_401_says_what_is_missing_and_403_which_scope(demo: DemoDirs) -> None:
    app = create_app(make_settings(demo, api_keys=STRUCTURED))

    @app.get("/v1/admin/ping")
    async def ping() -> dict[str, bool]:
        return {"admin": True}

    with TestClient(app) as c:
        r = c.post("/v1/decisions", json=DECISION)
        assert r.status_code == 401
        assert r.json() == {"error": "unauthorized", "message": "missing X-API-Key header"}
        r = c.post("/v1/decisions", json=DECISION, headers=h("guess"))
        assert r.status_code == 401
        assert r.json()["message"] == "the X-API-Key header holds no key in force"
        assert "guess" not in r.text

        r = c.post("/v1/feedback", json={"events": []}, headers=h(TILL))
        assert r.status_code == 403
        assert r.json() == {"error": "forbidden", "message":
                            "key 'till' lacks the scope 'feedback' this path needs (it has decide)"}
        assert TILL not in r.text
        assert c.post("/v1/decisions", json=DECISION, headers=h(TILL)).status_code == 200

        assert c.get("/v1/admin/ping", headers=h(OPS)).json() == {"admin": True}
        for key in (SHOP, TILL, GRAFANA):
            assert c.get("/v1/admin/ping", headers=h(key)).status_code == 403
        assert c.post("/v1/decisions", json=DECISION, headers=h(OPS)).status_code == 403
        # A /v1 path nobody serves: a key first (any scope), then 404.
        assert c.get("/v1/nothing").status_code == 401
        assert c.get("/v1/nothing", headers=h(GRAFANA)).status_code == 404
        # Probes, metrics and docs stay open by default.
        for path in ("/healthz", "/readyz", "/metrics", "/docs", "/openapi.json"):
            assert c.get(path).status_code == 200, path
        metrics = c.get("/metrics").text
        assert "nextbest_api_keys 4.0" in metrics
        assert 'nextbest_errors_total{endpoint="/v1/feedback",status="403"} 1.0' in metrics


def test_a_route_can_require_a_scope(demo: DemoDirs) -> None:
    app = create_app(make_settings(demo, api_keys=STRUCTURED), route_scopes={"/v1/special": "admin"})

    @app.put("/v1/special")
    async def put_special() -> dict[str, str]:
        return {"special": "done"}

    with TestClient(app) as c:
        assert c.put("/v1/special", headers=h(SHOP)).status_code == 403
        assert c.put("/v1/special", headers=h(OPS)).json() == {"special": "done"}


def test_protected_read_needs_the_read_scope(demo: DemoDirs) -> None:
    with TestClient(create_app(make_settings(demo, api_keys=STRUCTURED, protect_read=True))) as c:
        for path in ("/metrics", "/docs", "/openapi.json"):
            assert c.get(path).status_code == 401, path
            assert c.get(path, headers=h(SHOP)).status_code == 403, path
            assert c.get(path, headers=h(GRAFANA)).status_code == 200, path
        assert c.get("/healthz").status_code == 200 and c.get("/readyz").status_code == 200


def write_keys(path: Path, entries: dict[str, str]) -> None:
    """Replace the key file as Kubernetes does: a new file moved over the old one."""
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps({"keys": [{"name": n, "key": k, "scopes": ["decide"]}
                                        for n, k in entries.items()]}))
    tmp.replace(path)


def wait_for(predicate: Callable[[], bool], seconds: float) -> float:
    start = time.monotonic()
    while not predicate():
        if time.monotonic() - start > seconds:
            raise AssertionError(f"not within {seconds} s")
        time.sleep(0.02)
    return time.monotonic() - start


def test_the_key_file_is_reloaded_without_a_restart(demo: DemoDirs, tmp_path: Path) -> None:
    keys = tmp_path / "keys.json"
    write_keys(keys, {"old": "old-secret"})
    reload_seconds = 0.2
    settings = make_settings(demo, api_keys_file=keys, api_keys_reload_seconds=reload_seconds)
    with TestClient(create_app(settings)) as c:
        def status(key: str) -> int:
            return c.post("/v1/decisions", json=DECISION, headers=h(key)).status_code

        assert status("old-secret") == 200 and status("new-secret") == 401
        # Rotation: both during the overlap, then the old one goes.
        write_keys(keys, {"old": "old-secret", "new": "new-secret"})
        took = wait_for(lambda: status("new-secret") == 200, 5 * reload_seconds)
        assert took <= reload_seconds + 0.5
        assert status("old-secret") == 200
        write_keys(keys, {"new": "new-secret"})
        wait_for(lambda: status("old-secret") == 401, 5 * reload_seconds)
        assert status("new-secret") == 200

        # A broken file keeps the keys in force, and says so.
        keys.write_text("keys: [{name: new, key: oops")
        wait_for(lambda: 'nextbest_api_key_reloads_total{result="failed"} 1.0'
                 in c.get("/metrics").text, 5 * reload_seconds)
        assert status("new-secret") == 200
        metrics = c.get("/metrics").text
        assert 'nextbest_api_key_reloads_total{result="ok"} 2.0' in metrics
        assert "nextbest_api_keys 1.0" in metrics


def test_environment_keys_stay_next_to_the_file(demo: DemoDirs, tmp_path: Path) -> None:
    keys = tmp_path / "keys.json"
    write_keys(keys, {"file": "file-secret"})
    with TestClient(create_app(make_settings(demo, api_keys="env-secret", api_keys_file=keys))) as c:
        for key in ("env-secret", "file-secret"):
            assert c.post("/v1/decisions", json=DECISION, headers=h(key)).status_code == 200


def test_unusable_keys_refuse_to_start(demo: DemoDirs, tmp_path: Path) -> None:
    with pytest.raises(AccessConfigError, match="cannot be read"):
        create_app(make_settings(demo, api_keys_file=tmp_path / "missing.yaml"))
    bad = tmp_path / "bad.yaml"
    bad.write_text("keys: [{name: a, key: k, scopes: [everything]}]")
    with pytest.raises(AccessConfigError, match="unknown scope"):
        create_app(make_settings(demo, api_keys_file=bad))


def test_the_catalog_admin_api_needs_the_admin_scope_and_audits_the_key(
        demo: DemoDirs, tmp_path: Path) -> None:
    """The admin routes (service/admin_api.py) are admin-scoped, and an admin change is
    recorded in the audit trail under the key's name."""
    keys = "shop:s3cret-shop:decide+feedback,ops:s3cret-ops:admin"
    catalog = tmp_path / "catalog.json"  # the versions live next to it: not the shared demo's
    catalog.write_bytes((demo.data_dir / "catalog.json").read_bytes())
    with TestClient(create_app(make_settings(demo, api_keys=keys, catalog_path=catalog))) as client:
        shop, ops = {"X-API-Key": "s3cret-shop"}, {"X-API-Key": "s3cret-ops"}
        assert client.get("/v1/actions", headers=shop).status_code == 403
        assert client.get("/v1/catalog/audit", headers=shop).status_code == 403
        assert client.post("/v1/decisions/batch", json={"requests": []}, headers=ops).status_code == 403
        listed = client.get("/v1/actions", headers=ops)
        assert listed.status_code == 200
        action = listed.json()["actions"][0]
        changed = client.put(f"/v1/actions/{action['action_id']}", headers=ops,
                             json={**action, "lever": 1.5})
        assert changed.status_code == 200, changed.text
        audit = client.get("/v1/catalog/audit", headers=ops).json()
        assert audit["entries"][0]["by"] == "ops"  # newest first
