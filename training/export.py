"""`nextbest export`: the decision and feedback streams into Parquet, by day, incrementally.

The first step of retraining (docs/retraining.md). Each stream (`nb:decisions`,
`nb:feedback`) is read with XRANGE in chunks, from just after its watermark to the
stream's end as it was when the export started, into

    <out>/decisions/day=YYYY-MM-DD/part-<first id>-<last id>.parquet
    <out>/feedback/day=YYYY-MM-DD/part-<first id>-<last id>.parquet

(the day of the stream id's milliseconds, UTC). A part is written under a temporary
name, fsynced and renamed; only once every part of a chunk is on disk does the
watermark move past it: `nb:export:{stream}` in Redis (where the service reads it for
its metrics, `service/export_status.py`), mirrored in `<out>/_watermark.json`.

Resume: a part whose ids lie after the watermark was written by a run that stopped
before it could store the watermark. The next run deletes such parts before it starts,
then exports from the watermark again, so no row is ever in two parts and a second run
exports nothing.

Lost entries: the streams are capped, and what is trimmed before it was exported is
gone. Redis 7 counts every entry a stream was ever given (`entries-added` of XINFO
STREAM); the entries added up to the end of this run, minus those accounted for before
(exported, lost, or trimmed before the first export: `skipped`), minus those read now,
were removed unread. They are added to the watermark's `lost` count, which the service
exposes as `nextbest_export_lost_events` for the `NextbestExportLostEvents` alert.
Entries deleted with XDEL count as lost too; a stream deleted and created again resets
`entries-added`, and is then not counted. Before Redis 7 nothing is counted.

One export at a time: two concurrent runs on one stream would write the same rows twice.
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import orjson
import pyarrow as pa
import pyarrow.parquet as pq
from tqdm import tqdm

from service.export_status import START, STREAMS, Watermark, id_ms, stream_key, watermark_key
from service.state import stream_position

DEFAULT_CHUNK = 10_000
WATERMARK_FILE = "_watermark.json"

_LIST_STR = pa.list_(pa.string())
_LIST_F64 = pa.list_(pa.float64())


def _col(name: str, kind: pa.DataType, doc: str) -> pa.Field:
    return pa.field(name, kind, metadata={"doc": doc})


#: The columns of the exported Parquet files, in order, each with its meaning (kept in
#: the files' schema metadata too; docs/retraining.md's tables are generated from here).
#: Each row is one stream entry; the hive partition adds `day` when read as a dataset.
DECISION_SCHEMA = pa.schema([
    _col("stream_id", pa.string(), "Redis stream id (`ms-seq`), unique and increasing in the stream"),
    _col("decision_id", pa.string(), "the decision's id, as returned to the caller"),
    _col("ts", pa.float64(), "when the decision was made, Unix seconds"),
    _col("customer_id", pa.string(), "who it was for (null: anonymous)"),
    _col("channel", pa.string(), "e.g. `web`, `pos`"),
    _col("placement", pa.string(), "the slot on the channel"),
    _col("journey_stage", pa.string(), "the customer's journey stage the decision used"),
    _col("segment", pa.string(), "the customer's segment the decision used"),
    _col("model", pa.string(), "the offline model, `name:version`"),
    _col("context", pa.string(), "the request context as JSON (keys sorted; defaults left out)"),
    _col("candidates", _LIST_STR, "the eligible actions the policy chose among"),
    _col("candidate_sources", _LIST_STR, "per candidate: the source that proposed it, when "
         "the catalog's slot held more than MAX_SCORED actions (`basket`, `category`, `explore`, "
         "`slot_best`, `caller`; empty: every eligible action was a candidate)"),
    _col("eligible", pa.int64(), "how many actions were eligible before the candidate "
         "selection (null: no selection, `candidates` are all of them)"),
    _col("action_ids", _LIST_STR, "the actions shown, rank 1 first"),
    _col("probabilities", _LIST_F64, "per shown action: the probability that the policy "
         "(exploration included) picked it for its slot"),
    _col("propensities", _LIST_F64, "per shown action: the predicted acceptance probability"),
    _col("offline_logits", _LIST_F64, "per shown action: the offline model's logit"),
    _col("exposures", pa.list_(pa.int64()), "per shown action: times the customer had seen it before"),
    _col("explored", pa.list_(pa.bool_()), "per shown action: chosen by exploration, not by rank"),
    _col("degraded", _LIST_STR, "degradation reasons (unknown customer, stale features, ...)"),
    _col("shadow_model", pa.string(), "the challenger that scored the decision in shadow, "
         "`name:version` (null: none did)"),
    _col("shadow_action_ids", _LIST_STR, "the actions the challenger would have shown, best first"),
    _col("shadow_probabilities", _LIST_F64, "per shown action: the probability that the "
         "challenger's policy (same exploration) picked it for its slot"),
    _col("shadow_propensities", _LIST_F64, "per shown action: the challenger's predicted "
         "acceptance probability"),
    _col("group", pa.string(), "`treatment`, or `control`: the control group's baseline policy "
         "chose (null: logged before control groups existed)"),
])
FEEDBACK_SCHEMA = pa.schema([
    _col("stream_id", pa.string(), "Redis stream id (`ms-seq`), unique and increasing in the stream"),
    _col("decision_id", pa.string(), "the decision the outcome belongs to"),
    _col("action_id", pa.string(), "the shown action it is about"),
    _col("outcome", pa.string(), "`impression`, `click`, `accept`, `dismiss` or `purchase`"),
    _col("value", pa.float64(), "monetary value of the outcome (null: none given)"),
    _col("ts", pa.float64(), "when the outcome happened, Unix seconds"),
    _col("accepted_at", pa.float64(), "when the service accepted the event, Unix seconds"),
    _col("customer_id", pa.string(), "from the decision"),
    _col("channel", pa.string(), "from the decision"),
    _col("placement", pa.string(), "from the decision"),
    _col("journey_stage", pa.string(), "from the decision"),
    _col("segment", pa.string(), "from the decision"),
    _col("rank", pa.int32(), "the action's rank in the decision (1: first)"),
    _col("probability", pa.float64(), "the probability that the policy picked the action"),
    _col("offline_logit", pa.float64(), "the offline model's logit for the action"),
    _col("exposures", pa.int64(), "times the customer had seen the action before the decision"),
    _col("group", pa.string(), "from the decision: `treatment` or `control`"),
])
SCHEMAS = {"decisions": DECISION_SCHEMA, "feedback": FEEDBACK_SCHEMA}


def decision_row(entry_id: str, r: dict[str, Any]) -> dict[str, Any]:
    """One decision record (service/engine.py) as a row of DECISION_SCHEMA."""
    shown = r.get("shown") or []
    shadow = r.get("shadow") or {}
    shadow_shown = shadow.get("shown") or []
    return {
        "stream_id": entry_id, "decision_id": r.get("decision_id"), "ts": r.get("ts"),
        "customer_id": r.get("customer_id"), "channel": r.get("channel"),
        "placement": r.get("placement"), "journey_stage": r.get("journey_stage"),
        "segment": r.get("segment"), "model": r.get("model"),
        "context": json.dumps(r.get("context") or {}, sort_keys=True, separators=(",", ":")),
        "candidates": r.get("candidates") or [],
        "candidate_sources": r.get("candidate_sources") or [],
        "eligible": r.get("eligible"),
        "action_ids": [s["action_id"] for s in shown],
        "probabilities": [s.get("probability") for s in shown],
        "propensities": [s.get("propensity") for s in shown],
        "offline_logits": [s.get("offline_logit") for s in shown],
        "exposures": [s.get("exposures", 0) for s in shown],
        "explored": [bool(s.get("explored", False)) for s in shown],
        "degraded": r.get("degraded") or [],
        "shadow_model": shadow.get("model"),
        "shadow_action_ids": shadow.get("would_show") or [],
        "shadow_probabilities": [s.get("probability") for s in shadow_shown],
        "shadow_propensities": [s.get("propensity") for s in shadow_shown],
        "group": r.get("group"),
    }


def feedback_row(entry_id: str, e: dict[str, Any]) -> dict[str, Any]:
    """One feedback event (service/feedback.py) as a row of FEEDBACK_SCHEMA."""
    row = {name: e.get(name) for name in FEEDBACK_SCHEMA.names}
    row["stream_id"] = entry_id
    return row


ROWS: dict[str, Callable[[str, dict[str, Any]], dict[str, Any]]] = {
    "decisions": decision_row, "feedback": feedback_row,
}


class ExportRefused(ValueError):
    """The export cannot run safely as asked (the CLI says why and exits 2)."""


@dataclass
class StreamExport:
    """What one run did to one stream."""

    stream: str
    rows: int = 0
    parts: list[Path] = field(default_factory=list)
    lost: int | None = 0  # None: not countable (Redis before 7)
    skipped: int = 0  # trimmed before the first export (counted by the first run only)
    removed_parts: int = 0  # uncommitted parts of an interrupted run, deleted
    watermark: Watermark = field(default_factory=Watermark)

    def summary(self) -> str:
        n = len(self.parts)
        text = (f"{self.stream}: {self.rows} rows in {n} part{'' if n == 1 else 's'}, "
                f"up to {self.watermark.last_id}")
        if self.removed_parts:
            text += f" (resumed: {self.removed_parts} uncommitted parts of an interrupted run replaced)"
        return text

    def warnings(self) -> list[str]:
        out = []
        if self.skipped:
            out.append(f"{self.stream}: {self.skipped} entries were trimmed from the stream before "
                       "its first export (not counted as lost)")
        if self.lost is None:
            out.append(f"{self.stream}: entries trimmed before export cannot be counted "
                       "(needs Redis 7 or later)")
        elif self.lost:
            out.append(f"{self.stream}: {self.lost} entries were trimmed from the stream before "
                       f"they were exported and are lost (total lost: {self.watermark.lost})")
        return out


@dataclass(frozen=True)
class _StreamInfo:
    entries_added: int | None
    length: int
    last_id: str | None  # None: empty or missing stream


def export(client: Any, out_dir: Path, streams: Sequence[str] = tuple(STREAMS),
           chunk: int = DEFAULT_CHUNK, progress: bool = True, prefix: str = "nb:",
           clock: Callable[[], float] = time.time) -> list[StreamExport]:
    """Export each stream from its watermark to its end; `client`: a sync redis-py client."""
    if chunk <= 0:
        raise ValueError(f"chunk must be positive, got {chunk}")
    out_dir.mkdir(parents=True, exist_ok=True)
    return [_export_stream(client, out_dir, s, chunk, progress, prefix, clock) for s in streams]


def _export_stream(client: Any, out_dir: Path, stream: str, chunk: int, progress: bool,
                   prefix: str, clock: Callable[[], float]) -> StreamExport:
    key, field_name = stream_key(stream, prefix), STREAMS[stream][1].encode()
    info = _info(client, key)
    mark = _load_watermark(client, out_dir, stream, prefix)
    result = StreamExport(stream)
    if mark is None:
        if any(part_ids(p) for p in (out_dir / stream).glob("day=*/part-*.parquet")):
            raise ExportRefused(
                f"{out_dir / stream} holds exported parts but neither Redis nor "
                f"{out_dir / WATERMARK_FILE} has a watermark for them: export into an empty "
                "directory, or restore the watermark file")
        skipped = info.entries_added - info.length if info.entries_added is not None else 0
        mark = Watermark(skipped=skipped, updated_at=clock())
        _store_watermark(client, out_dir, stream, prefix, mark)
        result.skipped = skipped
    result.removed_parts = _remove_uncommitted(out_dir / stream, mark.last_id)
    accounted = mark.exported + mark.lost + mark.skipped
    pending = (info.entries_added - accounted if info.entries_added is not None else info.length)
    bar = tqdm(total=max(0, min(pending, info.length)), desc=f"export {stream}", unit="row",
               disable=not progress)
    read = 0
    with bar:
        if info.last_id is not None:
            for entries in _chunks(client, key, mark.last_id, info.last_id, chunk):
                rows = [ROWS[stream](i, orjson.loads(fields[field_name])) for i, fields in entries]
                for day, day_rows in _by_day(rows):
                    result.parts.append(_write_part(out_dir / stream, day, day_rows, SCHEMAS[stream]))
                read += len(rows)
                mark = replace(mark, last_id=entries[-1][0], exported=mark.exported + len(rows),
                               updated_at=clock())
                _store_watermark(client, out_dir, stream, prefix, mark)
                bar.update(len(rows))
    result.rows = read
    if info.entries_added is None:
        result.lost = None
    else:
        lost = max(0, info.entries_added - accounted - read)
        result.lost = lost
        mark = replace(mark, lost=mark.lost + lost, updated_at=clock())
        _store_watermark(client, out_dir, stream, prefix, mark)
    result.watermark = mark
    return result


def _info(client: Any, key: str) -> _StreamInfo:
    from redis.exceptions import ResponseError

    try:
        info = client.xinfo_stream(key)
    except ResponseError as exc:
        if "no such key" in str(exc).lower():
            return _StreamInfo(0, 0, None)
        raise
    added = info.get("entries-added")
    length = int(info.get("length", 0))
    last = info.get("last-entry")
    last_id = _text(last[0]) if length and last else None
    return _StreamInfo(int(added) if added is not None else None, length, last_id)


def _chunks(client: Any, key: str, after: str, end: str, count: int) -> Iterator[list[tuple[str, Any]]]:
    """The stream's entries in (after, end], `count` at a time."""
    start = "-" if after == START else f"({after}"
    if stream_position(after) >= stream_position(end):
        return
    while True:
        raw = client.xrange(key, min=start, max=end, count=count)
        if not raw:
            return
        entries = [(_text(i), fields) for i, fields in raw]
        yield entries
        if len(entries) < count or entries[-1][0] == end:
            return
        start = f"({entries[-1][0]}"


def _by_day(rows: list[dict[str, Any]]) -> Iterable[tuple[str, list[dict[str, Any]]]]:
    """The rows grouped by the UTC day of their stream id, in stream order."""
    days: dict[str, list[dict[str, Any]]] = {}
    for row in rows:
        days.setdefault(_day(row["stream_id"]), []).append(row)
    return days.items()


def _day(entry_id: str) -> str:
    return datetime.fromtimestamp(id_ms(entry_id) / 1000, UTC).strftime("%Y-%m-%d")


def part_ids(path: Path) -> tuple[str, str] | None:
    """(first, last) stream id of a part file, from its name; None for another file."""
    parts = path.name.removeprefix("part-").removesuffix(".parquet").split("-")
    if not path.name.startswith("part-") or not path.name.endswith(".parquet") or len(parts) != 4:
        return None
    if not all(p.isdigit() for p in parts):
        return None
    return f"{parts[0]}-{parts[1]}", f"{parts[2]}-{parts[3]}"


def _write_part(stream_dir: Path, day: str, rows: list[dict[str, Any]], schema: pa.Schema) -> Path:
    directory = stream_dir / f"day={day}"
    if not directory.is_dir():
        directory.mkdir(parents=True)
        _fsync_dir(stream_dir)  # the new directory's entry, before a part in it counts
    path = directory / f"part-{rows[0]['stream_id']}-{rows[-1]['stream_id']}.parquet"
    tmp = directory / f".{path.name}.tmp"
    table = pa.Table.from_pylist(rows, schema=schema)
    with open(tmp, "wb") as f:
        pq.write_table(table, f)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)
    _fsync_dir(directory)
    return path


def _fsync_dir(directory: Path) -> None:
    fd = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _remove_uncommitted(stream_dir: Path, last_id: str) -> int:
    """Delete the parts (and temporary files) a run wrote past the watermark, before it stopped."""
    if not stream_dir.is_dir():
        return 0
    mark = stream_position(last_id)
    removed = 0
    for directory in stream_dir.glob("day=*"):
        for path in directory.iterdir():
            ids = part_ids(path)
            if path.name.endswith(".tmp"):
                path.unlink()
            elif ids is not None and stream_position(ids[0]) > mark:
                path.unlink()
                removed += 1
    return removed


def _load_watermark(client: Any, out_dir: Path, stream: str, prefix: str) -> Watermark | None:
    """The stream's watermark: Redis', or the output folder's if that one is further on."""
    stored = Watermark.from_hash(client.hgetall(watermark_key(stream, prefix)))
    mirrored = _read_mirror(out_dir).get(stream)
    mirror = Watermark(**mirrored) if mirrored else None
    if stored is None or (mirror is not None
                          and stream_position(mirror.last_id) > stream_position(stored.last_id)):
        return mirror
    return stored


def _store_watermark(client: Any, out_dir: Path, stream: str, prefix: str, mark: Watermark) -> None:
    client.hset(watermark_key(stream, prefix), mapping=mark.as_hash())
    marks = _read_mirror(out_dir)
    marks[stream] = {"last_id": mark.last_id, "exported": mark.exported, "lost": mark.lost,
                     "skipped": mark.skipped, "updated_at": mark.updated_at}
    path = out_dir / WATERMARK_FILE
    tmp = out_dir / f".{WATERMARK_FILE}.tmp"
    with open(tmp, "w") as f:
        json.dump(marks, f, indent=2, sort_keys=True)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)
    _fsync_dir(out_dir)


def _read_mirror(out_dir: Path) -> dict[str, dict[str, Any]]:
    path = out_dir / WATERMARK_FILE
    if not path.is_file():
        return {}
    data: dict[str, dict[str, Any]] = json.loads(path.read_text())
    return data


def _text(value: bytes | str) -> str:
    return value.decode() if isinstance(value, bytes) else value
