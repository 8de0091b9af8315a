"""The benchmark's open-loop generator (load_tests/openloop.c), built and run for real
against a small HTTP/1.1 server that records what it was sent."""

from __future__ import annotations

import json
import socket
import subprocess
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest

from load_tests import openloop
from load_tests.processes import free_port

ACTIONS = ["a1", "a2", "a3"]


class Recorder(ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self, port: int, decision_status: int) -> None:
        super().__init__(("127.0.0.1", port), Handler)
        self.decision_status = decision_status
        self.decisions: list[dict[str, Any]] = []
        self.feedback: list[dict[str, Any]] = []
        self.lock = threading.Lock()


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"  # keep-alive, as uvicorn answers
    server: Recorder

    def do_POST(self) -> None:  # noqa: N802 (http.server's name)
        body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        with self.server.lock:
            if self.path == "/v1/decisions":
                n = len(self.server.decisions)
                self.server.decisions.append(body)
                status = self.server.decision_status
                answer: dict[str, Any] = {
                    "decision_id": f"d{n}",
                    "actions": [{"action_id": a, "rank": i + 1} for i, a in enumerate(ACTIONS)],
                    "degraded": []}
            else:
                self.server.feedback.append(body)
                status, answer = 202, {"accepted": 1, "rejected": []}
        data = json.dumps(answer).encode()  # with spaces after ':', unlike orjson
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def log_message(self, *args: object) -> None:
        pass


def serve(decision_status: int = 200) -> Recorder:
    server = Recorder(free_port(), decision_status)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return server


@pytest.fixture
def recorder() -> Iterator[Recorder]:
    server = serve()
    yield server
    server.shutdown()
    server.server_close()


ITEMS: list[dict[str, Any]] = [
    {"body": '{"n":0}', "channel": "web", "fb": None},
    {"body": '{"n":1}', "channel": "web", "fb": {"outcome": "click", "value": None, "rank": 1}},
    {"body": '{"n":2}', "channel": "pos", "fb": {"outcome": "accept", "value": 12.5, "rank": 4}},
    {"body": '{"n":3}', "channel": "app", "fb": None},
]


def run(server_port: int, tmp_path: Path, rate: int = 200, seconds: float = 1.0,
        timeout_s: float = 2.0) -> dict[str, Any]:
    items = tmp_path / "items.txt"
    openloop.write_items(ITEMS, items)
    out = tmp_path / "out.json"
    cmd = openloop.command(f"http://127.0.0.1:{server_port}", items, out, rate, seconds,
                           connections=4, max_connections=20, timeout_s=timeout_s)
    subprocess.run(cmd, check=True, timeout=seconds + 30)
    return json.loads(out.read_text())


def test_sends_every_due_decision_in_item_order_and_feedback_on_the_ranked_action(
        recorder: Recorder, tmp_path: Path) -> None:
    summary = run(recorder.server_address[1], tmp_path, rate=200, seconds=1.0)
    assert summary["decisions"] == 200 and summary["dropped"] == 0
    assert summary["errors"] == 0 and summary["failed_checks"] == 0
    assert sorted(d["n"] for d in recorder.decisions) == sorted(i % 4 for i in range(200))
    # items 1 and 2 of every 4 are followed by feedback: 100 events
    assert summary["feedback"] == len(recorder.feedback) == 100
    clicks = [f for f in recorder.feedback if f["outcome"] == "click"]
    accepts = [f for f in recorder.feedback if f["outcome"] == "accept"]
    assert len(clicks) == len(accepts) == 50
    assert {f["action_id"] for f in clicks} == {"a2"}  # rank 1 of a1, a2, a3
    assert {f["action_id"] for f in accepts} == {"a3"}  # rank 4: the last shown
    assert all("value" not in f for f in clicks) and {f["value"] for f in accepts} == {12.5}
    decision_ids = {f["decision_id"] for f in recorder.feedback}
    assert len(decision_ids) == 100 and all(d.startswith("d") for d in decision_ids)
    p = summary["decision_ms"]
    assert 0 < p["p50"] <= p["p90"] <= p["p99"] <= p["max"]


def test_refused_answers_are_errors_and_failed_checks_with_no_feedback(tmp_path: Path) -> None:
    server = serve(decision_status=422)
    try:
        summary = run(server.server_address[1], tmp_path, rate=100, seconds=0.5)
    finally:
        server.shutdown()
        server.server_close()
    assert summary["decisions"] == 50
    assert summary["errors"] == summary["failed_checks"] == 50
    assert summary["feedback"] == 0 and server.feedback == []


def test_an_unreachable_server_fails_every_request(tmp_path: Path) -> None:
    summary = run(free_port(), tmp_path, rate=100, seconds=0.3)
    assert summary["decisions"] == 0
    assert summary["errors"] + summary["connect_errors"] >= 30
    point = openloop.point(summary, 100, 0.3)
    assert point["errors"] >= 30 and point["achieved"] == 0


def test_a_server_that_never_answers_times_out_as_errors(tmp_path: Path) -> None:
    with socket.socket() as listener:  # the kernel accepts; nobody reads or answers
        listener.bind(("127.0.0.1", 0))
        listener.listen(64)
        summary = run(listener.getsockname()[1], tmp_path, rate=20, seconds=0.5, timeout_s=0.3)
    assert summary["decisions"] == 0 and summary["errors"] == 10


def test_items_are_written_one_per_line_and_must_not_hold_tabs(tmp_path: Path) -> None:
    path = tmp_path / "items.txt"
    openloop.write_items(ITEMS, path)
    lines = path.read_text().splitlines()
    assert lines[0] == '0\t-\t-\t0\t{"n":0}'
    assert lines[2] == '1\taccept\t12.5\t4\t{"n":2}'
    with pytest.raises(ValueError):
        openloop.write_items([{"body": '{"a":"\t"}', "channel": "web", "fb": None}], path)
