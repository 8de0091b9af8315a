"""Async Python client of the nextbest HTTP API, for shop, app and POS integrations.

    from service.client import NextbestClient

    async with NextbestClient("http://nextbest:8000", api_key="...") as nb:
        decision = await nb.decide(customer_id="c00042", channel="web", placement="cart",
                                   context={"basket": ["p0012"], "cart_value": 59.9})
        top = decision.actions[0]
        await nb.feedback(decision.decision_id, top.action_id, "impression")
        ...  # later, when the customer takes it:
        await nb.feedback(decision.decision_id, top.action_id, "accept", value=top.value)

Responses are the service's own pydantic models (`service.schemas.DecisionResponse`,
`FeedbackResponse`), so the client cannot drift from the API it talks to. Requests are
not validated here: the service is the one judge of a request, and its 422 comes back
as `NextbestAPIError` with the service's message.

Retries, with exponential backoff, jitter, and the server's `Retry-After` honoured (all
capped at `max_backoff`), happen only where repeating a request cannot do harm:

- `decide`: on 429 and 503, on connection failures and on timeouts (a repeated
  decision only issues a second decision id that never gets feedback);
- `feedback`: on 429 and 503 and when the request cannot have reached the service
  (connect errors and timeouts, pool timeouts), never after a read timeout, which
  could count an outcome twice.

Errors:

    NextbestClientError
    ├── NextbestAPIError        the service answered 4xx/5xx: status_code, error, message
    └── NextbestTransportError  no answer: the connection failed (after the retries)
        └── NextbestTimeout     no answer in time
"""

from __future__ import annotations

import asyncio
import email.utils
import random
import time
from collections.abc import Awaitable, Callable, Iterable, Mapping, Sequence
from datetime import datetime
from types import TracebackType
from typing import Any

import httpx
from pydantic import BaseModel

from service.schemas import (
    Channel,
    DecisionContext,
    DecisionRequest,
    DecisionResponse,
    FeedbackEvent,
    FeedbackResponse,
    Outcome,
    RejectedEvent,
)

__all__ = [
    "MAX_FEEDBACK_BATCH",
    "NextbestAPIError",
    "NextbestClient",
    "NextbestClientError",
    "NextbestTimeout",
    "NextbestTransportError",
]

#: Largest `{"events": [...]}` the service takes; `feedback_batch` splits bigger ones.
MAX_FEEDBACK_BATCH = 1000
RETRY_STATUSES = frozenset({429, 503})

# The request may have been processed: only an idempotent-safe call repeats it.
_UNANSWERED = (httpx.TimeoutException, httpx.NetworkError, httpx.RemoteProtocolError)
# The request never left: safe to repeat anything.
_NOT_SENT = (httpx.ConnectError, httpx.ConnectTimeout, httpx.PoolTimeout)

Sleep = Callable[[float], Awaitable[None]]


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


class NextbestClient:
    """One connection pool to one nextbest; use as `async with`, or call `aclose()`.

    `retries` counts repeats after the first attempt. `timeout` is a total per attempt
    (or an `httpx.Timeout`). `transport` replaces the network (tests); `sleep` and `rng`
    are the backoff's clock and jitter source, for the same reason.
    """

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
        transport: httpx.AsyncBaseTransport | None = None,
        sleep: Sleep = asyncio.sleep,
        rng: random.Random | None = None,
    ) -> None:
        if retries < 0 or backoff < 0 or max_backoff < 0:
            raise ValueError("retries, backoff and max_backoff must not be negative")
        headers = {"User-Agent": "nextbest-client", "Accept": "application/json"}
        if api_key:
            headers["X-API-Key"] = api_key
        self.retries = retries
        self.backoff = backoff
        self.max_backoff = max_backoff
        self._sleep = sleep
        self._rng = rng or random.Random()
        self._http = httpx.AsyncClient(
            base_url=base_url.rstrip("/"),
            headers=headers,
            timeout=timeout if isinstance(timeout, httpx.Timeout) else httpx.Timeout(timeout),
            limits=httpx.Limits(max_connections=max_connections,
                                max_keepalive_connections=max_connections),
            transport=transport,
        )

    async def __aenter__(self) -> NextbestClient:
        return self

    async def __aexit__(self, exc_type: type[BaseException] | None,
                        exc: BaseException | None, tb: TracebackType | None) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        await self._http.aclose()

    # --- the API --------------------------------------------------------------------------
    async def decide(
        self,
        request: DecisionRequest | Mapping[str, Any] | None = None,
        *,
        customer_id: str | None = None,
        channel: Channel | None = None,
        placement: str | None = None,
        context: DecisionContext | Mapping[str, Any] | None = None,
        candidates: Sequence[str] | None = None,
        limit: int | None = None,
        explain: bool | None = None,
    ) -> DecisionResponse:
        """Rank the next best actions: pass a request (dict or model) OR keyword fields.

        Keyword fields left out take the service's defaults (placement "home", limit 3);
        `customer_id=None` asks for an anonymous decision.
        """
        fields = {"customer_id": customer_id, "channel": channel, "placement": placement,
                  "context": context, "candidates": candidates, "limit": limit,
                  "explain": explain}
        given = {k: v for k, v in fields.items() if v is not None}
        if request is not None:
            if given:
                raise TypeError("decide() takes a request or keyword fields, not both")
            body = _plain(request)
        elif channel is None:
            raise TypeError("decide() needs a channel (or a request)")
        else:
            body = {k: _plain(v) if isinstance(v, BaseModel) else v for k, v in given.items()}
            if "candidates" in body:
                body["candidates"] = list(body["candidates"])
        response = await self._post("/v1/decisions", body, retry_on=_UNANSWERED)
        return DecisionResponse.model_validate_json(response.content)

    async def feedback(
        self,
        decision_id: str,
        action_id: str,
        outcome: Outcome | str,
        value: float | None = None,
        timestamp: datetime | float | None = None,
    ) -> FeedbackResponse:
        """Report one outcome of a shown action.

        An unknown (or expired) decision raises `NextbestAPIError` 404 `unknown_decision`;
        an action the decision did not show raises 422 `action_not_in_decision`.
        `timestamp` (timezone-aware datetime, or unix seconds) defaults to "now" on the
        server.
        """
        event = _event(decision_id, action_id, outcome, value, timestamp)
        response = await self._post("/v1/feedback", event, retry_on=_NOT_SENT)
        return FeedbackResponse.model_validate_json(response.content)

    async def feedback_batch(
        self, events: Iterable[FeedbackEvent | Mapping[str, Any]]
    ) -> FeedbackResponse:
        """Report many outcomes; sent in requests of at most `MAX_FEEDBACK_BATCH` events.

        Events the service cannot attribute come back under `rejected` (their `index` is
        the position in `events`) while the others are accepted. An error response raises
        `NextbestAPIError`; requests sent before it stay accepted.
        """
        items = [_plain(e) for e in events]
        accepted, rejected = 0, []
        for start in range(0, len(items), MAX_FEEDBACK_BATCH):
            chunk = items[start:start + MAX_FEEDBACK_BATCH]
            response = await self._post("/v1/feedback", {"events": chunk}, retry_on=_NOT_SENT)
            part = FeedbackResponse.model_validate_json(response.content)
            accepted += part.accepted
            rejected += [RejectedEvent(**{**r.model_dump(), "index": r.index + start})
                         for r in part.rejected]
        return FeedbackResponse(accepted=accepted, rejected=rejected)

    # --- transport ------------------------------------------------------------------------
    async def _post(self, path: str, body: Any,
                    retry_on: tuple[type[Exception], ...]) -> httpx.Response:
        attempt = 0
        while True:
            try:
                response = await self._http.post(path, json=body)
            except retry_on as exc:
                if attempt >= self.retries:
                    raise _transport_error(exc, path, attempt) from exc
                await self._sleep(self.delay(attempt))
                attempt += 1
                continue
            except httpx.TransportError as exc:
                raise _transport_error(exc, path, attempt) from exc
            if response.status_code in RETRY_STATUSES and attempt < self.retries:
                await self._sleep(self.delay(attempt, response.headers.get("Retry-After")))
                attempt += 1
                continue
            if response.is_error:
                raise NextbestAPIError.from_response(response)
            return response

    def delay(self, attempt: int, retry_after: str | None = None) -> float:
        """Seconds before repeat `attempt + 1`: backoff x 2^attempt, half of it jittered;
        at least what `Retry-After` asks; never more than `max_backoff`."""
        base = self.backoff * 2.0**attempt
        wait = base / 2 + self._rng.uniform(0.0, base / 2)
        asked = _retry_after_seconds(retry_after)
        if asked is not None:
            wait = max(wait, asked)
        return min(wait, self.max_backoff)


def _plain(value: BaseModel | Mapping[str, Any]) -> dict[str, Any]:
    if isinstance(value, BaseModel):
        return value.model_dump(mode="json", exclude_unset=True)
    return dict(value)


def _event(decision_id: str, action_id: str, outcome: Outcome | str, value: float | None,
           timestamp: datetime | float | None) -> dict[str, Any]:
    event: dict[str, Any] = {"decision_id": decision_id, "action_id": action_id,
                             "outcome": str(outcome)}
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
