"""The embedded store's streams for `nextbest export --url`: info, entries, watermark.

Without Redis the decision log and the feedback stream live only in the serving process
(`service/state/memory_streams.py`), so the export reads them over HTTP, with the
calls it makes on Redis otherwise (`training/service_streams.py`): XINFO STREAM, XRANGE
in (after, end], and HGETALL / HSET of its watermark. Admin scope once keys have scopes
(everything under `/v1/admin/`: `service/access.py`). A service on Redis answers 409
`streams_in_redis`: the export reads Redis itself there.
"""

from __future__ import annotations

import asyncio
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Path, Query
from fastapi.responses import Response
from pydantic import BaseModel, Field

from service.api import API_KEY_HEADER, ERRORS, JSONResponse, RuntimeDep, render_json
from service.errors import StreamsInRedis
from service.export_status import START, Watermark
from service.runtime import Runtime
from service.state.memory import MemoryState
from service.state.memory_streams import MemoryStreams

#: the routes' prefix (every method below it needs the admin scope)
STREAMS_ROUTE = "/v1/admin/streams"
#: entries per page at most
MAX_COUNT = 10_000
ID_PATTERN = r"^\d+-\d+$"

StreamName = Annotated[Literal["decisions", "feedback"],
                       Path(description="`decisions` (the decision log) or `feedback`.")]


class StreamInfo(BaseModel):
    stream: str
    length: int = Field(description="entries the stream holds now")
    entries_added: int = Field(description="entries it was ever given (since the service started)")
    first_id: str | None = Field(description="the oldest entry's id (null: empty)")
    last_id: str | None = Field(description="the newest entry's id (null: empty)")


class StreamEntry(BaseModel):
    id: str = Field(description="`<ms>-<seq>`: arrival milliseconds and a counter, increasing")
    record: dict[str, Any] = Field(description="the decision record or feedback event")


class StreamEntries(BaseModel):
    stream: str
    entries: list[StreamEntry]


class ExportWatermark(BaseModel):
    """What the export of one stream holds: every entry up to `last_id`."""

    last_id: str = Field(START, pattern=ID_PATTERN)
    exported: int = Field(0, ge=0)
    lost: int = Field(0, ge=0)
    skipped: int = Field(0, ge=0)
    updated_at: float = Field(0.0, ge=0)


class WatermarkAnswer(BaseModel):
    stream: str
    watermark: ExportWatermark | None = Field(description="null: never exported (since the "
                                              "service started)")


def _streams(runtime: Runtime) -> MemoryStreams:
    if not isinstance(runtime.state, MemoryState):
        raise StreamsInRedis("this service keeps its streams in Redis: run `nextbest export` "
                             "with NEXTBEST_REDIS_URL, which reads them from Redis directly")
    return runtime.state.streams


streams = APIRouter(prefix=STREAMS_ROUTE, tags=["export"],
                    responses={**ERRORS, 409: ERRORS[404]})
_KEY = {"parameters": [API_KEY_HEADER]}


@streams.get("/{stream}", response_model=StreamInfo, openapi_extra=_KEY)
async def stream_info(stream: StreamName, runtime: RuntimeDep) -> JSONResponse:
    """The stream's length, entries ever added, and its first and last ids."""
    info = _streams(runtime).info(stream)
    return JSONResponse({"stream": stream, "length": info["length"],
                         "entries_added": info["entries-added"],
                         "first_id": info["first-entry"], "last_id": info["last-entry"]})


@streams.get("/{stream}/entries", response_model=StreamEntries, openapi_extra=_KEY)
async def stream_entries(
    stream: StreamName, runtime: RuntimeDep,
    after: Annotated[str, Query(pattern=ID_PATTERN, description="Entries after this id "
                                "(exclusive; default: from the oldest).")] = START,
    end: Annotated[str | None, Query(pattern=ID_PATTERN, description="Up to this id "
                                     "(inclusive; default: the newest).")] = None,
    count: Annotated[int, Query(ge=1, le=MAX_COUNT, description="Entries at most.")] = 1000,
) -> Response:
    """Up to `count` entries with ids in (after, end], oldest first."""
    found = _streams(runtime).entries(stream, after, end, count)
    # a page is large: encoded in a worker thread (records are not changed once logged)
    body = await asyncio.to_thread(render_json, {
        "stream": stream, "entries": [{"id": i, "record": r} for i, r in found]})
    return Response(body, media_type="application/json")


@streams.get("/{stream}/watermark", response_model=WatermarkAnswer, openapi_extra=_KEY)
async def get_watermark(stream: StreamName, runtime: RuntimeDep) -> JSONResponse:
    """The export's watermark of the stream, as `nextbest export` stored it."""
    mark = Watermark.from_hash(_streams(runtime).watermark(stream))
    return JSONResponse({"stream": stream, "watermark": _fields(mark) if mark else None})


@streams.put("/{stream}/watermark", response_model=WatermarkAnswer, openapi_extra=_KEY)
async def put_watermark(stream: StreamName, body: ExportWatermark,
                        runtime: RuntimeDep) -> JSONResponse:
    """Store the export's watermark (the service's export gauges read it)."""
    mark = Watermark(**body.model_dump())
    _streams(runtime).set_watermark(stream, mark.as_hash())
    return JSONResponse({"stream": stream, "watermark": _fields(mark)})


def _fields(mark: Watermark) -> dict[str, Any]:
    return {"last_id": mark.last_id, "exported": mark.exported, "lost": mark.lost,
            "skipped": mark.skipped, "updated_at": mark.updated_at}
