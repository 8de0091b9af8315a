"""The materialization mark: what the last materialization into Redis left there.

A Redis restarted without persistence, a `FLUSHALL` or an eviction storm empties the
online store while every service process keeps answering: every customer becomes
`unknown_customer` and the action features fall back to defaults, with nothing failing.
So each materialization into Redis (`features/store.py`) ends by writing a small hash,
`nextbest:materialized:{project}` (no TTL), that the service's health check
(`service/health.py`) reads every few seconds:

- `at`: when the materialization ended (Unix seconds);
- `entity`: the entity sampled (the world's customer entity, else its action entity);
- `source_entities`: how many ids of that entity its source holds;
- `sample`: a JSON list of up to `SAMPLE_SIZE` of those ids, spread over the sorted ids,
  each checked to be in the online store when the mark was written.

The store counts as emptied when the mark is gone, or when fewer than half of the
sampled ids still have a hash (a sudden drop of the entity count, estimated from the
sample). Feast's keys are binary (an encoded entity key, then the project) and cannot
collide with this text key. The layout is defined here, below both the writer and the
reader.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import orjson

#: sampled ids recorded by a materialization
SAMPLE_SIZE = 16


def mark_key(project: str) -> str:
    """The Redis key of the mark of `project`'s online store."""
    return f"nextbest:materialized:{project}"


def spread(ids: Sequence[str], n: int = SAMPLE_SIZE) -> list[str]:
    """Up to `n` of the sorted `ids`, evenly spaced (the same ones for the same ids)."""
    ordered = sorted(set(ids))
    if len(ordered) <= n:
        return ordered
    step = len(ordered) / n
    return [ordered[int(i * step)] for i in range(n)]


@dataclass(frozen=True)
class MaterializationMark:
    at: float
    entity: str
    source_entities: int
    sample: list[str] = field(default_factory=list)

    @classmethod
    def from_hash(cls, fields: Mapping[Any, Any]) -> MaterializationMark | None:
        """From HGETALL's reply (bytes or str keys); None when the hash does not exist."""
        if not fields:
            return None
        f = {_text(k): _text(v) for k, v in fields.items()}
        sample = orjson.loads(f.get("sample", "[]"))
        return cls(at=float(f.get("at", 0.0)), entity=f.get("entity", ""),
                   source_entities=int(f.get("source_entities", 0)),
                   sample=[str(s) for s in sample] if isinstance(sample, list) else [])

    def as_hash(self) -> dict[str, str]:
        return {"at": repr(self.at), "entity": self.entity,
                "source_entities": str(self.source_entities),
                "sample": orjson.dumps(self.sample).decode()}


def _text(value: bytes | str) -> str:
    return value.decode() if isinstance(value, bytes) else value
