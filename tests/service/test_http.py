"""The HTTP contract of the lean `/v1` routes: docs, validation errors and API keys."""

from __future__ import annotations

import socket
import time
from collections.abc import Iterator

import pytest
from fastapi.testclient import TestClient

from load_tests.processes import free_port
from service.app import create_app
from tests.demo_fixtures import DemoDirs, serve_in_thread
from tests.service.conftest import make_settings


@pytest.fixture(scope="module")
def memory_client(demo: DemoDirs) -> Iterator[TestClient]:
    with TestClient(create_app(make_settings(demo))) as c:
        yield c


def test_openapi_documents_request_bodies_and_the_key_header(memory_client: TestClient) -> None:
    spec = memory_client.get("/openapi.json").json()
    schemas = spec["components"]["schemas"]
    decide = spec["paths"]["/v1/decisions"]["post"]
    body = decide["requestBody"]["content"]["application/json"]["schema"]
    assert body == {"$ref": "#/components/schemas/DecisionRequest"}
    assert {"channel", "customer_id", "candidates", "context"} <= set(schemas["DecisionRequest"]["properties"])
    assert "DecisionContext" in schemas and "DecisionResponse" in schemas
    assert [p["name"] for p in decide["parameters"]] == ["x-api-key"]
    feedback = spec["paths"]["/v1/feedback"]["post"]["requestBody"]["content"]["application/json"]
    refs = {s["$ref"].rsplit("/", 1)[1] for s in feedback["schema"]["anyOf"]}
    assert refs == {"FeedbackEvent", "FeedbackBatch"} and refs <= set(schemas)


def test_validation_errors_keep_fastapi_shape(memory_client: TestClient) -> None:
    r = memory_client.post("/v1/decisions", json={"channel": "web", "limit": 0, "colour": 1})
    assert r.status_code == 422
    body = r.json()
    assert body["error"] == "invalid_request"
    locs = sorted(tuple(d["loc"]) for d in body["detail"])
    assert locs == [("body", "colour"), ("body", "limit")]
    assert "body.limit" in body["message"]


@pytest.mark.parametrize(("content", "content_type"), [
    (b"", "application/json"), (b"{not json", "application/json"),
    (b'{"channel": "web"}', "text/plain"),
])
def test_unreadable_bodies_are_422(memory_client: TestClient, content: bytes, content_type: str) -> None:
    r = memory_client.post("/v1/decisions", content=content, headers={"content-type": content_type})
    assert r.status_code == 422 and r.json()["error"] == "invalid_request"


def test_json_without_content_type_is_accepted(memory_client: TestClient) -> None:
    r = memory_client.post("/v1/feedback", content=b'{"events": []}')
    assert r.status_code == 422 and r.json()["detail"][0]["loc"][:2] == ["body", "FeedbackEvent"]
    assert memory_client.post("/v1/decisions", content=b'{"channel": "web"}').status_code == 200


def test_refused_keys_answer_401_and_are_counted(demo: DemoDirs) -> None:
    with TestClient(create_app(make_settings(demo, api_keys="k1"))) as c:
        r = c.post("/v1/feedback", json={"events": []}, headers={"X-API-Key": "k2"})
        assert r.status_code == 401
        assert r.json() == {"error": "unauthorized", "message": "the X-API-Key header holds no key in force"}
        assert c.get("/readyz").status_code == 200 and c.get("/metrics").status_code == 200
        text = c.get("/metrics").text
        assert 'nextbest_errors_total{endpoint="/v1/feedback",status="401"} 1.0' in text


def test_bodies_over_the_limit_are_413(demo: DemoDirs) -> None:
    with TestClient(create_app(make_settings(demo, max_body_bytes=512))) as c:
        big = {"channel": "web", "candidates": [f"p{i:03d}" for i in range(150)]}
        r = c.post("/v1/decisions", json=big)
        assert r.status_code == 413 and r.json()["error"] == "payload_too_large"
        assert c.post("/v1/decisions", json={"channel": "web"}).status_code == 200


def test_other_methods_and_paths_still_reach_fastapi(memory_client: TestClient) -> None:
    assert memory_client.get("/v1/decisions").status_code == 405
    assert memory_client.post("/v1/nothing-here", json={}).status_code == 404
    assert memory_client.get("/healthz").json() == {"status": "ok"}


def test_a_client_gone_before_its_body_gets_no_answer() -> None:
    import asyncio

    from starlette.types import Message, Receive, Scope, Send

    from features.config import shipped_world
    from service import api
    from service.app import FastRoutes
    from service.schemas import request_models

    async def never_called(scope: Scope, receive: Receive, send: Send) -> None:
        raise AssertionError("FastAPI should not see a /v1 POST")

    sent: list[Message] = []

    async def receive() -> Message:
        return {"type": "http.disconnect"}

    async def send(message: Message) -> None:
        sent.append(message)

    scope = {"type": "http", "method": "POST", "path": "/v1/decisions", "headers": [], "state": {}}
    routes = FastRoutes(never_called, api.handlers(request_models(shipped_world("retail"))), 1024)
    asyncio.run(routes(scope, receive, send))
    assert sent == []


# --- bodies on a real socket: declared too large, or never sent -----------------------------
@pytest.fixture(scope="module")
def served(demo: DemoDirs) -> Iterator[tuple[str, int]]:
    port = free_port()
    with serve_in_thread(create_app(make_settings(demo, body_timeout_seconds=0.5)), port):
        yield "127.0.0.1", port


def _exchange(address: tuple[str, int], head: bytes, wait: float = 5.0) -> tuple[bytes, float]:
    """Send `head` (headers, perhaps a partial body) and read the answer: (bytes, seconds)."""
    started = time.perf_counter()
    with socket.create_connection(address, timeout=wait) as s:
        s.sendall(head)
        answer = b""
        while b"\r\n\r\n" not in answer or not answer.rstrip().endswith(b"}"):
            chunk = s.recv(65536)
            if not chunk:
                break
            answer += chunk
    return answer, time.perf_counter() - started


def test_a_declared_oversized_body_is_refused_before_it_is_read(served: tuple[str, int]) -> None:
    answer, seconds = _exchange(served, b"POST /v1/decisions HTTP/1.1\r\nHost: x\r\n"
                                b"Content-Type: application/json\r\nContent-Length: 10000000000\r\n\r\n")
    assert answer.startswith(b"HTTP/1.1 413") and b"payload_too_large" in answer
    assert seconds < 0.5  # no waiting for a body that would never fit


def test_a_stalled_body_is_answered_408(served: tuple[str, int]) -> None:
    answer, seconds = _exchange(served, b"POST /v1/feedback HTTP/1.1\r\nHost: x\r\n"
                                b"Content-Type: application/json\r\nContent-Length: 100\r\n\r\n{\"deci")
    assert answer.startswith(b"HTTP/1.1 408") and b"request_timeout" in answer
    assert 0.4 < seconds < 3


def test_try_again_errors_carry_retry_after(demo: DemoDirs) -> None:
    """503 (here: starting, the lifespan has not built the runtime) says when to try again."""
    client = TestClient(create_app(make_settings(demo)))  # no `with`: no lifespan run
    r = client.post("/v1/feedback", json={"decision_id": "d", "action_id": "a", "outcome": "click"})
    assert r.status_code == 503 and r.headers["retry-after"] == "1"
    assert r.json()["error"] == "not_ready"
