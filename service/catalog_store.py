"""The catalog's versions and audit trail, shared by every replica.

The whole catalog document is the unit of change: each change (one action put or
deleted, the whole catalog put, a catalog file imported) makes a new version, numbered
1, 2, ... with the sha256 of its canonical JSON, and appends one audit entry (who, when,
the operation, which actions it added, changed and removed). A change that leaves the
document as it was makes no version and no entry. Every replica watches the current
version (`service/catalog_watch.py`).

One interface, two backends, chosen like the rest of the service's state:

- `RedisCatalogStore` when NEXTBEST_REDIS_URL is set: `nb:{catalog}:current` (the
  current version and its document), `nb:{catalog}:revision` (`<version> <sha256>`, what
  replicas poll) and `nb:{catalog}:audit` (a list, oldest first, the newest
  `AUDIT_MAX` entries), changed in one WATCH/MULTI transaction (one hash tag: one slot
  in Redis Cluster), so concurrent changes are applied one after the other, none lost;
- `FileCatalogStore` otherwise: a directory next to the catalog file, named after it
  (`<data_dir>/catalog-versions/` for the default `<data_dir>/catalog.json`), holding
  `current.json`, `revision` and `audit.jsonl`, replaced atomically (written aside, then
  renamed) under an exclusive lock file.

The catalog file (`NEXTBEST_CATALOG_PATH`, default `<data_dir>/catalog.json`) is an
import source: a replica starting with a file whose content differs from the content
last imported imports it as a new version (`import_file`); a file already imported is
not read again, so changes made through the API survive restarts. Changing the file is
therefore a catalog change like any other, and every replica should mount the same file.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import json
import os
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Protocol

import orjson

#: audit entries a Redis store keeps (the oldest are dropped beyond it)
AUDIT_MAX = 100_000
#: action ids listed per kind of change in one audit entry (the counts are complete)
AUDIT_IDS = 100


def canonical(document: Mapping[str, Any]) -> bytes:
    return orjson.dumps(document, option=orjson.OPT_SORT_KEYS)


def digest(document: Mapping[str, Any]) -> str:
    return hashlib.sha256(canonical(document)).hexdigest()


def now_iso() -> str:
    return datetime.now(UTC).isoformat(timespec="milliseconds")


@dataclass(frozen=True)
class StoredCatalog:
    """One version of the catalog document."""

    version: int
    sha256: str
    document: dict[str, Any]
    updated_at: str
    updated_by: str
    #: sha256 of the catalog file's bytes last imported (None: none imported yet)
    imported_sha256: str | None = None

    def to_json(self) -> bytes:
        return orjson.dumps({
            "version": self.version, "sha256": self.sha256, "document": self.document,
            "updated_at": self.updated_at, "updated_by": self.updated_by,
            "imported_sha256": self.imported_sha256,
        })

    @classmethod
    def from_json(cls, blob: bytes | str) -> StoredCatalog:
        doc = json.loads(blob)
        return cls(version=int(doc["version"]), sha256=str(doc["sha256"]),
                   document=doc["document"], updated_at=str(doc["updated_at"]),
                   updated_by=str(doc["updated_by"]), imported_sha256=doc.get("imported_sha256"))

    @property
    def revision(self) -> str:
        return f"{self.version} {self.sha256}"


@dataclass(frozen=True)
class Proposal:
    """A change's new document, and what the audit trail says about it."""

    document: dict[str, Any]
    operation: str  # import, put_catalog, put_action, delete_action
    by: str
    #: the imported file's sha256 (None: not an import, the one recorded stays)
    imported_sha256: str | None = None
    extra: dict[str, Any] = field(default_factory=dict)


#: a change: the current version (None: the store is empty) -> a proposal (None: no change)
Change = Callable[[StoredCatalog | None], Proposal | None]


@dataclass(frozen=True)
class Committed:
    stored: StoredCatalog
    #: the audit entry written (None: the document did not change)
    entry: dict[str, Any] | None


def changes(before: Mapping[str, Any] | None, after: Mapping[str, Any]) -> dict[str, Any]:
    """What `after` changed of `before`: actions added, changed (with the fields), removed,
    and the document's other keys that changed (at most `AUDIT_IDS` ids per kind)."""
    old = {str(a.get("action_id")): a for a in (before or {}).get("actions", [])}
    new = {str(a.get("action_id")): a for a in after.get("actions", [])}
    added = [a for a in new if a not in old]
    removed = [a for a in old if a not in new]
    changed = {}
    for a in new:
        if a in old and old[a] != new[a]:
            changed[a] = sorted(k for k in old[a].keys() | new[a].keys()
                                if old[a].get(k) != new[a].get(k))
    keys = sorted(k for k in (before or {}).keys() | after.keys()
                  if k != "actions" and (before or {}).get(k) != after.get(k))
    return {
        "added": added[:AUDIT_IDS], "changed": dict(list(changed.items())[:AUDIT_IDS]),
        "removed": removed[:AUDIT_IDS],
        "counts": {"added": len(added), "changed": len(changed), "removed": len(removed)},
        "fields": keys,
    }


def commit(current: StoredCatalog | None, proposal: Proposal | None) -> Committed | None:
    """The version `proposal` makes of `current` (None: nothing to write at all)."""
    if proposal is None:
        return None
    imported = proposal.imported_sha256 or (current.imported_sha256 if current else None)
    sha = digest(proposal.document)
    if current is not None and sha == current.sha256:
        if imported == current.imported_sha256:
            return None
        return Committed(StoredCatalog(current.version, current.sha256, current.document,
                                       current.updated_at, current.updated_by, imported), None)
    at = now_iso()
    version = (current.version if current else 0) + 1
    stored = StoredCatalog(version, sha, proposal.document, at, proposal.by, imported)
    entry = {"version": version, "sha256": sha, "at": at, "by": proposal.by,
             "operation": proposal.operation, **proposal.extra,
             "changes": changes(current.document if current else None, proposal.document)}
    return Committed(stored, entry)


class CatalogStore(Protocol):
    #: where the catalog lives, for messages
    where: str

    def revision(self) -> tuple[int, str] | None:
        """(version, sha256) of the current version, cheaply (None: empty store)."""

    def current(self) -> StoredCatalog | None: ...

    def update(self, change: Change) -> Committed | None:
        """Apply `change` to the current version atomically (it may raise to refuse)."""

    def audit(self, before: int | None, limit: int) -> list[dict[str, Any]]:
        """Audit entries of versions below `before` (None: all), newest first, at most `limit`."""

    def close(self) -> None: ...


def _page(entries: Sequence[dict[str, Any]], before: int | None, limit: int) -> list[dict[str, Any]]:
    kept = [e for e in entries if before is None or int(e["version"]) < before]
    return list(reversed(kept[-limit:])) if limit > 0 else []


def _parse_revision(text: bytes | str | None) -> tuple[int, str] | None:
    if not text:
        return None
    version, _, sha = (text.decode() if isinstance(text, bytes) else text).partition(" ")
    return int(version), sha


def store_directory(catalog_file: Path) -> Path:
    """Where the file backend keeps the versions of `catalog_file`'s catalog."""
    return catalog_file.with_name(f"{catalog_file.stem}-versions")


class FileCatalogStore:
    """The catalog's versions in a directory (the embedded default)."""

    def __init__(self, directory: Path) -> None:
        self.directory = Path(directory)
        self.where = str(self.directory)
        self._current = self.directory / "current.json"
        self._revision = self.directory / "revision"
        self._audit = self.directory / "audit.jsonl"

    def revision(self) -> tuple[int, str] | None:
        try:
            return _parse_revision(self._revision.read_text())
        except FileNotFoundError:
            return None

    def current(self) -> StoredCatalog | None:
        try:
            return StoredCatalog.from_json(self._current.read_bytes())
        except FileNotFoundError:
            return None

    @contextlib.contextmanager
    def _locked(self) -> Iterator[None]:
        self.directory.mkdir(parents=True, exist_ok=True)
        with (self.directory / ".lock").open("a") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(lock, fcntl.LOCK_UN)

    def _replace(self, path: Path, data: bytes) -> None:
        tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
        tmp.write_bytes(data)
        os.replace(tmp, path)

    def update(self, change: Change) -> Committed | None:
        with self._locked():
            current = self.current()
            done = commit(current, change(current))
            if done is None:
                return None
            if done.entry is not None:  # the trail first: a version is never unaudited
                with self._audit.open("ab") as trail:
                    trail.write(orjson.dumps(done.entry) + b"\n")
            self._replace(self._current, done.stored.to_json())
            self._replace(self._revision, done.stored.revision.encode())
            return done

    def audit(self, before: int | None, limit: int) -> list[dict[str, Any]]:
        try:
            lines = self._audit.read_bytes().splitlines()
        except FileNotFoundError:
            return []
        return _page([json.loads(line) for line in lines if line.strip()], before, limit)

    def close(self) -> None:
        return None


class RedisCatalogStore:
    """The catalog's versions in Redis, shared by every replica."""

    def __init__(self, client: Any, prefix: str = "nb:{catalog}:") -> None:
        self._r = client
        self.current_key = f"{prefix}current"
        self.revision_key = f"{prefix}revision"
        self.audit_key = f"{prefix}audit"
        self.where = f"Redis key {self.current_key}"

    def revision(self) -> tuple[int, str] | None:
        return _parse_revision(self._r.get(self.revision_key))

    def current(self) -> StoredCatalog | None:
        blob = self._r.get(self.current_key)
        return None if blob is None else StoredCatalog.from_json(blob)

    def update(self, change: Change) -> Committed | None:
        out: list[Committed | None] = [None]

        def apply(pipe: Any) -> None:
            blob = pipe.get(self.current_key)
            current = None if blob is None else StoredCatalog.from_json(blob)
            done = commit(current, change(current))
            out[0] = done
            pipe.multi()
            if done is None:
                return
            pipe.set(self.current_key, done.stored.to_json())
            pipe.set(self.revision_key, done.stored.revision)
            if done.entry is not None:
                pipe.rpush(self.audit_key, orjson.dumps(done.entry))
                pipe.ltrim(self.audit_key, -AUDIT_MAX, -1)

        self._r.transaction(apply, self.current_key)
        return out[0]

    def audit(self, before: int | None, limit: int) -> list[dict[str, Any]]:
        if limit <= 0:
            return []
        first = self._r.lindex(self.audit_key, 0)
        if first is None:
            return []
        oldest = int(json.loads(first)["version"])
        length = int(self._r.llen(self.audit_key))
        end = length - 1 if before is None else min(length - 1, before - oldest - 1)
        if end < 0:
            return []
        start = max(0, end - limit + 1)
        return [json.loads(e) for e in reversed(self._r.lrange(self.audit_key, start, end))]

    def close(self) -> None:
        self._r.close()


def catalog_store(redis_url: str | None, redis_cluster: bool, catalog_file: Path) -> CatalogStore:
    """Redis when the service's state is in Redis, next to the catalog file otherwise."""
    if not redis_url:
        return FileCatalogStore(store_directory(Path(catalog_file)))
    import redis

    client = (redis.RedisCluster.from_url(redis_url, socket_timeout=5.0) if redis_cluster
              else redis.Redis.from_url(redis_url, socket_timeout=5.0))
    return RedisCatalogStore(client)
