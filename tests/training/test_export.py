"""`nextbest export` against the suite's real redis-server: Parquet by day, a watermark
that makes a second run a no-op, resume after an interruption, and trimmed entries
counted as lost."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import orjson
import pyarrow.dataset as ds
import pytest
import redis

import training.export as export_module
from service.cli import main
from service.export_status import ExportStatus, Watermark, watermark_key
from service.metrics import Metrics
from training.export import WATERMARK_FILE, ExportRefused, export, part_ids

DAY_MS = 86_400_000
#: 2026-06-01T00:00:00Z: the entries start a day boundary's width before midnight
MIDNIGHT_MS = 1_780_272_000_000


@pytest.fixture(params=["redis", "redis-cluster"])
def target(request: pytest.FixtureRequest) -> tuple[str, bool]:
    """(URL, cluster?): the suite's Redis, or its Redis Cluster of three masters."""
    if request.param == "redis-cluster":
        return request.getfixturevalue("redis_cluster_url"), True
    return request.getfixturevalue("redis_url"), False


@pytest.fixture
def r(target: tuple[str, bool]) -> Iterator[redis.Redis]:
    """A client of the target; tests type it as redis.Redis, whose commands both share."""
    url, cluster = target
    client: Any = redis.RedisCluster.from_url(url) if cluster else redis.Redis.from_url(url)
    yield client
    client.close()


def decision(i: int) -> dict[str, Any]:
    record: dict[str, Any] = {
        "decision_id": f"d{i:06d}", "ts": (MIDNIGHT_MS + i) / 1000, "customer_id": f"c{i % 97:05d}",
        "channel": "web" if i % 2 else "pos", "placement": "home", "journey_stage": "browse",
        "segment": "value", "context": {"device": "mobile", "basket": [f"a{i % 5}"], "cart_value": 1.5},
        "model": "nextbest-ranker:3", "candidates": ["a1", "a2", "a3"],
        "shown": [{"action_id": "a2", "rank": 1, "probability": 0.9, "propensity": 0.25,
                   "offline_logit": -1.25, "exposures": i % 3, "explored": False},
                  {"action_id": "a3", "rank": 2, "probability": 0.05, "propensity": 0.125,
                   "offline_logit": -2.0, "exposures": 0, "explored": True}],
        "degraded": ["anonymous"] if i % 10 == 0 else [],
    }
    if i % 3 == 0:  # scored by a challenger in shadow too (service/engine.py)
        record["shadow"] = {
            "model": "nextbest-ranker:4", "would_show": ["a3", "a2"],
            "shown": [{"action_id": "a2", "propensity": 0.2, "probability": 0.05, "offline_logit": -1.5},
                      {"action_id": "a3", "propensity": 0.3, "probability": 0.9, "offline_logit": -0.9}],
        }
    return record


def feedback(i: int) -> dict[str, Any]:
    return {
        "decision_id": f"d{i:06d}", "action_id": "a2", "outcome": "accept" if i % 4 else "dismiss",
        "value": 12.5 if i % 4 else None, "ts": (MIDNIGHT_MS + i) / 1000,
        "accepted_at": (MIDNIGHT_MS + i) / 1000, "customer_id": f"c{i % 97:05d}", "channel": "web",
        "placement": "home", "journey_stage": "browse", "segment": "value", "rank": 1,
        "probability": 0.9, "offline_logit": -1.25, "exposures": 2,
    }


def entry_id(i: int, n: int) -> str:
    """Ids of n entries spread over the day before MIDNIGHT_MS and the day after it."""
    return f"{MIDNIGHT_MS - DAY_MS // 2 + i * (DAY_MS // n)}-{i % 3}"


def fill(r: redis.Redis, decisions: range, feedbacks: range, n: int = 2000) -> None:
    pipe = r.pipeline(transaction=False)
    for i in decisions:
        pipe.xadd("nb:decisions", {"d": orjson.dumps(decision(i))}, id=entry_id(i, n))
    for i in feedbacks:
        pipe.xadd("nb:feedback", {"e": orjson.dumps(feedback(i))}, id=entry_id(i, n))
    pipe.execute()


def read(out: Path, stream: str) -> Any:
    return ds.dataset(out / stream, format="parquet", partitioning="hive").to_table().sort_by("stream_id")


def stored_mark(r: Any, stream: str) -> Watermark | None:
    return Watermark.from_hash(r.hgetall(watermark_key(stream)))


def stream_ids(r: Any, key: str) -> list[str]:
    return sorted(i.decode() for i, _ in r.xrange(key))


def test_export_writes_what_the_streams_hold_by_day(r: redis.Redis, tmp_path: Path) -> None:
    fill(r, range(2000), range(600))
    results = export(r, tmp_path, chunk=300, progress=False)
    assert [(x.stream, x.rows, x.lost, x.skipped) for x in results] == [
        ("decisions", 2000, 0, 0), ("feedback", 600, 0, 0)]

    decisions = read(tmp_path, "decisions")
    assert decisions.num_rows == 2000
    assert decisions.column("stream_id").to_pylist() == stream_ids(r, "nb:decisions")
    assert set(decisions.column("day").to_pylist()) == {"2026-05-31", "2026-06-01"}
    for row in decisions.to_pylist():
        assert row["day"] == ("2026-05-31" if int(row["stream_id"].split("-")[0]) < MIDNIGHT_MS
                              else "2026-06-01")
    row = decisions.to_pylist()[10]
    original = decision(10)
    assert row["decision_id"] == "d000010" and row["ts"] == original["ts"]
    assert json.loads(row["context"]) == original["context"]
    assert row["action_ids"] == ["a2", "a3"] and row["propensities"] == [0.25, 0.125]
    assert row["explored"] == [False, True] and row["degraded"] == ["anonymous"]
    assert row["candidates"] == ["a1", "a2", "a3"] and row["exposures"] == [1, 0]
    assert row["shadow_model"] is None and row["shadow_action_ids"] == []
    shadowed = decisions.to_pylist()[9]
    assert shadowed["shadow_model"] == "nextbest-ranker:4"
    assert shadowed["shadow_action_ids"] == ["a3", "a2"]
    assert shadowed["shadow_probabilities"] == [0.05, 0.9]
    assert shadowed["shadow_propensities"] == [0.2, 0.3]

    fb = read(tmp_path, "feedback")
    assert fb.num_rows == 600
    assert fb.column("stream_id").to_pylist() == stream_ids(r, "nb:feedback")
    first = fb.to_pylist()[0]
    assert first["outcome"] == "dismiss" and first["value"] is None and first["rank"] == 1

    # parts are named by their id range, and a chunk of 300 never spans two parts' days
    for path in (tmp_path / "decisions").rglob("*.parquet"):
        ids = part_ids(path)
        assert ids is not None
        part = ds.dataset(path, format="parquet").to_table().column("stream_id").to_pylist()
        assert (part[0], part[-1]) == ids and len(part) <= 300
    assert not list(tmp_path.rglob("*.tmp"))

    stored = stored_mark(r, "decisions")
    assert stored is not None and stored.last_id == stream_ids(r, "nb:decisions")[-1]
    assert stored.exported == 2000 and stored.lost == 0
    mirror = json.loads((tmp_path / WATERMARK_FILE).read_text())
    assert mirror["decisions"]["last_id"] == stored.last_id
    assert mirror["feedback"]["exported"] == 600


def test_a_second_run_exports_nothing_and_a_later_one_only_what_is_new(
        r: redis.Redis, tmp_path: Path) -> None:
    fill(r, range(1000), range(300))
    export(r, tmp_path, chunk=400, progress=False)
    files = sorted(tmp_path.rglob("*.parquet"))
    again = export(r, tmp_path, chunk=400, progress=False)
    assert [(x.rows, x.parts, x.lost) for x in again] == [(0, [], 0), (0, [], 0)]
    assert sorted(tmp_path.rglob("*.parquet")) == files

    fill(r, range(1000, 1500), range(300, 310))
    later = export(r, tmp_path, chunk=400, progress=False)
    assert [x.rows for x in later] == [500, 10]
    assert read(tmp_path, "decisions").column("stream_id").to_pylist() == stream_ids(r, "nb:decisions")
    assert read(tmp_path, "feedback").num_rows == 310


def test_an_interrupted_export_resumes_without_duplicates(
        r: redis.Redis, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    fill(r, range(2000), range(0))
    store = export_module._store_watermark
    calls = {"n": 0}

    def crash_on_the_third_part(client: Any, out: Path, stream: str, prefix: str, mark: Watermark) -> None:
        if mark.exported:
            calls["n"] += 1
            if calls["n"] == 3:  # the third chunk's parts are on disk, its watermark is not
                raise ConnectionError("killed")
        store(client, out, stream, prefix, mark)

    monkeypatch.setattr(export_module, "_store_watermark", crash_on_the_third_part)
    with pytest.raises(ConnectionError):
        export(r, tmp_path, streams=("decisions",), chunk=300, progress=False)
    assert read(tmp_path, "decisions").num_rows == 900  # 300 of them past the watermark
    monkeypatch.setattr(export_module, "_store_watermark", store)

    resumed = export(r, tmp_path, streams=("decisions",), chunk=500, progress=False)[0]
    assert resumed.removed_parts >= 1 and resumed.rows == 2000 - 600 and resumed.lost == 0
    ids = read(tmp_path, "decisions").column("stream_id").to_pylist()
    assert ids == stream_ids(r, "nb:decisions")  # every entry once
    mark = stored_mark(r, "decisions")
    assert mark is not None and mark.exported == 2000


def test_entries_trimmed_before_export_are_counted_as_lost(r: redis.Redis, tmp_path: Path) -> None:
    fill(r, range(1000), range(0))
    export(r, tmp_path, streams=("decisions",), chunk=400, progress=False)
    fill(r, range(1000, 1600), range(0))
    r.xtrim("nb:decisions", maxlen=100, approximate=False)  # 500 of the 600 new ones, unread
    result = export(r, tmp_path, streams=("decisions",), chunk=400, progress=False)[0]
    assert (result.rows, result.lost) == (100, 500)
    assert result.warnings() == ["decisions: 500 entries were trimmed from the stream before they "
                                 "were exported and are lost (total lost: 500)"]
    mark = stored_mark(r, "decisions")
    assert mark is not None and (mark.lost, mark.exported) == (500, 1100)
    assert json.loads((tmp_path / WATERMARK_FILE).read_text())["decisions"]["lost"] == 500
    assert read(tmp_path, "decisions").num_rows == 1100

    again = export(r, tmp_path, streams=("decisions",), progress=False)[0]
    assert (again.rows, again.lost, again.watermark.lost) == (0, 0, 500)


def test_a_first_export_of_a_trimmed_stream_skips_what_was_gone_before(
        r: redis.Redis, tmp_path: Path) -> None:
    fill(r, range(800), range(0))
    r.xtrim("nb:decisions", maxlen=300, approximate=False)
    result = export(r, tmp_path, streams=("decisions",), progress=False)[0]
    assert (result.rows, result.skipped, result.lost) == (300, 500, 0)
    assert "500 entries were trimmed from the stream before its first export" in result.warnings()[0]
    mark = stored_mark(r, "decisions")
    assert mark is not None and (mark.skipped, mark.lost) == (500, 0)


def test_an_empty_or_missing_stream_exports_nothing(r: redis.Redis, tmp_path: Path) -> None:
    results = export(r, tmp_path, progress=False)
    assert [(x.rows, x.lost, x.watermark.last_id) for x in results] == [(0, 0, "0-0"), (0, 0, "0-0")]
    assert not list(tmp_path.rglob("*.parquet"))


def test_parts_without_a_watermark_are_refused(r: redis.Redis, tmp_path: Path) -> None:
    fill(r, range(50), range(0))
    export(r, tmp_path, streams=("decisions",), progress=False)
    r.delete(watermark_key("decisions"))
    (tmp_path / WATERMARK_FILE).unlink()
    with pytest.raises(ExportRefused, match="holds exported parts"):
        export(r, tmp_path, streams=("decisions",), progress=False)


def test_the_redis_watermark_lost_falls_back_to_the_folder_s(r: redis.Redis, tmp_path: Path) -> None:
    fill(r, range(50), range(0))
    export(r, tmp_path, streams=("decisions",), progress=False)
    r.delete(watermark_key("decisions"))
    again = export(r, tmp_path, streams=("decisions",), progress=False)[0]
    assert again.rows == 0 and read(tmp_path, "decisions").num_rows == 50


def test_the_service_reads_the_watermarks_into_its_gauges(r: redis.Redis, target: tuple[str, bool],
                                                          tmp_path: Path) -> None:
    import redis.asyncio as aioredis

    fill(r, range(400), range(0))
    export(r, tmp_path, streams=("decisions",), progress=False)
    r.xadd("nb:decisions", {"d": b"{}"}, id=f"{int(entry_id(399, 2000).split('-')[0]) + 90_000}-0")

    async def refresh() -> Metrics:
        url, cluster = target
        client = aioredis.RedisCluster.from_url(url) if cluster else aioredis.from_url(url)
        metrics = Metrics()
        await ExportStatus(client, metrics).refresh()
        await client.aclose()
        return metrics

    metrics = asyncio.run(refresh())
    assert metrics.registry.get_sample_value("nextbest_export_lag_seconds", {"stream": "decisions"}) == 90.0
    assert metrics.registry.get_sample_value("nextbest_export_lost_events", {"stream": "decisions"}) == 0
    # never exported: no series
    assert metrics.registry.get_sample_value("nextbest_export_lag_seconds", {"stream": "feedback"}) is None


def test_the_cli_exports_and_says_what(r: redis.Redis, target: tuple[str, bool], tmp_path: Path,
                                       monkeypatch: pytest.MonkeyPatch,
                                       capsys: pytest.CaptureFixture[str]) -> None:
    fill(r, range(300), range(40))
    monkeypatch.setenv("NEXTBEST_REDIS_URL", target[0])
    monkeypatch.setenv("NEXTBEST_REDIS_CLUSTER", str(target[1]).lower())
    monkeypatch.setenv("NEXTBEST_DATA_DIR", str(tmp_path))
    assert main(["export", "--no-progress", "--chunk", "100"]) == 0
    out = capsys.readouterr().out
    assert "decisions: 300 rows in" in out and "feedback: 40 rows in" in out
    assert out.rstrip().endswith(f"exported 340 rows to {tmp_path / 'export'}")
    assert read(tmp_path / "export", "decisions").num_rows == 300

    assert main(["export", "--no-progress", "--stream", "feedback"]) == 0
    assert capsys.readouterr().out.rstrip().endswith("exported 0 rows to " + str(tmp_path / "export"))


def test_the_cli_on_the_embedded_store_refuses_in_one_line(
        monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    monkeypatch.delenv("NEXTBEST_REDIS_URL", raising=False)
    monkeypatch.setenv("NEXTBEST_DATA_DIR", str(tmp_path))
    assert main(["export", "--no-progress"]) == 2
    captured = capsys.readouterr()
    assert captured.out == ""
    assert captured.err == ("nextbest export: without NEXTBEST_REDIS_URL the streams live in the "
                            "serving process: pass --url of the running service (e.g. --url "
                            "http://127.0.0.1:8000)\n")
    assert not (tmp_path / "export").exists()
