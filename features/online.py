"""The fast online-feature reader: Feast's online stores, read without the Feast SDK.

The SDK spends most of a read in layers around the store (registry resolution, key
encoding, response building); the decision path cannot afford that. This module reads
the same bytes Feast writes, with Feast's own layout (feast 0.67,
`infra/key_encoding_utils.py`, `infra/online_stores/{redis,sqlite}.py`):

- entity key = serialize_entity_key(v3): u32 count, then per join key u32 type, u32 len,
  utf-8 name; then per value u32 type, u32 len, bytes (all little-endian);
- Redis: one hash per entity key (+ project name), shared by every view on that entity;
  field = murmur3-32 of "{view}:{feature}" as 4 little-endian bytes, value = serialized
  `feast.types.Value`; `_ts:{view}` holds a `google.protobuf.Timestamp`;
- SQLite: table `{project}_{view}`, one row per (entity_key, feature_name).

The layouts come from the world configuration (`EntityLayout.of`), the same declarations
`features/definitions.py` builds the Feast repository from.
`tests/features/test_parity.py` proves equality with `FeatureStore.get_online_features`,
for every shipped world.
Protobuf messages are decoded by hand: the two message shapes involved are tiny and the
generated classes would pull `import feast` (seconds) into the service.
"""

from __future__ import annotations

import sqlite3
import struct
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Protocol

import mmh3

from features.config import FeatureType, World

_STRING_TYPE = 2  # feast.types.ValueType.STRING
_U32 = struct.Struct("<I")
_F32 = struct.Struct("<f")
_F64 = struct.Struct("<d")

Scalar = str | float | int | bool | bytes | None


def serialize_entity_key(join_key: str, value: str) -> bytes:
    """Feast's serialize_entity_key (version 3) for one string join key."""
    k = join_key.encode()
    v = value.encode()
    return b"".join((
        _U32.pack(1), _U32.pack(_STRING_TYPE), _U32.pack(len(k)), k,
        _U32.pack(_STRING_TYPE), _U32.pack(len(v)), v,
    ))


def field_hash(view: str, feature: str) -> bytes:
    """Feast's Redis hash field for one feature: murmur3-32, little-endian."""
    return struct.pack("<I", mmh3.hash(f"{view}:{feature}", signed=False))


def _varint(buf: bytes, pos: int) -> tuple[int, int]:
    result = shift = 0
    while True:
        b = buf[pos]
        pos += 1
        result |= (b & 0x7F) << shift
        if not b & 0x80:
            return result, pos
        shift += 7


def _signed64(v: int) -> int:
    return v - (1 << 64) if v >= 1 << 63 else v


def decode_value(buf: bytes) -> Scalar:
    """Decode a serialized `feast.types.Value` holding a scalar (None for null/empty)."""
    if not buf:
        return None
    tag, pos = _varint(buf, 0)
    number, wire = tag >> 3, tag & 7
    if wire == 0:
        raw, _ = _varint(buf, pos)
        if number == 7:
            return bool(raw)
        if number in (3, 4, 8):  # int32, int64, unix_timestamp
            return _signed64(raw)
        return None  # null_val
    if wire == 1 and number == 5:
        return float(_F64.unpack_from(buf, pos)[0])
    if wire == 5 and number == 6:
        return float(_F32.unpack_from(buf, pos)[0])
    if wire == 2:
        length, pos = _varint(buf, pos)
        data = buf[pos:pos + length]
        if number == 2:
            return data.decode()
        if number == 1:
            return bytes(data)
    raise ValueError(f"unsupported feast Value field {number} (wire type {wire})")


def decode_timestamp(buf: bytes) -> float:
    """A serialized `google.protobuf.Timestamp` as epoch seconds."""
    seconds = nanos = 0
    pos = 0
    while pos < len(buf):
        tag, pos = _varint(buf, pos)
        value, pos = _varint(buf, pos)
        if tag >> 3 == 1:
            seconds = _signed64(value)
        elif tag >> 3 == 2:
            nanos = value
    return seconds + nanos / 1e9


@dataclass(frozen=True)
class FeatureRow:
    """One entity's features as read from the online store."""

    values: dict[str, Scalar]  # feature name -> value (features never written are absent)
    event_ts: float  # oldest event time across the entity's views, epoch seconds


class OnlineFeatureReader(Protocol):
    """Reads one entity type's features; `None` for an entity never written."""

    async def read(self, entity_id: str) -> FeatureRow | None: ...

    async def read_many(self, entity_ids: Sequence[str]) -> dict[str, FeatureRow]: ...


class EntityLayout:
    """Where Feast keeps one entity type's views: keys, hash fields, table names."""

    def __init__(
        self, project: str, join_key: str, views: Mapping[str, Sequence[tuple[str, FeatureType]]]
    ) -> None:
        self.project = project
        self.join_key = join_key
        self.views = list(views)
        self.features = [(v, f) for v, fs in views.items() for f, _ in fs]
        self.fields = [field_hash(v, f) for v, f in self.features]
        self.fields += [f"_ts:{v}".encode() for v in self.views]
        self._project_bytes = project.encode()

    @classmethod
    def of(cls, world: World, entity: str) -> EntityLayout:
        """The layout of `entity`'s feature views in `world`'s Feast project."""
        return cls(world.project, world.join_key(entity), world.views_of(entity))

    def redis_key(self, entity_id: str) -> bytes:
        return serialize_entity_key(self.join_key, entity_id) + self._project_bytes

    def decode_hash(self, raw: Sequence[bytes | None]) -> FeatureRow | None:
        """Turn one HMGET reply (fields in `self.fields` order) into a row."""
        n = len(self.features)
        stamps = [decode_timestamp(ts) for ts in raw[n:] if ts is not None]
        if not stamps:
            return None
        values: dict[str, Scalar] = {}
        for (_, feature), blob in zip(self.features, raw[:n], strict=False):
            if blob is not None:
                values[feature] = decode_value(blob)
        return FeatureRow(values, min(stamps))


class RedisFeatureReader:
    """Feast's Redis online store, one HMGET (one round trip) per entity."""

    def __init__(self, client: Any, layout: EntityLayout) -> None:
        # redis.asyncio.Redis, RedisCluster, or the service's lean RespConnection (`read`
        # only: it has `execute_command` but no pipelines)
        self._client = client
        self._layout = layout

    async def read(self, entity_id: str) -> FeatureRow | None:
        raw = await self._client.execute_command(
            "HMGET", self._layout.redis_key(entity_id), *self._layout.fields
        )
        return self._layout.decode_hash(raw)

    async def read_many(self, entity_ids: Sequence[str]) -> dict[str, FeatureRow]:
        pipe = self._client.pipeline(transaction=False)
        for entity_id in entity_ids:
            pipe.hmget(self._layout.redis_key(entity_id), self._layout.fields)
        replies = await pipe.execute()
        rows = {e: self._layout.decode_hash(r) for e, r in zip(entity_ids, replies, strict=False)}
        return {e: r for e, r in rows.items() if r is not None}


def _epoch(ts: Any) -> float:
    """Feast's SQLite event_ts as epoch seconds.

    Feast 0.67 stores `int(naive_utc.timestamp())` and reads it back with
    `datetime.fromtimestamp` as naive UTC; mirror that so a non-UTC host agrees with it.
    """
    if isinstance(ts, int | float):
        ts = datetime.fromtimestamp(int(ts))
    elif isinstance(ts, bytes | str):
        raw = ts.decode() if isinstance(ts, bytes) else ts
        ts = datetime.fromtimestamp(int(raw)) if raw.isdigit() else datetime.fromisoformat(raw)
    if ts.tzinfo is None:
        ts = ts.replace(tzinfo=UTC)
    return float(ts.timestamp())


class SqliteFeatureReader:
    """Feast's SQLite online store (the embedded default); reads are local and sub-ms."""

    def __init__(self, path: Path, layout: EntityLayout) -> None:
        if not path.is_file():
            raise FileNotFoundError(
                f"Feast online store {path} does not exist: run `nextbest materialize` "
                "(or `nextbest demo`) first"
            )
        self._conn = sqlite3.connect(f"file:{path}?mode=ro", uri=True, check_same_thread=False)
        self._layout = layout
        self._queries = {
            view: f'SELECT feature_name, value, event_ts FROM "{layout.project}_{view}" '
                  "WHERE entity_key = ?"
            for view in layout.views
        }
        self._wanted = {(v, f) for v, f in layout.features}

    def _read(self, entity_id: str) -> FeatureRow | None:
        key = serialize_entity_key(self._layout.join_key, entity_id)
        values: dict[str, Scalar] = {}
        stamps: list[float] = []
        for view, query in self._queries.items():
            rows = self._conn.execute(query, (key,)).fetchall()
            if rows:
                stamps.append(_epoch(rows[0][2]))
            for feature, blob, _ in rows:
                if (view, feature) in self._wanted:
                    values[feature] = decode_value(blob)
        if not stamps:
            return None
        return FeatureRow(values, min(stamps))

    async def read(self, entity_id: str) -> FeatureRow | None:
        return self._read(entity_id)

    async def read_many(self, entity_ids: Sequence[str]) -> dict[str, FeatureRow]:
        rows = {e: self._read(e) for e in entity_ids}
        return {e: r for e, r in rows.items() if r is not None}

    def close(self) -> None:
        self._conn.close()
