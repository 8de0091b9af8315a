"""Errors that carry their HTTP status; `api.error_payload` maps them to responses.

    NextbestError (500)
    ├── BadRequest (422)
    │   ├── UnknownCandidates (422)
    │   ├── ActionNotInDecision (422)
    │   ├── InvalidTimestamp (422)   feedback dated in the future, or before its decision
    │   └── InvalidCatalog (422)   a catalog change that does not validate (names action and field)
    ├── Unauthorized (401)   no API key, or one that is not in force
    ├── Forbidden (403)      a key without the scope the path needs
    ├── RateLimited (429, Retry-After)   the key's rate limit is reached
    ├── PayloadTooLarge (413)
    ├── RequestTimeout (408)
    ├── RegistryRefused (409)  a registry change refused (unknown version, nothing to roll back to)
    ├── StreamsInRedis (409)   the export API of the embedded store, asked of a service on Redis
    ├── VersionMismatch (412)  If-Match names a catalog version that is no longer current
    ├── NotFound (404)
    │   ├── UnknownDecision (404)
    │   └── UnknownAction (404)   no such action in the catalog
    └── NotReady (503, Retry-After)
        ├── ModelError (503)   a model that cannot be loaded or does not fit its manifest
        └── StateUnavailable (503)   the state store (Redis) is away and cannot be waited for
"""

from __future__ import annotations


class NextbestError(Exception):
    status_code = 500
    code = "internal_error"

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


class BadRequest(NextbestError):
    status_code = 422
    code = "bad_request"


class UnknownCandidates(BadRequest):
    code = "unknown_candidates"


class ActionNotInDecision(BadRequest):
    code = "action_not_in_decision"


class InvalidTimestamp(BadRequest):
    code = "invalid_timestamp"


class InvalidCatalog(BadRequest):
    code = "invalid_catalog"


class Unauthorized(NextbestError):
    status_code = 401
    code = "unauthorized"


class Forbidden(NextbestError):
    status_code = 403
    code = "forbidden"


class RateLimited(NextbestError):
    """Try again after `retry_after_seconds` (a whole number, as `Retry-After` has it)."""

    status_code = 429
    code = "rate_limited"

    def __init__(self, message: str, retry_after_seconds: int = 1) -> None:
        super().__init__(message)
        self.retry_after_seconds = retry_after_seconds


class PayloadTooLarge(NextbestError):
    status_code = 413
    code = "payload_too_large"


class RequestTimeout(NextbestError):
    status_code = 408
    code = "request_timeout"


class RegistryRefused(NextbestError):
    status_code = 409
    code = "registry_refused"


class StreamsInRedis(NextbestError):
    status_code = 409
    code = "streams_in_redis"


class VersionMismatch(NextbestError):
    status_code = 412
    code = "version_mismatch"


class NotFound(NextbestError):
    status_code = 404
    code = "not_found"


class UnknownDecision(NotFound):
    code = "unknown_decision"


class UnknownAction(NotFound):
    code = "unknown_action"


class NotReady(NextbestError):
    """Try again: answered with `Retry-After: retry_after_seconds`."""

    status_code = 503
    code = "not_ready"
    retry_after_seconds = 1


class ModelError(NotReady):
    code = "model_error"


class StateUnavailable(NotReady):
    code = "state_unavailable"
