"""Logs: JSON lines with the request id, customer ids hashed, no key or secret ever."""

from __future__ import annotations

import asyncio
import io
import json
import logging
import re
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient

from service import logs
from service.app import HTTPMetrics, create_app
from service.logs import JsonFormatter
from service.metrics import Metrics
from tests.demo_fixtures import DemoDirs
from tests.service.conftest import make_settings

SALT = "test-salt"
ENV_SECRET, FILE_SECRET, LIMITED_SECRET = "env-secret-7f3a", "file-secret-91bc", "limited-secret-4d2e"
CUSTOMER = "c00001"
OURS = re.compile(r"[0-9a-f]{8}-[0-9a-f]+")  # the ids the service makes


class Lines:
    """The JSON lines the root logger wrote while installed, through the service's formatter."""

    def __init__(self) -> None:
        self.stream = io.StringIO()

    @property
    def text(self) -> str:
        return self.stream.getvalue()

    def all(self) -> list[dict[str, Any]]:
        return [json.loads(line) for line in self.text.splitlines()]

    def requests(self) -> list[dict[str, Any]]:
        return [line for line in self.all() if line["msg"] == "request"]


@pytest.fixture
def lines() -> Iterator[Lines]:
    out = Lines()
    handler = logging.StreamHandler(out.stream)
    handler.setFormatter(JsonFormatter(salt=SALT))
    root = logging.getLogger()
    level = root.level
    root.addHandler(handler)
    root.setLevel(logging.INFO)
    yield out
    root.removeHandler(handler)
    root.setLevel(level)


def test_request_ids_are_echoed_or_made(demo: DemoDirs) -> None:
    with TestClient(create_app(make_settings(demo))) as c:
        r = c.post("/v1/decisions", json={"channel": "web"}, headers={"X-Request-ID": "shop-42.a:b_c"})
        assert r.headers["X-Request-ID"] == "shop-42.a:b_c"
        made = {c.get("/healthz").headers["X-Request-ID"] for _ in range(3)}
        assert len(made) == 3
        # Not plausible as an id (spaces, too long): replaced by one of ours.
        for bad in ("two words", "x" * 129, "<script>"):
            echoed = c.get("/healthz", headers={"X-Request-ID": bad}).headers["X-Request-ID"]
            assert echoed != bad and OURS.fullmatch(echoed), echoed
        assert c.post("/v1/feedback", json={}).headers["X-Request-ID"]  # errors too


def test_customer_ids_are_hashed_with_the_salt() -> None:
    hashed = JsonFormatter(salt=SALT).customer_ref(CUSTOMER)
    assert hashed == JsonFormatter(salt=SALT).customer_ref(CUSTOMER)
    assert isinstance(hashed, str) and hashed.startswith("sha256:") and len(hashed) == 7 + 16
    assert CUSTOMER not in hashed
    assert JsonFormatter(salt="other").customer_ref(CUSTOMER) != hashed
    assert JsonFormatter().customer_ref(CUSTOMER) != JsonFormatter().customer_ref(CUSTOMER)  # random salts
    assert JsonFormatter(customer_ids=True).customer_ref(CUSTOMER) == CUSTOMER
    assert JsonFormatter(salt=SALT).customer_ref(None) is None


def test_access_log_lines_carry_ids_and_no_secret(demo: DemoDirs, tmp_path: Path, lines: Lines) -> None:
    key_file = tmp_path / "keys.yaml"
    key_file.write_text(f"keys:\n  - {{name: file-key, key: {FILE_SECRET}, scopes: [decide, admin]}}\n"
                        f"  - {{name: limited, key: {LIMITED_SECRET}, scopes: [decide], "
                        "rate_limit: {per_second: 0.5, burst: 1}}\n")
    settings = make_settings(demo, api_keys=f"env-key:{ENV_SECRET}:decide+feedback",
                             api_keys_file=key_file, api_keys_reload_seconds=0.1, access_log="all")
    app = create_app(settings)
    inside = logging.getLogger("tests.inside")

    @app.get("/v1/admin/log")
    async def log_something() -> dict[str, str]:
        inside.warning("something worth a line", extra={"customer_id": "c00042"})
        return {"logged": "yes"}

    body = {"customer_id": CUSTOMER, "channel": "web", "placement": "home", "limit": 2}
    with TestClient(app) as c:
        r = c.post("/v1/decisions", json=body, headers={"X-API-Key": ENV_SECRET, "X-Request-ID": "req-1"})
        assert r.status_code == 200
        decision = r.json()["decision_id"]
        action = r.json()["actions"][0]["action_id"]
        assert c.post("/v1/feedback", headers={"X-API-Key": ENV_SECRET}, json={
            "decision_id": decision, "action_id": action, "outcome": "click"}).status_code == 202
        assert c.post("/v1/decisions", json=body, headers={"X-API-Key": FILE_SECRET + "x"}).status_code == 401
        assert c.post("/v1/feedback", json={}, headers={"X-API-Key": FILE_SECRET}).status_code == 403
        assert c.post("/v1/decisions", json=body, headers={"X-API-Key": LIMITED_SECRET}).status_code == 200
        assert c.post("/v1/decisions", json=body, headers={"X-API-Key": LIMITED_SECRET}).status_code == 429
        assert c.get("/v1/admin/log", headers={"X-API-Key": FILE_SECRET,
                                               "X-Request-ID": "req-inside"}).status_code == 200
        # A reload, and a failed one: their lines name keys, never show them.
        key_file.write_text(f"keys: [{{name: file-key, key: {FILE_SECRET}, scopes: [decide]}}]\n")
        deadline = time.monotonic() + 3
        while "API keys reloaded" not in lines.text and time.monotonic() < deadline:
            time.sleep(0.05)
        key_file.write_text(f"keys: [{{name: broken, key: {FILE_SECRET}, scopes: [everything]}}]\n")
        while "API keys not reloaded" not in lines.text and time.monotonic() < deadline + 3:
            time.sleep(0.05)

    text = lines.text
    for secret in (ENV_SECRET, FILE_SECRET, LIMITED_SECRET, SALT):
        assert secret not in text, secret
    assert CUSTOMER not in text and "c00042" not in text
    formatter = JsonFormatter(salt=SALT)

    requests = lines.requests()
    by_id = {line["request_id"]: line for line in requests}
    first = by_id["req-1"]
    assert first["customer_id"] == formatter.customer_ref(CUSTOMER)
    assert (first["method"], first["path"], first["status"], first["key"], first["channel"]) == (
        "POST", "/v1/decisions", 200, "env-key", "web")
    assert first["seconds"] > 0
    statuses = [(line["path"], line["status"], line["key"]) for line in requests]
    for expected in [("/v1/feedback", 202, "env-key"), ("/v1/decisions", 401, None),
                     ("/v1/feedback", 403, None), ("/v1/decisions", 429, "limited")]:
        assert expected in statuses, (expected, statuses)
    assert all(line["request_id"] for line in requests)
    (worth,) = [line for line in lines.all() if line["msg"] == "something worth a line"]
    assert worth["request_id"] == "req-inside" and worth["customer_id"] == formatter.customer_ref("c00042")
    assert any(line["msg"] == "API keys reloaded" and line["keys"] == ["env-key", "file-key"]
               for line in lines.all())
    assert any(line["msg"].startswith("API keys not reloaded") for line in lines.all())


def test_the_access_log_is_off_by_default_and_errors_only_on_request(
        demo: DemoDirs, lines: Lines) -> None:
    with TestClient(create_app(make_settings(demo))) as c:
        c.post("/v1/decisions", json={"channel": "web"})
        c.post("/v1/decisions", json={"channel": "nowhere"})
    assert lines.requests() == []
    with TestClient(create_app(make_settings(demo, access_log="errors"))) as c:
        c.post("/v1/decisions", json={"channel": "web"})
        c.post("/v1/decisions", json={"channel": "nowhere"})
    assert [line["status"] for line in lines.requests()] == [422]


def test_each_log_line_of_a_request_has_its_id_and_only_its_own() -> None:
    seen: list[str | None] = []

    async def app(scope: Any, receive: Any, send: Any) -> None:
        seen.append(logs.REQUEST_ID.get())
        await send({"type": "http.response.start", "status": 204, "headers": []})
        await send({"type": "http.response.body", "body": b""})

    async def run() -> list[str | None]:
        layer = HTTPMetrics(app, Metrics())
        headers: list[list[tuple[bytes, bytes]]] = []

        async def receive() -> Any:
            return {"type": "http.request", "body": b"", "more_body": False}

        async def send(message: Any) -> None:
            if message["type"] == "http.response.start":
                headers.append(message["headers"])

        for request_id in (b"first", None):
            scope = {"type": "http", "method": "GET", "path": "/x", "state": {},
                     "headers": [(b"x-request-id", request_id)] if request_id else []}
            await layer(scope, receive, send)
            seen.append(logs.REQUEST_ID.get())  # reset once the request is answered
        assert headers[0] == [(b"x-request-id", b"first")]
        assert OURS.fullmatch(headers[1][0][1].decode())
        return seen

    first, after_first, made, after_made = asyncio.run(run())
    assert first == "first" and made is not None and OURS.fullmatch(made)
    assert after_first is None and after_made is None
