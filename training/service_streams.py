"""The redis-py calls `training/export.py` makes, answered by a running service over HTTP.

A service without Redis keeps its decision log and feedback stream in its own memory;
`nextbest export --url` reads them through its admin endpoints
(`service/streams_api.py`), so the export itself is the same code on both backends.
Keys are Redis' (`nb:decisions`, `nb:export:feedback`, ...): the stream is the part after
the last colon. Entries come back as redis-py gives them, `(id, {b"<field>": <JSON>})`.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import httpx
import orjson

from service.export_status import STREAMS, Watermark

#: entries asked for per request (the service's most)
PAGE = 10_000


class ServiceStreamsError(RuntimeError):
    """The service could not be reached (`status` None) or answered `status`."""

    def __init__(self, message: str, status: int | None = None) -> None:
        super().__init__(message)
        self.status = status


class ServiceStreams:
    """`xinfo_stream`, `xrange`, `hgetall` and `hset` of one service's embedded streams."""

    def __init__(self, url: str, api_key: str | None = None, timeout: float = 60.0) -> None:
        self._http = httpx.Client(base_url=url.rstrip("/") + "/v1/admin/streams", timeout=timeout,
                                  headers={"x-api-key": api_key} if api_key else {})
        self.url = url

    def xinfo_stream(self, key: str) -> dict[str, Any]:
        info = self._get(f"/{_stream(key)}")
        last = info["last_id"]
        return {"entries-added": info["entries_added"], "length": info["length"],
                "last-entry": [last, {}] if last is not None else None}

    def xrange(self, key: str, min: str = "-", max: str = "+",  # redis-py's names
               count: int | None = None) -> list[tuple[str, dict[bytes, bytes]]]:
        """The entries after `min` ("(id", or "-": from the oldest) up to `max` (an id,
        inclusive, or "+"), `count` at most: the forms the export uses."""
        stream = _stream(key)
        field = STREAMS[stream][1].encode()
        if min != "-" and not min.startswith("("):
            raise ValueError(f"xrange min: expected '-' or '(<id>', got {min!r}")
        after = "0-0" if min == "-" else min.removeprefix("(")
        params: dict[str, str | int] = {} if max == "+" else {"end": max}
        out: list[tuple[str, dict[bytes, bytes]]] = []
        while count is None or len(out) < count:
            want = PAGE if count is None else PAGE if count - len(out) > PAGE else count - len(out)
            page = self._get(f"/{stream}/entries", {**params, "after": after, "count": want})
            entries = page["entries"]
            out += [(e["id"], {field: orjson.dumps(e["record"])}) for e in entries]
            if len(entries) < want:
                break
            after = entries[-1]["id"]
        return out

    def hgetall(self, key: str) -> dict[str, str]:
        mark = self._get(f"/{_stream(key)}/watermark")["watermark"]
        return {k: str(v) for k, v in mark.items()} if mark else {}

    def hset(self, key: str, mapping: Mapping[str, str]) -> None:
        mark = Watermark.from_hash(mapping) or Watermark()
        self._send("PUT", f"/{_stream(key)}/watermark", {
            "last_id": mark.last_id, "exported": mark.exported, "lost": mark.lost,
            "skipped": mark.skipped, "updated_at": mark.updated_at})

    def close(self) -> None:
        self._http.close()

    def _get(self, path: str, params: Mapping[str, str | int] | None = None) -> dict[str, Any]:
        return self._send("GET", path, params=params)

    def _send(self, method: str, path: str, body: Any = None,
              params: Mapping[str, str | int] | None = None) -> dict[str, Any]:
        try:
            response = self._http.request(method, path, json=body, params=params)
        except httpx.HTTPError as exc:
            raise ServiceStreamsError(f"{self.url} cannot be reached: {exc}") from exc
        if response.status_code != 200:
            try:
                message = response.json().get("message") or response.text
            except ValueError:
                message = response.text
            raise ServiceStreamsError(f"{response.status_code} from {method} "
                                      f"{response.request.url.path}: {message}",
                                      response.status_code)
        data: dict[str, Any] = response.json()
        return data


def _stream(key: str) -> str:
    stream = key.rpartition(":")[2]
    if stream not in STREAMS:
        raise ValueError(f"{key!r} names no exported stream ({', '.join(STREAMS)})")
    return stream
