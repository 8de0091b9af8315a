"""API keys, their scopes, and the scope each path needs.

Keys come from `NEXTBEST_API_KEYS` (a comma-separated list) and/or a key file
(`NEXTBEST_API_KEYS_FILE`, YAML or JSON), which `KeySource.watch` reloads when it changes,
without a restart. Only the SHA-256 of each key is held in memory: a request's key is
hashed, looked up by its digest, and the match confirmed with `hmac.compare_digest`.
docs/operations.md ("API keys") documents the formats, rotation and rate limits.

    NEXTBEST_API_KEYS entries:  SECRET                          scopes decide+feedback, no limit
                                NAME:SECRET:SCOPE+SCOPE[:RATE[/BURST]]

Scopes: `decide` (`POST /v1/decisions`), `feedback` (`POST /v1/feedback`), `admin`
(everything under `/v1/admin/`: catalog and model administration) and `read` (`/metrics`
and the API docs, only with `NEXTBEST_PROTECT_READ`). A path of `/v1` named nowhere needs
a valid key of any scope; `/healthz` and `/readyz` are always open (probes).
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import logging
import math
import os
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

log = logging.getLogger(__name__)

SCOPES = ("decide", "feedback", "admin", "read")
#: What a key listed without a name or scopes (the original `NEXTBEST_API_KEYS` form) may do.
DEFAULT_SCOPES = frozenset({"decide", "feedback"})

#: Path (exact, or a prefix when it ends with "/") -> the scope a key needs there. A route
#: added under `/v1/admin/` needs `admin` with no change here; one elsewhere that needs a
#: scope is added to this mapping (or passed to `create_app(route_scopes=...)`).
ROUTE_SCOPES: dict[str, str] = {
    "/v1/decisions": "decide",
    "/v1/feedback": "feedback",
    "/v1/admin/": "admin",
}
#: The paths that need the `read` scope when `NEXTBEST_PROTECT_READ` is on (open otherwise).
READ_PATHS: dict[str, str] = {
    "/metrics": "read", "/docs": "read", "/docs/oauth2-redirect": "read", "/redoc": "read",
    "/openapi.json": "read",
}
#: The scope "any valid key" (a `/v1` path named nowhere).
ANY_KEY = ""


class AccessConfigError(ValueError):
    """The keys as configured cannot be used (the message names the entry and field)."""


@dataclass(frozen=True)
class RateLimit:
    """At most `per_second` requests per second on average, `burst` at once."""

    per_second: float
    burst: int

    def describe(self) -> str:
        return f"{self.per_second:g} requests/s (burst {self.burst})"


@dataclass(frozen=True)
class ApiKey:
    name: str
    #: SHA-256 of the key; the key itself is never kept.
    digest: bytes = field(repr=False)
    scopes: frozenset[str]
    rate_limit: RateLimit | None = None


def digest(secret: str | bytes) -> bytes:
    return hashlib.sha256(secret.encode() if isinstance(secret, str) else secret).digest()


def _scopes(values: Iterable[str], where: str) -> frozenset[str]:
    scopes = frozenset(v.strip() for v in values if v.strip())
    unknown = sorted(scopes - set(SCOPES))
    if unknown:
        raise AccessConfigError(f"{where}: unknown scope(s) {', '.join(map(repr, unknown))}; "
                                f"the scopes are {', '.join(SCOPES)}")
    if not scopes:
        raise AccessConfigError(f"{where}: no scope given; the scopes are {', '.join(SCOPES)}")
    return scopes


def _rate(text: str, where: str) -> RateLimit:
    rate, _, burst = text.partition("/")
    try:
        per_second = float(rate)
        limit = RateLimit(per_second, int(burst) if burst else max(1, math.ceil(per_second)))
    except ValueError:
        raise AccessConfigError(f"{where}: rate limit {text!r} is not RATE or RATE/BURST "
                                "(requests per second, burst as a whole number)") from None
    if not (math.isfinite(limit.per_second) and limit.per_second > 0) or limit.burst < 1:
        raise AccessConfigError(f"{where}: rate limit {text!r}: the rate must be above 0 and "
                                "the burst at least 1")
    return limit


def parse_env(text: str) -> list[ApiKey]:
    """The keys of `NEXTBEST_API_KEYS` (module docstring: the two forms of an entry)."""
    keys: list[ApiKey] = []
    for i, raw in enumerate(text.split(","), start=1):
        entry = raw.strip()
        if not entry:
            continue
        where = f"NEXTBEST_API_KEYS entry {i}"
        if ":" not in entry:
            keys.append(ApiKey(f"key-{i}", digest(entry), DEFAULT_SCOPES))
            continue
        parts = entry.split(":")
        if len(parts) not in (3, 4) or not parts[0] or not parts[1]:
            raise AccessConfigError(f"{where}: expected SECRET or NAME:SECRET:SCOPE+SCOPE"
                                    f"[:RATE[/BURST]], got {len(parts)} ':'-separated parts")
        limit = _rate(parts[3], where) if len(parts) == 4 else None
        keys.append(ApiKey(parts[0], digest(parts[1]), _scopes(parts[2].split("+"), where), limit))
    return keys


class _RateLimitEntry(BaseModel):
    model_config = ConfigDict(extra="forbid")
    per_second: float = Field(gt=0, allow_inf_nan=False)
    burst: int | None = Field(None, ge=1)


class _KeyEntry(BaseModel):
    model_config = ConfigDict(extra="forbid")
    name: str = Field(min_length=1, max_length=100)
    key: str | None = Field(None, min_length=1, description="the key itself (hashed at load)")
    sha256: str | None = Field(None, pattern="^[0-9a-fA-F]{64}$")
    scopes: list[str] = Field(min_length=1)
    rate_limit: _RateLimitEntry | None = None

    @field_validator("scopes")
    @classmethod
    def _known(cls, scopes: list[str]) -> list[str]:
        unknown = sorted(set(scopes) - set(SCOPES))
        if unknown:
            raise ValueError(f"unknown scope(s) {', '.join(map(repr, unknown))}; the scopes "
                             f"are {', '.join(SCOPES)}")
        return scopes

    @model_validator(mode="after")
    def _one_secret(self) -> _KeyEntry:
        if (self.key is None) == (self.sha256 is None):
            raise ValueError("give exactly one of `key` (the key) and `sha256` (its SHA-256, hex)")
        return self


class _KeyFile(BaseModel):
    model_config = ConfigDict(extra="forbid")
    keys: list[_KeyEntry]


def parse_file(text: str, source: str) -> list[ApiKey]:
    """The keys of a key file: `{"keys": [{name, key | sha256, scopes, rate_limit?}, ...]}`."""
    try:
        data: Any = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        # The parser's message quotes the offending line, which may hold a key.
        line = getattr(getattr(exc, "problem_mark", None), "line", None)
        where = f" near line {line + 1}" if line is not None else ""
        raise AccessConfigError(f"{source}: not valid YAML or JSON{where}") from None
    try:
        parsed = _KeyFile.model_validate(data if data is not None else {})
    except ValidationError as exc:
        problems = "; ".join(f"{'.'.join(map(str, e['loc'])) or '(top)'}: {e['msg']}"
                             for e in exc.errors(include_url=False, include_input=False))
        raise AccessConfigError(f"{source}: {problems}") from None
    keys = []
    for e in parsed.keys:
        limit = None
        if e.rate_limit is not None:
            burst = e.rate_limit.burst or max(1, math.ceil(e.rate_limit.per_second))
            limit = RateLimit(e.rate_limit.per_second, burst)
        secret = digest(e.key) if e.key is not None else bytes.fromhex(e.sha256 or "")
        keys.append(ApiKey(e.name, secret, frozenset(e.scopes), limit))
    return keys


class KeyRing:
    """The keys in force, found by the SHA-256 of what a request presents."""

    def __init__(self, keys: Iterable[ApiKey] = ()) -> None:
        self._by_digest: dict[bytes, ApiKey] = {}
        names: set[str] = set()
        for key in keys:
            if key.name in names:
                raise AccessConfigError(f"two keys are named {key.name!r}: names must be unique "
                                        "(they label rate limits, logs and metrics)")
            if key.digest in self._by_digest:
                raise AccessConfigError(f"keys {self._by_digest[key.digest].name!r} and "
                                        f"{key.name!r} are the same key")
            names.add(key.name)
            self._by_digest[key.digest] = key

    def find(self, presented: bytes) -> ApiKey | None:
        """The key whose SHA-256 is that of `presented`, if any.

        The dict lookup compares digests, never the key itself, and only after Python's
        per-process randomized hash of the digest matched; `compare_digest` confirms it.
        """
        d = hashlib.sha256(presented).digest()
        key = self._by_digest.get(d)
        if key is not None and hmac.compare_digest(key.digest, d):
            return key
        return None

    @property
    def names(self) -> list[str]:
        return sorted(k.name for k in self._by_digest.values())

    def __len__(self) -> int:
        return len(self._by_digest)


def _stamp(path: Path) -> tuple[int, int, int] | None:
    """What tells a changed file: its mtime, size and inode (following symlinks, as a
    Kubernetes Secret volume swaps them), None when it does not exist."""
    try:
        st = os.stat(path)
    except FileNotFoundError:
        return None
    return st.st_mtime_ns, st.st_size, st.st_ino


class KeySource:
    """The keys of `NEXTBEST_API_KEYS` and of a key file, the file reloaded when it changes.

    `load()` raises `AccessConfigError` (start-up refuses bad keys); later reloads that
    fail keep the keys in force, log why and count the failure (`on_reload`).
    """

    def __init__(self, env_keys: str | None, file: Path | None,
                 on_reload: Any = None) -> None:
        self._env = parse_env(env_keys) if env_keys else []
        self.file = file
        self.ring = KeyRing(self._env)
        self._stamp: tuple[int, int, int] | None = None
        self._on_reload = on_reload

    @property
    def configured(self) -> bool:
        return bool(self._env) or self.file is not None

    def load(self) -> KeyRing:
        if self.file is not None:
            self._stamp = _stamp(self.file)
            self.ring = self._read(self.file)
        return self.ring

    def _read(self, file: Path) -> KeyRing:
        try:
            text = file.read_text()
        except OSError as exc:
            raise AccessConfigError(f"NEXTBEST_API_KEYS_FILE {file}: cannot be read "
                                    f"({exc.strerror})") from None
        return KeyRing([*self._env, *parse_file(text, f"NEXTBEST_API_KEYS_FILE {file}")])

    def reload_if_changed(self) -> bool:
        """Read the key file again if it changed since last read; True when keys changed."""
        if self.file is None:
            return False
        stamp = _stamp(self.file)
        if stamp == self._stamp:
            return False
        self._stamp = stamp
        try:
            ring = self._read(self.file)
        except AccessConfigError as exc:
            log.error("API keys not reloaded, the keys in force stay: %s", exc)
            self._report("failed")
            return False
        self.ring = ring
        log.info("API keys reloaded", extra={"keys": ring.names, "file": str(self.file)})
        self._report("ok")
        return True

    def _report(self, result: str) -> None:
        if self._on_reload is not None:
            self._on_reload(result, len(self.ring))

    async def watch(self, interval: float) -> None:
        """Check the key file every `interval` seconds, for as long as the service runs."""
        while True:
            await asyncio.sleep(interval)
            self.reload_if_changed()


class AccessPolicy:
    """Which scope a request path needs: `scope_for(path)` is None where no key is needed."""

    def __init__(self, routes: Mapping[str, str] | None = None, protect_read: bool = False) -> None:
        table = {**ROUTE_SCOPES, **(routes or {}), **(READ_PATHS if protect_read else {})}
        unknown = sorted({s for s in table.values() if s not in SCOPES})
        if unknown:
            raise AccessConfigError(f"route scopes name unknown scope(s) {unknown}")
        self._exact = {p: s for p, s in table.items() if not p.endswith("/")}
        self._prefixes = sorted(((p, s) for p, s in table.items() if p.endswith("/")),
                                key=lambda ps: -len(ps[0]))

    def scope_for(self, path: str) -> str | None:
        scope = self._exact.get(path)
        if scope is not None:
            return scope
        for prefix, scope in self._prefixes:
            if path.startswith(prefix):
                return scope
        return ANY_KEY if path.startswith("/v1/") else None
