"""The client's calls, written once for both clients, without any I/O.

Each call of the API (`decide`, `decide_batch`, `feedback`, `feedback_batch`) is a plan: a generator that
yields the steps it needs, `Send` (POST this body to this path) and `Wait` (sleep before
the next attempt), is sent back what came of each (the response or the transport error),
and returns the call's result. Request bodies, the retry policy and response parsing
live here and only here; `service.client` has the two clients that carry the steps out,
one with `await` and one blocking, as h11 and other sans-I/O protocol libraries leave
the I/O to whoever drives them.

Imports httpx, pydantic and `service.schemas` alone: it is part of the client install.
"""

from __future__ import annotations

import email.utils
import random
import time
from collections.abc import Generator, Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Generic, TypedDict, TypeVar

import httpx
from pydantic import BaseModel

from service.schemas import (
    BatchResult,
    DecisionBatchResponse,
    DecisionRequestBase,
    DecisionResponse,
    FeedbackEvent,
    FeedbackResponse,
    Outcome,
    RejectedEvent,
)

#: Largest `{"events": [...]}` the service takes; `feedback_batch` splits bigger ones.
MAX_FEEDBACK_BATCH = 1000
#: Requests per `POST /v1/decisions/batch` `decide_batch` sends by default (the service's
#: NEXTBEST_BATCH_MAX_REQUESTS is 1000 by default).
DECISION_BATCH = 500
RETRY_STATUSES = frozenset({429, 503})

# The request may have been processed: only an idempotent-safe call repeats it.
_UNANSWERED = (httpx.TimeoutException, httpx.NetworkError, httpx.RemoteProtocolError)
# The request never left: safe to repeat anything.
_NEVER_SENT = (httpx.ConnectError, httpx.ConnectTimeout, httpx.PoolTimeout)

T = TypeVar("T")
TransportT = TypeVar("TransportT")
SleepT = TypeVar("SleepT")


class NextbestClientError(Exception):
    """Anything the client raises on purpose."""


class NextbestAPIError(NextbestClientError):
    """The service answered with an error status; `error` is its machine-readable code."""

    def __init__(self, status_code: int, error: str, message: str,
                 detail: Any = None) -> None:
        super().__init__(f"{status_code} {error}: {message}")
        self.status_code = status_code
        self.error = error
        self.message = message
        self.detail = detail

    @classmethod
    def from_response(cls, response: httpx.Response) -> NextbestAPIError:
        """Read the service's `{"error": ..., "message": ...}`; tolerate proxies' bodies."""
        try:
            body = response.json()
        except ValueError:
            body = None
        if isinstance(body, dict) and isinstance(body.get("error"), str):
            return cls(response.status_code, body["error"], str(body.get("message", "")),
                       body.get("detail"))
        text = response.text.strip()[:200] or response.reason_phrase
        return cls(response.status_code, f"http_{response.status_code}", text)


class NextbestTransportError(NextbestClientError):
    """No answer from the service (after the retries the call allows)."""


class NextbestTimeout(NextbestTransportError):
    """The service did not answer within the timeout."""


class DecisionFields(TypedDict, total=False):
    """`decide`'s keyword fields, as the service's `DecisionRequest` means them.

    Which channels, placements and context fields there are is the service's world
    (its `/docs`), not the client's: they are plain strings and mappings here. A field
    left out, or None, takes the service's default (limit 3; placement "home" where the
    world declares it); no `customer_id` asks for an anonymous decision.
    """

    customer_id: str | None
    channel: str | None
    placement: str | None
    context: BaseModel | Mapping[str, Any] | None
    candidates: Sequence[str] | None
    limit: int | None
    explain: bool | None


# --- plans and their steps ---------------------------------------------------------------
@dataclass(frozen=True, slots=True)
class Send:
    """POST `body` as JSON to `path`; sent back: the response, or the transport error."""

    path: str
    body: Any


@dataclass(frozen=True, slots=True)
class Wait:
    """Sleep before the next attempt; sent back: None."""

    seconds: float


@dataclass(frozen=True, slots=True)
class Done(Generic[T]):
    """The plan's result, as its last step."""

    value: T


Step = Send | Wait
Reply = httpx.Response | httpx.TransportError | None
#: One call: yields steps, is sent what came of each, returns the call's result.
Plan = Generator[Step, Reply, T]


def to_the_end(plan: Plan[T]) -> Generator[Step | Done[T], Reply, None]:
    """`plan` with its result as one more step, so that running it is one plain loop."""
    yield Done((yield from plan))


class BaseClient(Generic[TransportT, SleepT]):
    """The options, the calls as plans and the retry policy, shared by both clients."""

    def __init__(
        self,
        base_url: str,
        *,
        api_key: str | None = None,
        timeout: float | httpx.Timeout = 2.0,
        retries: int = 3,
        backoff: float = 0.05,
        max_backoff: float = 2.0,
        max_connections: int = 100,
        transport: TransportT | None = None,
        sleep: SleepT | None = None,
        rng: random.Random | None = None,
    ) -> None:
        """One connection pool to the nextbest at `base_url`.

        `timeout` applies to each attempt on its own, to each of its phases (connecting,
        waiting for a free connection, writing, each read); an `httpx.Timeout` sets them
        one by one. `retries` counts repeats after the first attempt; the first waits
        `backoff` seconds, each next one twice as long, never more than `max_backoff`.
        `transport` replaces the network (tests); `sleep` and `rng` are the backoff's
        clock and jitter source, for the same reason.
        """
        if retries < 0 or backoff < 0 or max_backoff < 0:
            raise ValueError("retries, backoff and max_backoff must not be negative")
        headers = {"User-Agent": "nextbest-client", "Accept": "application/json"}
        if api_key:
            headers["X-API-Key"] = api_key
        self.retries = retries
        self.backoff = backoff
        self.max_backoff = max_backoff
        self._rng = rng or random.Random()
        self._open(transport, sleep,
                   base_url=base_url.rstrip("/"),
                   headers=headers,
                   timeout=timeout if isinstance(timeout, httpx.Timeout) else httpx.Timeout(timeout),
                   limits=httpx.Limits(max_connections=max_connections,
                                       max_keepalive_connections=max_connections))

    def _open(self, transport: TransportT | None, sleep: SleepT | None, **options: Any) -> None:
        """Create the HTTP client and choose the sleep: what each client does its own way."""
        raise NotImplementedError

    def delay(self, attempt: int, retry_after: str | None = None) -> float:
        """Seconds before repeat `attempt + 1`: backoff x 2^attempt, half of it jittered;
        at least what `Retry-After` asks; never more than `max_backoff`."""
        base = self.backoff * 2.0**attempt
        wait = base / 2 + self._rng.uniform(0.0, base / 2)
        asked = _retry_after_seconds(retry_after)
        if asked is not None:
            wait = max(wait, asked)
        return min(wait, self.max_backoff)

    # The calls; each client's public method runs one of these plans.
    def _decide_plan(self, request: DecisionRequestBase | Mapping[str, Any] | None,
                     fields: DecisionFields) -> Plan[DecisionResponse]:
        response = yield from self._post("/v1/decisions", _decision_body(request, fields),
                                         retry_on=_UNANSWERED)
        return DecisionResponse.model_validate_json(response.content)

    def _decide_batch_plan(self, requests: Iterable[DecisionRequestBase | Mapping[str, Any]],
                           batch_size: int) -> Plan[DecisionBatchResponse]:
        items = [_plain(r) for r in requests]
        results: list[BatchResult] = []
        for start in range(0, len(items), batch_size):
            # repeated only where the batch cannot have been decided (it may spend budgets)
            response = yield from self._post("/v1/decisions/batch",
                                             {"requests": items[start:start + batch_size]},
                                             retry_on=_NEVER_SENT)
            part = DecisionBatchResponse.model_validate_json(response.content)
            results += [r.model_copy(update={"index": r.index + start}) for r in part.results]
        failed = sum(r.status != 200 for r in results)
        return DecisionBatchResponse(results=results, decided=len(results) - failed, failed=failed)

    def _feedback_plan(self, decision_id: str, action_id: str, outcome: Outcome | str,
                       value: float | None, timestamp: datetime | float | None,
                       event_id: str | None = None) -> Plan[FeedbackResponse]:
        return (yield from self._report(_event(decision_id, action_id, outcome, value, timestamp,
                                               event_id)))

    def _feedback_batch_plan(self, events: Iterable[FeedbackEvent | Mapping[str, Any]]) -> Plan[FeedbackResponse]:
        items = [_plain(e) for e in events]
        accepted, duplicates, rejected = 0, 0, []
        for start in range(0, len(items), MAX_FEEDBACK_BATCH):
            part = yield from self._report({"events": items[start:start + MAX_FEEDBACK_BATCH]})
            accepted += part.accepted
            duplicates += part.duplicates
            rejected += [RejectedEvent(**{**r.model_dump(), "index": r.index + start})
                         for r in part.rejected]
        return FeedbackResponse(accepted=accepted, duplicates=duplicates, rejected=rejected)

    def _report(self, body: dict[str, Any]) -> Plan[FeedbackResponse]:
        # the service applies an event once (its event_id, or decision:action:outcome),
        # so a repeat after a lost answer is safe
        response = yield from self._post("/v1/feedback", body, retry_on=_UNANSWERED)
        return FeedbackResponse.model_validate_json(response.content)

    def _post(self, path: str, body: Any,
              retry_on: tuple[type[Exception], ...]) -> Plan[httpx.Response]:
        """One request with its retries: `retry_on` names the failures safe to repeat."""
        attempt = 0
        while True:
            reply = yield Send(path, body)
            if isinstance(reply, httpx.TransportError):
                if not isinstance(reply, retry_on) or attempt >= self.retries:
                    raise _transport_error(reply, path, attempt) from reply
                wait = self.delay(attempt)
            elif reply is None:
                raise RuntimeError("a plan's request was answered with nothing")
            elif reply.status_code in RETRY_STATUSES and attempt < self.retries:
                wait = self.delay(attempt, reply.headers.get("Retry-After"))
            elif reply.is_error:
                raise NextbestAPIError.from_response(reply)
            else:
                return reply
            yield Wait(wait)
            attempt += 1


# --- request bodies and errors -----------------------------------------------------------
def _plain(value: BaseModel | Mapping[str, Any]) -> dict[str, Any]:
    if isinstance(value, BaseModel):
        return value.model_dump(mode="json", exclude_unset=True)
    return dict(value)


def _decision_body(request: DecisionRequestBase | Mapping[str, Any] | None,
                   fields: DecisionFields) -> dict[str, Any]:
    unknown = sorted(set(fields) - DecisionFields.__optional_keys__)
    if unknown:
        raise TypeError(f"decide() got unexpected keyword fields: {', '.join(unknown)}")
    given = {k: v for k, v in fields.items() if v is not None}
    if request is not None:
        if given:
            raise TypeError("decide() takes a request or keyword fields, not both")
        return _plain(request)
    if "channel" not in given:
        raise TypeError("decide() needs a channel (or a request)")
    body = {k: _plain(v) if isinstance(v, BaseModel) else v for k, v in given.items()}
    if (candidates := fields.get("candidates")) is not None:
        body["candidates"] = list(candidates)
    return body


def _event(decision_id: str, action_id: str, outcome: Outcome | str, value: float | None,
           timestamp: datetime | float | None, event_id: str | None = None) -> dict[str, Any]:
    event: dict[str, Any] = {"decision_id": decision_id, "action_id": action_id,
                             "outcome": str(outcome)}
    if event_id is not None:
        event["event_id"] = event_id
    if value is not None:
        event["value"] = value
    if timestamp is not None:
        event["timestamp"] = timestamp.isoformat() if isinstance(timestamp, datetime) else timestamp
    return event


def _retry_after_seconds(header: str | None) -> float | None:
    """`Retry-After` as seconds: a number, or an HTTP date."""
    if not header:
        return None
    try:
        return max(0.0, float(header))
    except ValueError:
        pass
    try:
        when = email.utils.parsedate_to_datetime(header)
    except (TypeError, ValueError):
        return None
    return max(0.0, when.timestamp() - time.time())


def _transport_error(exc: Exception, path: str, attempt: int) -> NextbestTransportError:
    kind = NextbestTimeout if isinstance(exc, httpx.TimeoutException) else NextbestTransportError
    tries = f" after {attempt + 1} attempts" if attempt else ""
    return kind(f"POST {path}: {type(exc).__name__}{tries}: {exc}")
