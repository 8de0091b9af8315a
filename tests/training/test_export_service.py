"""`nextbest export --url`: a running service's embedded store into Parquet by day, over
its admin API: the real app served by uvicorn, decisions and feedback over HTTP."""

from __future__ import annotations

import time
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
import pyarrow.dataset as ds
import pytest
from fastapi.testclient import TestClient

from load_tests.processes import free_port
from service.app import create_app
from service.cli import main
from service.export_status import Watermark, id_ms
from tests.demo_fixtures import DemoDirs, serve_in_thread
from tests.service.conftest import make_settings
from training.export import WATERMARK_FILE

OPS, SHOP = "ops-secret-key-0123456789", "shop-secret-key-0123456789"


def decide(url: str, n: int, key: str | None = None) -> list[dict[str, Any]]:
    headers = {"x-api-key": key} if key else {}
    out = []
    for i in range(n):
        r = httpx.post(f"{url}/v1/decisions", headers=headers, timeout=10, json={
            "customer_id": f"c{i % 50 + 1:05d}", "channel": "web", "placement": "home", "limit": 2})
        assert r.status_code == 200, r.text
        out.append(r.json())
    return out


def send_feedback(url: str, decisions: list[dict[str, Any]], outcome: str = "click",
                  key: str | None = None) -> list[tuple[str, str, str]]:
    events = [{"decision_id": d["decision_id"], "action_id": d["actions"][0]["action_id"],
               "outcome": outcome} for d in decisions]
    r = httpx.post(f"{url}/v1/feedback", json={"events": events}, timeout=10,
                   headers={"x-api-key": key} if key else {})
    assert r.status_code == 202 and r.json()["accepted"] == len(events), r.text
    return [(e["decision_id"], e["action_id"], e["outcome"]) for e in events]


def wait_for(url: str, stream: str, added: int, key: str | None = None) -> dict[str, Any]:
    """The stream's info once it was given `added` entries (the decision log lingers)."""
    deadline = time.monotonic() + 10
    while True:
        info: dict[str, Any] = httpx.get(f"{url}/v1/admin/streams/{stream}", timeout=5,
                                         headers={"x-api-key": key} if key else {}).json()
        if info["entries_added"] >= added or time.monotonic() > deadline:
            assert info["entries_added"] == added, info
            return info
        time.sleep(0.05)


def read(out: Path, stream: str) -> Any:
    return ds.dataset(out / stream, format="parquet", partitioning="hive").to_table()


@pytest.fixture
def cli_env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path, demo: DemoDirs) -> Path:
    monkeypatch.delenv("NEXTBEST_REDIS_URL", raising=False)
    monkeypatch.delenv("NEXTBEST_API_KEY", raising=False)
    monkeypatch.setenv("NEXTBEST_DATA_DIR", str(tmp_path))
    monkeypatch.setenv("NEXTBEST_MODELS_DIR", str(demo.models_dir))
    return tmp_path / "export"


@pytest.fixture
def served(demo: DemoDirs) -> Iterator[str]:
    with serve_in_thread(create_app(make_settings(demo)), free_port()) as url:
        yield url


def test_the_cli_exports_the_embedded_store_once(served: str, cli_env: Path,
                                                 capsys: pytest.CaptureFixture[str]) -> None:
    url, out = served, cli_env
    made = decide(url, 30)
    sent = send_feedback(url, made[::3])
    wait_for(url, "decisions", 30)
    wait_for(url, "feedback", len(sent))

    assert main(["export", "--url", url, "--no-progress", "--chunk", "7"]) == 0
    captured = capsys.readouterr()
    assert "decisions: 30 rows in" in captured.out and "feedback: 10 rows in" in captured.out
    assert captured.out.rstrip().endswith(f"exported 40 rows to {out}")
    assert captured.err == ""

    decisions = read(out, "decisions").sort_by("stream_id").to_pylist()
    assert [d["decision_id"] for d in decisions] == [d["decision_id"] for d in made]
    assert [d["action_ids"] for d in decisions] == [[a["action_id"] for a in d["actions"]] for d in made]
    assert {d["model"] for d in decisions} == {made[0]["model_versions"]["offline"]}
    ids = [d["stream_id"] for d in decisions]
    assert len(set(ids)) == 30
    today = datetime.now(UTC).strftime("%Y-%m-%d")
    assert {datetime.fromtimestamp(id_ms(i) / 1000, UTC).strftime("%Y-%m-%d") for i in ids} <= {today}
    assert all(d["day"] == today for d in decisions)  # the hive partition of the id's day
    feedback = read(out, "feedback").to_pylist()
    assert sorted((f["decision_id"], f["action_id"], f["outcome"]) for f in feedback) == sorted(sent)
    assert all(f["channel"] == "web" and f["rank"] == 1 for f in feedback)

    # the service keeps the watermark (its export gauges read it), mirrored in the folder
    mark = httpx.get(f"{url}/v1/admin/streams/decisions/watermark", timeout=5).json()["watermark"]
    assert mark["last_id"] == max(ids, key=lambda i: tuple(map(int, i.split("-"))))
    assert (mark["exported"], mark["lost"], mark["skipped"]) == (30, 0, 0)
    assert (out / WATERMARK_FILE).is_file()

    assert main(["export", "--url", url, "--no-progress"]) == 0
    assert capsys.readouterr().out.rstrip().endswith(f"exported 0 rows to {out}")

    later = decide(url, 4)
    wait_for(url, "decisions", 34)
    assert main(["export", "--url", url, "--no-progress", "--stream", "decisions"]) == 0
    assert "decisions: 4 rows in 1 part" in capsys.readouterr().out
    again = read(out, "decisions").sort_by("stream_id").to_pylist()
    assert [d["decision_id"] for d in again] == [d["decision_id"] for d in made + later]


def test_what_the_bound_dropped_unread_is_counted_as_lost(
        demo: DemoDirs, cli_env: Path, capsys: pytest.CaptureFixture[str]) -> None:
    settings = make_settings(demo, memory_decision_log_max=8, feedback_stream_maxlen=5)
    with serve_in_thread(create_app(settings), free_port()) as url:
        decide(url, 4)
        wait_for(url, "decisions", 4)
        assert main(["export", "--url", url, "--no-progress", "--stream", "decisions"]) == 0
        assert "decisions: 4 rows" in capsys.readouterr().out

        made = decide(url, 12)  # the log keeps the newest 8: 4 are dropped unread
        sent = send_feedback(url, made[-7:])  # the stream keeps 5, before any export
        wait_for(url, "decisions", 16)
        info = wait_for(url, "feedback", 7)
        assert info["length"] == 5
        assert main(["export", "--url", url, "--no-progress"]) == 0
        captured = capsys.readouterr()
        mark = httpx.get(f"{url}/v1/admin/streams/decisions/watermark", timeout=5).json()["watermark"]
        feedback_mark = httpx.get(f"{url}/v1/admin/streams/feedback/watermark", timeout=5).json()
    assert "decisions: 8 rows" in captured.out and "feedback: 5 rows" in captured.out
    assert ("decisions: 4 entries were trimmed from the stream before they were exported and "
            "are lost (total lost: 4)") in captured.err
    assert "feedback: 2 entries were trimmed from the stream before its first export" in captured.err
    assert (mark["exported"], mark["lost"]) == (12, 4)
    assert (feedback_mark["watermark"]["exported"], feedback_mark["watermark"]["skipped"]) == (5, 2)
    decisions = read(cli_env, "decisions").to_pylist()
    assert {d["decision_id"] for d in decisions} >= {d["decision_id"] for d in made[-8:]}
    assert len(decisions) == 12
    assert sorted(f["decision_id"] for f in read(cli_env, "feedback").to_pylist()) == \
        sorted(d for d, _, _ in sent[-5:])


def test_the_streams_need_the_admin_scope(demo: DemoDirs, cli_env: Path,
                                          monkeypatch: pytest.MonkeyPatch,
                                          capsys: pytest.CaptureFixture[str]) -> None:
    keys = f"shop:{SHOP}:decide+feedback,ops:{OPS}:admin"
    with serve_in_thread(create_app(make_settings(demo, api_keys=keys)), free_port()) as url:
        decide(url, 3, key=SHOP)
        path = f"{url}/v1/admin/streams/decisions"
        assert httpx.get(path, timeout=5).status_code == 401
        assert httpx.get(path, headers={"x-api-key": SHOP}, timeout=5).status_code == 403
        put = httpx.put(f"{path}/watermark", json={"last_id": "9-9"}, headers={"x-api-key": SHOP},
                        timeout=5)
        assert put.status_code == 403
        wait_for(url, "decisions", 3, key=OPS)

        monkeypatch.setenv("NEXTBEST_API_KEY", SHOP)
        assert main(["export", "--url", url, "--no-progress"]) == 2
        err = capsys.readouterr().err
        assert err.startswith("nextbest export: 403 from GET /v1/admin/streams/decisions")
        assert err.count("\n") == 1
        monkeypatch.setenv("NEXTBEST_API_KEY", OPS)
        assert main(["export", "--url", url, "--no-progress"]) == 0
        assert "decisions: 3 rows" in capsys.readouterr().out


@pytest.mark.parametrize(("path", "params", "field"), [
    ("/v1/admin/streams/nope", {}, "stream"),
    ("/v1/admin/streams/decisions/entries", {"count": 0}, "count"),
    ("/v1/admin/streams/decisions/entries", {"count": 10_001}, "count"),
    ("/v1/admin/streams/feedback/entries", {"after": "12"}, "after"),
    ("/v1/admin/streams/feedback/entries", {"end": "x-1"}, "end"),
])
def test_bad_parameters_are_422_naming_the_field(demo: DemoDirs, path: str, params: dict[str, Any],
                                                 field: str) -> None:
    with TestClient(create_app(make_settings(demo))) as client:
        r = client.get(path, params=params)
    assert r.status_code == 422, r.text
    assert r.json()["error"] == "invalid_request" and field in r.json()["message"]


def test_a_bad_watermark_is_422_and_a_good_one_is_stored(demo: DemoDirs) -> None:
    with TestClient(create_app(make_settings(demo))) as client:
        path = "/v1/admin/streams/feedback/watermark"
        assert client.get(path).json() == {"stream": "feedback", "watermark": None}
        for body, field in (({"last_id": "abc"}, "last_id"), ({"lost": -1}, "lost")):
            r = client.put(path, json=body)
            assert r.status_code == 422 and field in r.json()["message"], r.text
        mark: dict[str, Any] = {"last_id": "1700000000000-4", "exported": 4, "lost": 1, "skipped": 0,
                "updated_at": 1700000000.5}
        assert client.put(path, json=mark).status_code == 200
        assert client.get(path).json()["watermark"] == mark
        stored = client.app.state.runtime.state.streams.watermark("feedback")  # type: ignore[attr-defined]
        assert Watermark.from_hash(stored) == Watermark(**mark)


def test_a_service_on_redis_sends_the_export_to_redis(demo: DemoDirs, demo_redis: str) -> None:
    with TestClient(create_app(make_settings(demo, demo_redis))) as client:
        r = client.get("/v1/admin/streams/decisions/entries")
    assert r.status_code == 409
    assert r.json()["error"] == "streams_in_redis" and "NEXTBEST_REDIS_URL" in r.json()["message"]
