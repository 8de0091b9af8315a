"""Changing the catalog: the operations of the admin API, checked before they are kept.

Each operation is a change applied to the store's current version in one atomic step
(`service/catalog_store.py`): it builds the new document, validates it exactly as a
replica loading it would (`parse_catalog`, then `Catalog(spec, world)`: pydantic types,
the world's vocabularies, the rules compiled), and refuses it with an error naming the
action and the field (`InvalidCatalog`, 422). `expected` is the version the caller last
read (`If-Match`): when another change came first, the operation is refused
(`VersionMismatch`, 412) and the caller reads again; without it the change applies to
whatever is current, which is safe for one action (the action is replaced in the
current document, other actions' concurrent changes stay).

The calls block (file locks, Redis round trips, validation): the API runs them in a
worker thread.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pydantic import ValidationError

from features.config import World
from service.catalog import Action, Catalog, CatalogFile, parse_catalog
from service.catalog_store import CatalogStore, Committed, Proposal, StoredCatalog
from service.errors import InvalidCatalog, NotFound, UnknownAction, VersionMismatch


def validated(document: bytes | Mapping[str, Any], world: World) -> tuple[CatalogFile, dict[str, Any]]:
    """The document parsed and checked against `world`, and its canonical form (what is
    stored: the keys given, defaults left out); InvalidCatalog naming action and field."""
    raw = document if isinstance(document, bytes) else json.dumps(document)
    try:
        spec = parse_catalog(raw)
        Catalog(spec, world)
    except ValueError as exc:
        raise InvalidCatalog(str(exc)) from None
    return spec, spec.model_dump(mode="json", by_alias=True, exclude_unset=True)


def build(stored: StoredCatalog, world: World, previous: Catalog | None = None) -> Catalog:
    """The serving catalog of a stored version (rows carried over from `previous`)."""
    spec = parse_catalog(json.dumps(stored.document))
    return Catalog(spec, world, previous, version=str(stored.version))


def _body(body: bytes) -> Any:
    try:
        return json.loads(body)
    except (ValueError, UnicodeDecodeError) as exc:
        raise InvalidCatalog(f"the body is not JSON: {exc}") from None


def _check(current: StoredCatalog | None, expected: int | None) -> StoredCatalog:
    if current is None:
        raise NotFound("there is no catalog yet")
    if expected is not None and expected != current.version:
        raise VersionMismatch(f"the catalog is at version {current.version}, not {expected} "
                              "(If-Match): read it again and retry")
    return current


@dataclass
class CatalogAdmin:
    store: CatalogStore
    world: World

    def current(self) -> StoredCatalog:
        current = self.store.current()
        if current is None:
            raise NotFound("there is no catalog yet")
        return current

    def action(self, action_id: str) -> tuple[StoredCatalog, dict[str, Any]]:
        current = self.current()
        for a in current.document.get("actions", []):
            if a.get("action_id") == action_id:
                return current, a
        raise UnknownAction(f"no action {action_id!r} in catalog version {current.version}")

    def put_catalog(self, body: bytes, by: str, expected: int | None = None) -> Committed | None:
        """Replace the whole document."""
        _, document = validated(body, self.world)

        def change(current: StoredCatalog | None) -> Proposal:
            if current is not None or expected is not None:
                _check(current, expected)
            return Proposal(document, "put_catalog", by)

        return self.store.update(change)

    def put_action(self, action_id: str, body: bytes, by: str,
                   expected: int | None = None) -> tuple[Committed | None, bool]:
        """Add the action, or replace it; (what was written, whether it was added)."""
        action = _body(body)
        if not isinstance(action, dict):
            raise InvalidCatalog(f"action {action_id!r}: the body must be a JSON object")
        named = action.setdefault("action_id", action_id)
        if named != action_id:
            raise InvalidCatalog(f"action {action_id!r} field 'action_id': the body names "
                                 f"{named!r}, the path {action_id!r}")
        try:
            Action.model_validate(action)
        except ValidationError as exc:  # named by id, as the whole document's errors are
            raise InvalidCatalog(str(_action_errors(action_id, exc))) from None
        added = [False]

        def change(current: StoredCatalog | None) -> Proposal:
            current = _check(current, expected)
            actions = list(current.document.get("actions", []))
            at = next((i for i, a in enumerate(actions) if a.get("action_id") == action_id), None)
            added[0] = at is None
            if at is None:
                actions.append(action)
            else:
                actions[at] = action
            _, document = validated({**current.document, "actions": actions}, self.world)
            return Proposal(document, "put_action", by)

        return self.store.update(change), added[0]

    def delete_action(self, action_id: str, by: str, expected: int | None = None) -> Committed | None:
        def change(current: StoredCatalog | None) -> Proposal:
            current = _check(current, expected)
            actions = [a for a in current.document.get("actions", [])
                       if a.get("action_id") != action_id]
            if len(actions) == len(current.document.get("actions", [])):
                raise UnknownAction(f"no action {action_id!r} in catalog version {current.version}")
            _, document = validated({**current.document, "actions": actions}, self.world)
            return Proposal(document, "delete_action", by)

        return self.store.update(change)

    def audit(self, before: int | None, limit: int) -> list[dict[str, Any]]:
        return self.store.audit(before, limit)


def _action_errors(action_id: str, exc: ValidationError) -> str:
    return "; ".join(
        f"action {action_id!r} field {'.'.join(str(p) for p in e['loc']) or '(the action)'!r}: "
        f"{e['msg'].removeprefix('Value error, ')}" for e in exc.errors(include_url=False))


def import_file(store: CatalogStore, path: Path, world: World) -> StoredCatalog:
    """The version to serve at start-up: the store's, after importing `path` when its
    content was not the one imported last. A missing file is fine once the store holds a
    catalog; errors name the file."""
    try:
        raw = path.read_bytes()
    except FileNotFoundError:
        current = store.current()
        if current is None:
            raise FileNotFoundError(f"catalog file {path} does not exist (and {store.where} "
                                    "holds no catalog)") from None
        return current
    sha = hashlib.sha256(raw).hexdigest()

    def change(current: StoredCatalog | None) -> Proposal | None:
        if current is not None and current.imported_sha256 == sha:
            return None
        try:
            _, document = validated(raw, world)
        except InvalidCatalog as exc:
            raise ValueError(f"catalog file {path} is invalid: {exc.message}") from None
        return Proposal(document, "import", f"file {path}", imported_sha256=sha,
                        extra={"source": str(path)})

    store.update(change)
    current = store.current()
    assert current is not None
    return current
