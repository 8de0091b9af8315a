"""Python clients of the nextbest HTTP API, for shop, app and POS integrations.

`pip install nextbest` installs them alone, with httpx and pydantic and nothing of the
service (that is `pip install 'nextbest[server]'`): this module imports only those, the
standard library and two modules of the project that import no more
(`service.client_calls`, `service.schemas`). The integrator's guide
is docs/client.md.

    from service.client import NextbestClient, SyncNextbestClient

    async with NextbestClient("http://nextbest:8000", api_key="...") as nb:  # asyncio
        decision = await nb.decide(customer_id="c00042", channel="web", placement="cart",
                                   context={"basket": ["p0012"], "cart_value": 59.9})
        top = decision.actions[0]
        await nb.feedback(decision.decision_id, top.action_id, "impression")
        ...  # later, when the customer takes it:
        await nb.feedback(decision.decision_id, top.action_id, "accept", value=top.value)

    with SyncNextbestClient("http://nextbest:8000", api_key="...") as nb:  # blocking
        decision = nb.decide(customer_id="c00042", channel="pos", placement="checkout",
                             context={"store_id": "s12", "basket": ["p0012"]})

The two have the same methods and behave the same because they run the same code: each
call is written once, in `service.client_calls`, as a plan that yields the steps it
needs ("send this", "wait this long") and builds the bodies, decides about retries and
parses the answers. `NextbestClient` carries the steps out with `await`,
`SyncNextbestClient` blocking, and that is all either does.

Responses are the service's own pydantic models (`service.schemas.DecisionResponse`,
`FeedbackResponse`), so the client cannot drift from the API it talks to. Requests are
not validated here: the service is the one judge of a request, and its 422 comes back
as `NextbestAPIError` with the service's message.

Retries, with exponential backoff, jitter, and the server's `Retry-After` honoured (all
capped at `max_backoff`), happen only where repeating a request cannot do harm:

- `decide`: on 429 and 503, on connection failures and on timeouts (a repeated
  decision only issues a second decision id that never gets feedback);
- `feedback`, `feedback_batch`: on 429 and 503 and when the request cannot have reached
  the service (connect errors and timeouts, pool timeouts), never after a read timeout,
  which could count an outcome twice.

Errors:

    NextbestClientError
    ├── NextbestAPIError        the service answered 4xx/5xx: status_code, error, message
    └── NextbestTransportError  no answer: the connection failed (after the retries)
        └── NextbestTimeout     no answer in time
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable, Iterable, Mapping
from datetime import datetime
from types import TracebackType
from typing import Any, Self, TypeVar, Unpack

import httpx

from service.client_calls import (
    DECISION_BATCH,
    MAX_FEEDBACK_BATCH,
    BaseClient,
    DecisionFields,
    Done,
    NextbestAPIError,
    NextbestClientError,
    NextbestTimeout,
    NextbestTransportError,
    Plan,
    Reply,
    Step,
    Wait,
    to_the_end,
)
from service.schemas import (
    DecisionBatchResponse,
    DecisionRequestBase,
    DecisionResponse,
    FeedbackEvent,
    FeedbackResponse,
    Outcome,
)

__all__ = [
    "DECISION_BATCH",
    "MAX_FEEDBACK_BATCH",
    "DecisionFields",
    "NextbestAPIError",
    "NextbestClient",
    "NextbestClientError",
    "NextbestTimeout",
    "NextbestTransportError",
    "SyncNextbestClient",
]

Sleep = Callable[[float], Awaitable[None]]
BlockingSleep = Callable[[float], None]

T = TypeVar("T")


class NextbestClient(BaseClient[httpx.AsyncBaseTransport, Sleep]):
    """The client for asyncio code; use as `async with`, or call `aclose()`."""

    _http: httpx.AsyncClient
    _sleep: Sleep

    def _open(self, transport: httpx.AsyncBaseTransport | None, sleep: Sleep | None,
              **options: Any) -> None:
        self._http = httpx.AsyncClient(transport=transport, **options)
        self._sleep = asyncio.sleep if sleep is None else sleep

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(self, exc_type: type[BaseException] | None,
                        exc: BaseException | None, tb: TracebackType | None) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        await self._http.aclose()

    async def decide(self, request: DecisionRequestBase | Mapping[str, Any] | None = None,
                     **fields: Unpack[DecisionFields]) -> DecisionResponse:
        """Rank the next best actions: pass a request (dict or model) OR keyword fields.

        Keyword fields left out take the service's defaults (`DecisionFields`); `channel`
        is the one a decision cannot do without.
        """
        return await self._run(self._decide_plan(request, fields))

    async def decide_batch(self, requests: Iterable[DecisionRequestBase | Mapping[str, Any]],
                           batch_size: int = DECISION_BATCH) -> DecisionBatchResponse:
        """Decide for many customers (outbound channels), in requests of `batch_size`.

        Each result carries its `index` in `requests`, and its decision or the error the
        service gave that request alone. Repeated only when a request cannot have reached
        the service (and on 429 and 503): a batch spends caps and budgets.
        """
        return await self._run(self._decide_batch_plan(requests, batch_size))

    async def feedback(self, decision_id: str, action_id: str, outcome: Outcome | str,
                       value: float | None = None,
                       timestamp: datetime | float | None = None,
                       event_id: str | None = None) -> FeedbackResponse:
        """Report one outcome of a shown action.

        An unknown (or expired) decision raises `NextbestAPIError` 404 `unknown_decision`;
        an action the decision did not show raises 422 `action_not_in_decision`.
        `timestamp` (timezone-aware datetime, or unix seconds) defaults to "now" on the
        server. The service applies an event once by its key, `event_id` or (without one)
        decision, action and outcome, so retries are safe; give `event_id` where one shown
        action can have several outcomes of one kind (two purchases).
        """
        return await self._run(self._feedback_plan(decision_id, action_id, outcome, value,
                                                   timestamp, event_id))

    async def feedback_batch(self, events: Iterable[FeedbackEvent | Mapping[str, Any]]) -> FeedbackResponse:
        """Report many outcomes; sent in requests of at most `MAX_FEEDBACK_BATCH` events.

        Events the service cannot attribute come back under `rejected` (their `index` is
        the position in `events`) while the others are accepted. An error response raises
        `NextbestAPIError`; requests sent before it stay accepted.
        """
        return await self._run(self._feedback_batch_plan(events))

    async def _run(self, plan: Plan[T]) -> T:
        steps = to_the_end(plan)
        step = next(steps)
        while not isinstance(step, Done):
            step = steps.send(await self._perform(step))
        return step.value

    async def _perform(self, step: Step) -> Reply:
        if isinstance(step, Wait):
            await self._sleep(step.seconds)
            return None
        try:
            return await self._http.post(step.path, json=step.body)
        except httpx.TransportError as exc:
            return exc


class SyncNextbestClient(BaseClient[httpx.BaseTransport, BlockingSleep]):
    """The blocking client, for code without an event loop (a till, a WSGI shop, a script):
    the same methods as `NextbestClient`, without `await`. Use as `with`, or call `close()`.

    One instance is safe to share between threads; it keeps one connection pool.
    """

    _http: httpx.Client
    _sleep: BlockingSleep

    def _open(self, transport: httpx.BaseTransport | None, sleep: BlockingSleep | None,
              **options: Any) -> None:
        self._http = httpx.Client(transport=transport, **options)
        self._sleep = time.sleep if sleep is None else sleep

    def __enter__(self) -> Self:
        return self

    def __exit__(self, exc_type: type[BaseException] | None,
                 exc: BaseException | None, tb: TracebackType | None) -> None:
        self.close()

    def close(self) -> None:
        self._http.close()

    def decide(self, request: DecisionRequestBase | Mapping[str, Any] | None = None,
               **fields: Unpack[DecisionFields]) -> DecisionResponse:
        """`NextbestClient.decide`, blocking."""
        return self._run(self._decide_plan(request, fields))

    def decide_batch(self, requests: Iterable[DecisionRequestBase | Mapping[str, Any]],
                     batch_size: int = DECISION_BATCH) -> DecisionBatchResponse:
        """`NextbestClient.decide_batch`, blocking."""
        return self._run(self._decide_batch_plan(requests, batch_size))

    def feedback(self, decision_id: str, action_id: str, outcome: Outcome | str,
                 value: float | None = None,
                 timestamp: datetime | float | None = None,
                 event_id: str | None = None) -> FeedbackResponse:
        """`NextbestClient.feedback`, blocking."""
        return self._run(self._feedback_plan(decision_id, action_id, outcome, value, timestamp,
                                             event_id))

    def feedback_batch(self, events: Iterable[FeedbackEvent | Mapping[str, Any]]) -> FeedbackResponse:
        """`NextbestClient.feedback_batch`, blocking."""
        return self._run(self._feedback_batch_plan(events))

    def _run(self, plan: Plan[T]) -> T:
        steps = to_the_end(plan)
        step = next(steps)
        while not isinstance(step, Done):
            step = steps.send(self._perform(step))
        return step.value

    def _perform(self, step: Step) -> Reply:
        if isinstance(step, Wait):
            self._sleep(step.seconds)
            return None
        try:
            return self._http.post(step.path, json=step.body)
        except httpx.TransportError as exc:
            return exc
