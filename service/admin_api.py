"""The catalog admin API: read and change the catalog, read its audit trail.

HTTP only: the operations and their checks are `service/catalog_admin.py`'s, run in a
worker thread (they take a file lock or Redis round trips); this module reads bodies and
headers and writes answers. Every answer carrying a version sets `ETag: "<version>"`; a
change sent with `If-Match: "<version>"` is refused with 412 when the catalog has moved
on since (`*` or no header: apply to whatever is current). After a change this
replica's watcher checks at once; the other replicas follow within their watch interval
(docs/catalog.md).

`ADMIN_ROUTES` is the one list of the paths that need the admin scope once API keys
have scopes; the audit trail's `by` is the request's `principal` (the key's name, which
the key check leaves in the request state) or "anonymous".
"""

from __future__ import annotations

import asyncio
from typing import Annotated, Any

from fastapi import APIRouter, Query, Request
from fastapi.responses import Response

from service.api import API_KEY_HEADER, ERRORS, JSONResponse, RuntimeDep, runtime_in
from service.catalog_admin import CatalogAdmin
from service.catalog_store import Committed, StoredCatalog
from service.errors import BadRequest, NotReady, PayloadTooLarge
from service.runtime import Runtime
from service.schemas import ActionList, ActionVersion, AuditPage, CatalogChange, CatalogVersion

#: path prefixes of the admin API (every method): the admin scope's once keys have scopes
ADMIN_ROUTES = ("/v1/actions", "/v1/catalog")
#: audit entries per page at most
AUDIT_PAGE = 500


def needs_admin(path: str) -> bool:
    """Whether a request to `path` is an admin call."""
    return any(path == p or path.startswith(p + "/") for p in ADMIN_ROUTES)


def _admin(runtime: Runtime) -> CatalogAdmin:
    if runtime.catalog_admin is None:
        raise NotReady("the catalog store is not configured")
    return runtime.catalog_admin


def _principal(request: Request) -> str:
    name = request.scope.get("state", {}).get("principal")
    return str(name) if name else "anonymous"


def _expected(request: Request) -> int | None:
    """The version `If-Match` names (None: no header, or `*`)."""
    header = request.headers.get("if-match")
    if header is None or header.strip() == "*":
        return None
    text = header.strip().removeprefix("W/").strip('"')
    if not text.isdigit():
        raise BadRequest(f"If-Match: expected a catalog version such as \"7\", got {header!r}")
    return int(text)


async def _body(request: Request, runtime: Runtime) -> bytes:
    limit = runtime.settings.max_body_bytes
    declared = request.headers.get("content-length")
    if declared is not None and declared.isdigit() and int(declared) > limit:
        raise PayloadTooLarge(f"request body of {declared} bytes declared; the limit is {limit}")
    body = await request.body()
    if len(body) > limit:
        raise PayloadTooLarge(f"request body larger than {limit} bytes")
    return body


def _tagged(payload: Any, version: int, status: int = 200) -> Response:
    return JSONResponse(payload, status_code=status, headers={"etag": f'"{version}"'})


async def _changed(runtime: Runtime, admin: CatalogAdmin, done: Committed | None,
                   status: int = 200) -> Response:
    if done is None:  # nothing to write: the document was already so
        current = await asyncio.to_thread(admin.current)
        return _tagged({"version": current.version, "sha256": current.sha256,
                        "changed": False, "audit": None}, current.version)
    if runtime.catalog_watcher is not None:
        runtime.catalog_watcher.wake()
    stored: StoredCatalog = done.stored
    return _tagged({"version": stored.version, "sha256": stored.sha256,
                    "changed": done.entry is not None, "audit": done.entry},
                   stored.version, status)


def _json_body(ref: str) -> dict[str, Any]:
    return {"requestBody": {"required": True, "content": {"application/json": {
        "schema": {"$ref": f"#/components/schemas/{ref}"}}}},
        "parameters": [API_KEY_HEADER, IF_MATCH]}


IF_MATCH: dict[str, Any] = {
    "name": "if-match", "in": "header", "required": False, "schema": {"type": "string"},
    "description": 'The catalog version the change is based on, e.g. "7" (412 when it is '
                   "no longer current).",
}
RESPONSES: dict[int | str, dict[str, Any]] = {**ERRORS, 412: ERRORS[404], 413: ERRORS[404]}

admin = APIRouter(prefix="/v1", tags=["catalog"], responses=RESPONSES)


@admin.get("/actions", response_model=ActionList, openapi_extra={"parameters": [API_KEY_HEADER]})
async def list_actions(runtime: RuntimeDep) -> Response:
    """Every action of the catalog's current version (inactive ones included)."""
    current = await asyncio.to_thread(_admin(runtime).current)
    return _tagged({"version": current.version, "actions": current.document.get("actions", [])},
                   current.version)


@admin.get("/actions/{action_id}", response_model=ActionVersion,
           openapi_extra={"parameters": [API_KEY_HEADER]})
async def get_action(action_id: str, runtime: RuntimeDep) -> Response:
    """One action as the current version has it (404 `unknown_action`)."""
    current, action = await asyncio.to_thread(_admin(runtime).action, action_id)
    return _tagged({"version": current.version, "action": action}, current.version)


@admin.put("/actions/{action_id}", response_model=CatalogChange,
           responses={201: {"model": CatalogChange, "description": "Added"}},
           openapi_extra=_json_body("Action"))
async def put_action(action_id: str, request: Request) -> Response:
    """Add the action (201) or replace it (200): a new catalog version.

    The body is an action (`Action`; `action_id` may be left out, and must be the path's
    when given). 422 `invalid_catalog` names the action and the field.
    """
    runtime = runtime_in(request.scope.get("state"))
    admin_ = _admin(runtime)
    body, expected = await _body(request, runtime), _expected(request)
    done, added = await asyncio.to_thread(admin_.put_action, action_id, body,
                                          _principal(request), expected)
    return await _changed(runtime, admin_, done, 201 if added and done is not None else 200)


@admin.delete("/actions/{action_id}", response_model=CatalogChange,
              openapi_extra={"parameters": [API_KEY_HEADER, IF_MATCH]})
async def delete_action(action_id: str, request: Request) -> Response:
    """Remove the action from the catalog: a new version (404 `unknown_action`). Once it
    serves, the action is never offered again; what was learned about it is kept."""
    runtime = runtime_in(request.scope.get("state"))
    admin_ = _admin(runtime)
    done = await asyncio.to_thread(admin_.delete_action, action_id, _principal(request),
                                   _expected(request))
    return await _changed(runtime, admin_, done)


@admin.get("/catalog", response_model=CatalogVersion, openapi_extra={"parameters": [API_KEY_HEADER]})
async def get_catalog(runtime: RuntimeDep) -> Response:
    """The current version's whole document, and the version this replica serves."""
    current = await asyncio.to_thread(_admin(runtime).current)
    return _tagged({"version": current.version, "sha256": current.sha256,
                    "updated_at": current.updated_at, "updated_by": current.updated_by,
                    "serving": runtime.engine.catalog.version, "document": current.document},
                   current.version)


@admin.put("/catalog", response_model=CatalogChange, openapi_extra=_json_body("CatalogFile"))
async def put_catalog(request: Request) -> Response:
    """Replace the whole catalog: a new version (200; `changed: false` when identical).

    422 `invalid_catalog` names the action and the field of every problem found.
    """
    runtime = runtime_in(request.scope.get("state"))
    admin_ = _admin(runtime)
    body, expected = await _body(request, runtime), _expected(request)
    done = await asyncio.to_thread(admin_.put_catalog, body, _principal(request), expected)
    return await _changed(runtime, admin_, done)


@admin.get("/catalog/audit", response_model=AuditPage,
           openapi_extra={"parameters": [API_KEY_HEADER]})
async def audit(runtime: RuntimeDep,
                before: Annotated[int | None, Query(ge=1, description="Entries of versions "
                                                    "below this one (default: from the newest).")] = None,
                limit: Annotated[int, Query(ge=1, le=AUDIT_PAGE)] = 50) -> Response:
    """The audit trail, newest first, one entry per version: who, when, what changed."""
    entries = await asyncio.to_thread(_admin(runtime).audit, before, limit)
    last = int(entries[-1]["version"]) if entries else None
    return JSONResponse({"entries": entries,
                         "next_before": last if last is not None and last > 1 and
                         len(entries) == limit else None})
