"""The model registry's pointers: which registered version serves, which one shadows it.

Registering a version (`service.manifest.write_model`) never makes it serve. Two
pointers per model name say what does: the **champion** (served) and the **challenger**
(scored next to the champion on a share of decisions, logged, never served). Every
replica watches them (`service/model_watch.py`) and a replica that starts serves the
champion, never the newest version on disk.

One interface, two backends, chosen like the rest of the service's state:

- `RedisPointers` when NEXTBEST_REDIS_URL is set: one JSON document at
  `nb:registry:<name>`, changed under WATCH/MULTI so two operators promoting at once
  do not lose a change;
- `FilePointers` otherwise: `<models_dir>/<name>/pointers.json`, replaced atomically
  (written aside, then renamed) under an exclusive lock file.

The document also keeps the champions it replaced (`history`, newest last), which is
what `rollback` returns to, and a revision number that grows with every change.
`Registry` is what the `nextbest models` commands call: it refuses a version that is
not registered, or whose files or manifest do not fit the configured world, by loading
it exactly as a replica would.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Protocol

from features.config import World
from features.encoding import Encoder
from service.errors import ModelError, RegistryRefused
from service.manifest import ModelManifest, read_manifest, versions
from service.model import OnnxScorer
from service.settings import Settings

POINTERS_FILE = "pointers.json"
#: champions kept for `rollback`
HISTORY = 20


@dataclass(frozen=True)
class Pointers:
    champion: str | None = None
    challenger: str | None = None
    #: share of decisions the challenger scores in shadow (0 without a challenger)
    share: float = 0.0
    #: champions replaced by a promotion, oldest first
    history: tuple[str, ...] = ()
    revision: int = 0
    updated_at: str | None = None

    def to_json(self) -> str:
        return json.dumps({
            "champion": self.champion, "challenger": self.challenger, "share": self.share,
            "history": list(self.history), "revision": self.revision,
            "updated_at": self.updated_at,
        }, indent=2)

    @classmethod
    def from_json(cls, text: str | bytes) -> Pointers:
        doc: Mapping[str, Any] = json.loads(text)
        return cls(champion=doc.get("champion"), challenger=doc.get("challenger"),
                   share=float(doc.get("share") or 0.0), history=tuple(doc.get("history") or ()),
                   revision=int(doc.get("revision") or 0), updated_at=doc.get("updated_at"))


Change = Callable[[Pointers], Pointers]


class PointerStore(Protocol):
    #: where the pointers live, for messages (`redis key nb:registry:x`, a file path)
    where: str

    def read(self) -> Pointers:
        """The pointers as they stand (all None before anything was promoted)."""

    def update(self, change: Change) -> Pointers:
        """Apply `change` to the current pointers atomically; the new pointers."""

    def close(self) -> None: ...


def _stamped(change: Change, current: Pointers) -> Pointers:
    new = change(current)
    return replace(new, revision=current.revision + 1,
                   updated_at=datetime.now(UTC).isoformat(timespec="seconds"))


class FilePointers:
    """The pointers in `<models_dir>/<name>/pointers.json` (the embedded default)."""

    def __init__(self, models_dir: Path, name: str) -> None:
        self.path = Path(models_dir) / name / POINTERS_FILE
        self.where = str(self.path)

    def read(self) -> Pointers:
        try:
            return Pointers.from_json(self.path.read_bytes())
        except FileNotFoundError:
            return Pointers()

    @contextlib.contextmanager
    def _locked(self) -> Iterator[None]:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with (self.path.parent / ".pointers.lock").open("a") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(lock, fcntl.LOCK_UN)

    def update(self, change: Change) -> Pointers:
        with self._locked():
            new = _stamped(change, self.read())
            tmp = self.path.with_name(f".{POINTERS_FILE}.{os.getpid()}.tmp")
            tmp.write_text(new.to_json())
            os.replace(tmp, self.path)
            return new

    def close(self) -> None:
        return None


class RedisPointers:
    """The pointers in one Redis key, `<prefix>registry:<name>`, shared by every replica."""

    def __init__(self, client: Any, name: str, prefix: str = "nb:") -> None:
        self._r = client
        self.key = f"{prefix}registry:{name}"
        self.where = f"Redis key {self.key}"

    def read(self) -> Pointers:
        blob = self._r.get(self.key)
        return Pointers() if blob is None else Pointers.from_json(blob)

    def update(self, change: Change) -> Pointers:
        out: list[Pointers] = []

        def apply(pipe: Any) -> None:
            blob = pipe.get(self.key)
            new = _stamped(change, Pointers() if blob is None else Pointers.from_json(blob))
            pipe.multi()
            pipe.set(self.key, new.to_json())
            out[:] = [new]

        self._r.transaction(apply, self.key)
        return out[0]

    def close(self) -> None:
        self._r.close()


def pointer_store(settings: Settings) -> PointerStore:
    """Redis when the service's state is in Redis, the models directory otherwise."""
    if not settings.redis_url:
        return FilePointers(settings.models_dir, settings.model_name)
    import redis

    client = (redis.RedisCluster.from_url(settings.redis_url, socket_timeout=5.0)
              if settings.redis_cluster
              else redis.Redis.from_url(settings.redis_url, socket_timeout=5.0))
    return RedisPointers(client, settings.model_name)


def registry_for(settings: Settings, world: World, encoder: Encoder | None = None) -> Registry:
    """The configured model's registry, checked against `world` (its `encoder`, when the
    caller has built it already); `with registry_for(...) as registry:` closes its store."""
    encoder = encoder if encoder is not None else Encoder(world)
    return Registry(pointer_store(settings), settings.models_dir, settings.model_name,
                    list(encoder.columns), encoder.encoding)


@dataclass(frozen=True)
class Registered:
    manifest: ModelManifest
    directory: Path


@dataclass
class Registry:
    """The registered versions of one model and its pointers, checked against a world.

    `columns` and `encoding`: what the service encodes (`Encoder.columns`,
    `Encoder.encoding`); a version that does not fit them is refused before a pointer
    moves, with the message a replica would log.
    """

    store: PointerStore
    models_dir: Path
    name: str
    columns: list[str]
    encoding: Mapping[str, Any] | None = None

    def __enter__(self) -> Registry:
        return self

    def __exit__(self, *exc: object) -> None:
        self.store.close()

    def registered(self) -> list[Registered]:
        """Every registered version, oldest first."""
        out = []
        for v in versions(self.models_dir, self.name):
            directory = self.models_dir / self.name / str(v)
            out.append(Registered(read_manifest(directory), directory))
        return out

    def pointers(self) -> Pointers:
        return self.store.read()

    def load(self, version: str) -> OnnxScorer:
        """The version's scorer, with every check a replica makes at load (ModelError)."""
        directory = self.models_dir / self.name / version
        if not directory.is_dir():
            known = ", ".join(str(v) for v in versions(self.models_dir, self.name)) or "none"
            raise ModelError(f"model {self.name} has no version {version} under "
                             f"{self.models_dir} (registered: {known})")
        return OnnxScorer(directory, self.columns, self.encoding)

    def _checked(self, version: str) -> str:
        version = _version(version)
        try:
            self.load(version)
        except ModelError as exc:
            raise RegistryRefused(f"refusing {self.name} v{version}: {exc.message}") from exc
        return version

    def promote(self, version: str) -> Pointers:
        """Make `version` the champion; the champion it replaces goes to the history."""
        version = self._checked(version)

        def change(p: Pointers) -> Pointers:
            if p.champion == version:
                return p
            history = p.history if p.champion is None else (*p.history, p.champion)[-HISTORY:]
            challenger = None if p.challenger == version else p.challenger
            return replace(p, champion=version, history=history, challenger=challenger,
                           share=p.share if challenger else 0.0)

        return self.store.update(change)

    def shadow(self, version: str, share: float) -> Pointers:
        """Make `version` the challenger, scored on `share` of decisions (0 < share <= 1)."""
        if not 0.0 < share <= 1.0:
            raise RegistryRefused(f"--share must be in (0, 1], got {share}")
        version = self._checked(version)

        def change(p: Pointers) -> Pointers:
            if p.champion == version:
                raise RegistryRefused(f"{self.name} v{version} is the champion already")
            return replace(p, challenger=version, share=share)

        return self.store.update(change)

    def stop_shadow(self) -> Pointers:
        return self.store.update(lambda p: replace(p, challenger=None, share=0.0))

    def rollback(self) -> Pointers:
        """Back to the champion before this one (which leaves the history); a challenger
        that is that version stops shadowing it."""

        def change(p: Pointers) -> Pointers:
            if not p.history:
                raise RegistryRefused(
                    f"{self.name} has no earlier champion to roll back to "
                    f"(champion: {p.champion or 'none'}; pointers: {self.store.where})")
            target = self._checked(p.history[-1])
            shadowed = p.challenger is not None and p.challenger != target
            return replace(p, champion=target, history=p.history[:-1],
                           challenger=p.challenger if shadowed else None,
                           share=p.share if shadowed else 0.0)

        return self.store.update(change)


def _version(text: str) -> str:
    """`3`, `v3` -> `3`: versions are positive integers."""
    digits = text[1:] if text[:1] in ("v", "V") else text
    if not digits.isdigit() or int(digits) <= 0:
        raise RegistryRefused(f"a version is a positive integer (e.g. 3), got '{text}'")
    return str(int(digits))
