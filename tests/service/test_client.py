"""The Python clients, one contract for both: every check runs over `NextbestClient` and
`SyncNextbestClient`, against the real app on a loopback port and, for the retries, on
fake transports, a silent server and a refused port.

The blocking client is driven from these async tests through `Blocking`, which runs each
of its calls in a worker thread: the test body is the same for both, and a server the
test runs on its own event loop keeps answering while the blocking call waits.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator, Callable, Iterator
from datetime import UTC, datetime
from types import TracebackType
from typing import Any

import httpx
import pytest

from features.config import shipped_world
from load_tests.processes import free_port
from service.app import create_app
from service.client import (
    MAX_FEEDBACK_BATCH,
    NextbestAPIError,
    NextbestClient,
    NextbestTimeout,
    NextbestTransportError,
    SyncNextbestClient,
)
from service.schemas import DecisionResponse, FeedbackResponse, Outcome, request_models
from tests.demo_fixtures import DemoDirs, serve_in_thread
from tests.service.conftest import make_settings

pytestmark = pytest.mark.anyio

KEY = "client-test-key"
KNOWN = "c00001"


class Blocking:
    """A `SyncNextbestClient` with awaitable methods, each call run in a worker thread."""

    def __init__(self, client: SyncNextbestClient) -> None:
        self.client = client

    async def decide(self, *args: Any, **fields: Any) -> DecisionResponse:
        return await asyncio.to_thread(self.client.decide, *args, **fields)

    async def feedback(self, *args: Any, **kwargs: Any) -> FeedbackResponse:
        return await asyncio.to_thread(self.client.feedback, *args, **kwargs)

    async def feedback_batch(self, *args: Any) -> FeedbackResponse:
        return await asyncio.to_thread(self.client.feedback_batch, *args)

    def delay(self, attempt: int, retry_after: str | None = None) -> float:
        return self.client.delay(attempt, retry_after)

    async def __aenter__(self) -> Blocking:
        return self

    async def __aexit__(self, exc_type: type[BaseException] | None,
                        exc: BaseException | None, tb: TracebackType | None) -> None:
        self.client.close()


Client = NextbestClient | Blocking
#: (base_url, sleeps=None, **options) -> a client of the kind under test; with `sleeps`,
#: its backoff records the waits in that list instead of sleeping.
Connect = Callable[..., Client]


def connect_with(kind: str, base_url: str, sleeps: list[float] | None = None,
                 **options: Any) -> Client:
    if kind == "sync":
        if sleeps is not None:
            options["sleep"] = sleeps.append
        return Blocking(SyncNextbestClient(base_url, **options))
    if sleeps is not None:
        recorded = sleeps

        async def sleep(seconds: float) -> None:
            recorded.append(seconds)

        options["sleep"] = sleep
    return NextbestClient(base_url, **options)


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


@pytest.fixture(params=["async", "sync"])
def connect(request: pytest.FixtureRequest) -> Connect:
    kind: str = request.param

    def connect(base_url: str, sleeps: list[float] | None = None, **options: Any) -> Client:
        return connect_with(kind, base_url, sleeps, **options)

    return connect


@pytest.fixture(scope="module")
def service_url(demo: DemoDirs) -> Iterator[str]:
    """The real app (embedded state, API key required) served by uvicorn in a thread."""
    with serve_in_thread(create_app(make_settings(demo, api_keys=KEY)), free_port()) as url:
        yield url


@pytest.fixture
async def nb(service_url: str, connect: Connect) -> AsyncIterator[Client]:
    async with connect(service_url, api_key=KEY) as client:
        yield client


# --- against the real service -------------------------------------------------------------
async def test_decide_returns_ranked_actions(nb: Client) -> None:
    d = await nb.decide(customer_id=KNOWN, channel="web", placement="home", limit=4,
                        context={"device": "desktop"}, explain=True)
    assert isinstance(d, DecisionResponse)
    assert len(d.decision_id) == 32 and d.customer_id == KNOWN and d.channel == "web"
    assert [a.rank for a in d.actions] == [1, 2, 3, 4]
    assert [a.score for a in d.actions] == sorted((a.score for a in d.actions), reverse=True)
    for a in d.actions:
        assert 0 < a.propensity < 1 and a.probability == 1.0 and a.explanation is not None
    assert d.model_versions["offline"].startswith("nextbest-ranker:")


async def test_a_pos_checkout_decision_takes_store_and_basket(nb: Client) -> None:
    top = (await nb.decide(customer_id=KNOWN, channel="pos", placement="checkout")).actions[0]
    d = await nb.decide(customer_id=KNOWN, channel="pos", placement="checkout", limit=2,
                        context={"store_id": "s12", "basket": [top.action_id], "device": "terminal",
                                 "cart_value": 84.5})
    assert d.channel == "pos" and d.placement == "checkout" and len(d.actions) == 2
    assert top.action_id not in {a.action_id for a in d.actions}  # already in the basket


async def test_decide_takes_a_request_dict_or_model(nb: Client) -> None:
    body = {"customer_id": KNOWN, "channel": "app", "placement": "home", "limit": 2}
    by_dict = await nb.decide(body)
    retail = request_models(shipped_world("retail")).decision
    by_model = await nb.decide(retail.model_validate(body))
    assert len(by_dict.actions) == len(by_model.actions) == 2
    anonymous = await nb.decide(channel="web")
    assert anonymous.degraded == ["anonymous"] and len(anonymous.actions) == 3  # server default
    with pytest.raises(TypeError, match="not both"):
        await nb.decide(body, limit=3)
    with pytest.raises(TypeError, match="needs a channel"):
        await nb.decide(customer_id=KNOWN)
    with pytest.raises(TypeError, match="limt"):
        await nb.decide(channel="web", limt=3)  # type: ignore[call-arg]  # mypy sees it too


async def test_feedback_single_and_batch_are_accepted(nb: Client) -> None:
    d = await nb.decide(customer_id=KNOWN, channel="web", limit=2)
    first, second = (a.action_id for a in d.actions)
    one = await nb.feedback(d.decision_id, first, Outcome.impression)
    assert one.accepted == 1 and one.rejected == []
    accepted = await nb.feedback(d.decision_id, first, "accept", value=d.actions[0].value,
                                 timestamp=datetime.now(UTC))
    assert accepted.accepted == 1
    batch = await nb.feedback_batch([
        {"decision_id": d.decision_id, "action_id": second, "outcome": "impression"},
        {"decision_id": "0" * 32, "action_id": second, "outcome": "click"},
        {"decision_id": d.decision_id, "action_id": first, "outcome": "accept", "value": 12.5,
         "timestamp": datetime.now(UTC).isoformat()},
    ])
    assert batch.accepted == 2 and batch.duplicates == 1  # the same accept as above
    assert [(r.index, r.reason) for r in batch.rejected] == [(1, "unknown_decision")]
    assert (await nb.feedback_batch([])).accepted == 0


async def test_a_large_batch_is_split_and_indices_stay_global(nb: Client) -> None:
    d = await nb.decide(customer_id=KNOWN, channel="web", limit=1)
    shown = d.actions[0].action_id
    events = [{"decision_id": d.decision_id, "action_id": shown, "outcome": "impression"}
              for _ in range(MAX_FEEDBACK_BATCH + 300)]
    events[MAX_FEEDBACK_BATCH + 7] = {"decision_id": d.decision_id, "action_id": "not-shown",
                                      "outcome": "impression"}
    result = await nb.feedback_batch(events)
    assert result.accepted == len(events) - 1
    assert [(r.index, r.reason) for r in result.rejected] == [
        (MAX_FEEDBACK_BATCH + 7, "action_not_in_decision")]


async def test_a_bad_channel_raises_with_the_servers_message(nb: Client) -> None:
    with pytest.raises(NextbestAPIError) as err:
        await nb.decide({"customer_id": KNOWN, "channel": "fax"})
    assert err.value.status_code == 422 and err.value.error == "invalid_request"
    assert "channel" in err.value.message and err.value.detail


async def test_feedback_on_an_unknown_decision_is_404(nb: Client) -> None:
    with pytest.raises(NextbestAPIError) as err:
        await nb.feedback("f" * 32, "anything", "click")
    assert err.value.status_code == 404 and err.value.error == "unknown_decision"
    assert "f" * 32 in err.value.message


async def test_the_api_key_is_sent(service_url: str, connect: Connect) -> None:
    async with connect(service_url) as anonymous:
        with pytest.raises(NextbestAPIError) as err:
            await anonymous.decide(channel="web")
    assert err.value.status_code == 401 and err.value.error == "unauthorized"


async def test_a_silent_server_times_out(connect: Connect) -> None:
    async def never_answer(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.read(1)
        await asyncio.sleep(5)

    server = await asyncio.start_server(never_answer, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    try:
        async with connect(f"http://127.0.0.1:{port}", timeout=0.1, retries=1,
                           backoff=0.0) as client:
            with pytest.raises(NextbestTimeout, match="after 2 attempts"):
                await client.decide(channel="web")  # decide retried the timeout once
            with pytest.raises(NextbestTimeout, match="after 2 attempts"):
                await client.feedback("d", "a", "click")  # feedback too: it carries an event_id
    finally:
        server.close()


async def test_a_refused_connection_is_retried_then_raised(connect: Connect) -> None:
    async with connect(f"http://127.0.0.1:{free_port()}", retries=2, backoff=0.0) as c:
        with pytest.raises(NextbestTransportError, match="after 3 attempts"):
            await c.feedback("d", "a", "click")


def test_the_sync_client_needs_no_event_loop(service_url: str) -> None:
    with SyncNextbestClient(service_url, api_key=KEY) as nb:
        d = nb.decide(customer_id=KNOWN, channel="pos", placement="checkout",
                      context={"store_id": "s12", "basket": ["p0003"]})
        assert nb.feedback(d.decision_id, d.actions[0].action_id, "impression").accepted == 1


# --- retries, on a fake transport ---------------------------------------------------------
DECISION = {"decision_id": "d" * 32, "customer_id": None, "channel": "web", "placement": "home",
            "actions": [{"action_id": "a1", "rank": 1, "score": 0.5, "propensity": 0.1,
                         "probability": 1.0, "value": 5.0, "explored": False}],
            "model_versions": {"offline": "m:1"}, "degraded": ["anonymous"]}


class Flaky:
    """A transport handler that answers `failures` first, then `final`."""

    def __init__(self, failures: list[httpx.Response | Exception], final: httpx.Response) -> None:
        self.failures = failures
        self.final = final
        self.requests: list[httpx.Request] = []

    def __call__(self, request: httpx.Request) -> httpx.Response:
        self.requests.append(request)
        if len(self.requests) <= len(self.failures):
            failure = self.failures[len(self.requests) - 1]
            if isinstance(failure, Exception):
                raise failure
            return failure
        return self.final


def unavailable(status: int = 503, **headers: str) -> httpx.Response:
    return httpx.Response(status, json={"error": "not_ready", "message": "warming up"},
                          headers=headers)


def on(handler: Callable[[httpx.Request], httpx.Response]) -> httpx.MockTransport:
    return httpx.MockTransport(handler)


@pytest.mark.parametrize("status", [503, 429])
async def test_decide_retries_twice_then_succeeds(connect: Connect, status: int) -> None:
    handler = Flaky([unavailable(status), unavailable(status)], httpx.Response(200, json=DECISION))
    sleeps: list[float] = []
    async with connect("http://nextbest.test", sleeps, transport=on(handler), backoff=0.1,
                       api_key="k") as client:
        d = await client.decide(channel="web")
    assert d.actions[0].action_id == "a1" and len(handler.requests) == 3
    assert all(r.headers["X-API-Key"] == "k" for r in handler.requests)
    assert 0.05 <= sleeps[0] <= 0.1 and 0.1 <= sleeps[1] <= 0.2  # exponential, jittered


async def test_retry_after_is_honoured_and_capped(connect: Connect) -> None:
    handler = Flaky([unavailable(429, **{"Retry-After": "0.7"}),
                     unavailable(503, **{"Retry-After": "120"})], httpx.Response(200, json=DECISION))
    sleeps: list[float] = []
    async with connect("http://nextbest.test", sleeps, transport=on(handler), backoff=0.01,
                       max_backoff=1.5) as client:
        await client.decide(channel="web")
    assert sleeps == [0.7, 1.5]


async def test_gives_up_after_the_retries(connect: Connect) -> None:
    handler = Flaky([], unavailable(503))
    sleeps: list[float] = []
    async with connect("http://nextbest.test", sleeps, transport=on(handler), retries=2) as client:
        with pytest.raises(NextbestAPIError) as err:
            await client.decide(channel="web")
    assert err.value.status_code == 503 and err.value.error == "not_ready"
    assert err.value.message == "warming up"
    assert len(handler.requests) == 3 and len(sleeps) == 2


async def test_other_errors_are_not_retried(connect: Connect) -> None:
    handler = Flaky([], httpx.Response(502, text="<html>bad gateway</html>"))
    async with connect("http://nextbest.test", [], transport=on(handler)) as client:
        with pytest.raises(NextbestAPIError) as err:
            await client.feedback("d", "a", "click")
    assert len(handler.requests) == 1
    assert err.value.status_code == 502 and err.value.error == "http_502"


async def test_feedback_is_retried_like_a_decision(connect: Connect) -> None:
    """The service applies an event once (by its event_id or decision, action and outcome),
    so feedback is retried after a lost answer too, and the same body goes out each time."""
    accepted = httpx.Response(202, json={"accepted": 1, "rejected": []})
    connect_error = Flaky([httpx.ConnectError("refused"), unavailable(429)], accepted)
    async with connect("http://nextbest.test", [], transport=on(connect_error)) as client:
        assert (await client.feedback("d", "a", "click")).accepted == 1
    assert len(connect_error.requests) == 3

    read_timeout = Flaky([httpx.ReadTimeout("slow"), httpx.ReadTimeout("slow")], accepted)
    async with connect("http://nextbest.test", [], transport=on(read_timeout)) as client:
        assert (await client.feedback("d", "a", "click", event_id="order-77")).accepted == 1
    bodies = [json.loads(r.content) for r in read_timeout.requests]
    assert len(bodies) == 3 and all(b == bodies[0] for b in bodies)
    assert bodies[0]["event_id"] == "order-77"

    batch = Flaky([httpx.ReadTimeout("slow")], accepted)
    async with connect("http://nextbest.test", [], transport=on(batch)) as client:
        await client.feedback_batch([{"decision_id": "d", "action_id": "a", "outcome": "click"}])
    assert len(batch.requests) == 2

    decide_timeout = Flaky([httpx.ReadTimeout("slow")], httpx.Response(200, json=DECISION))
    async with connect("http://nextbest.test", [], transport=on(decide_timeout)) as client:
        await client.decide(channel="web")
    assert len(decide_timeout.requests) == 2


async def test_feedback_batch_sends_at_most_the_server_limit(connect: Connect) -> None:
    sizes: list[int] = []

    def handler(request: httpx.Request) -> httpx.Response:
        events = json.loads(request.content)["events"]
        sizes.append(len(events))
        return httpx.Response(202, json={"accepted": len(events) - 1, "rejected": [
            {"index": 0, "decision_id": "d", "action_id": "a", "reason": "unknown_decision",
             "message": "unknown"}]})

    events = [{"decision_id": "d", "action_id": "a", "outcome": "impression"}] * 2500
    async with connect("http://nextbest.test", [], transport=on(handler)) as client:
        result = await client.feedback_batch(events)
    assert sizes == [1000, 1000, 500]
    assert result.accepted == 2497 and [r.index for r in result.rejected] == [0, 1000, 2000]


async def test_backoff_is_exponential_and_capped(connect: Connect) -> None:
    async with connect("http://nextbest.test", backoff=0.05, max_backoff=0.3) as client:
        delays = [client.delay(n) for n in range(5)]
        for n, d in enumerate(delays[:3]):
            assert 0.05 * 2**n / 2 <= d <= 0.05 * 2**n
        assert delays[-1] == 0.3
        assert client.delay(0, "Thu, 01 Jan 1970 00:00:00 GMT") <= 0.05  # a date in the past
        assert client.delay(0, "soon") <= 0.05  # unreadable: ignored
    with pytest.raises(ValueError):
        connect("http://nextbest.test", retries=-1)


# --- the two clients are one client -------------------------------------------------------
async def test_both_clients_send_the_same_requests() -> None:
    """The same calls put the same requests on the wire, whichever client makes them."""
    seen: dict[str, list[tuple[str, str, dict[str, str], object]]] = {}
    for kind in ("async", "sync"):
        handler = Flaky([unavailable(503)], httpx.Response(200, json=DECISION))
        async with connect_with(kind, "http://nextbest.test/", [], transport=on(handler),
                                api_key="k") as client:
            await client.decide(customer_id="c1", channel="pos", placement="checkout",
                                context={"store_id": "s12", "basket": ["p1"]}, candidates=("a1",))
            handler.final = httpx.Response(202, json={"accepted": 1, "rejected": []})
            await client.feedback("d" * 32, "a1", Outcome.accept, value=9.5,
                                  timestamp=datetime(2026, 11, 22, 10, tzinfo=UTC))
            await client.feedback_batch([{"decision_id": "d" * 32, "action_id": "a1",
                                          "outcome": "impression"}])
        seen[kind] = [(r.method, str(r.url), dict(r.headers), json.loads(r.content))
                      for r in handler.requests]
    assert seen["async"] == seen["sync"]
    assert [url for _, url, _, _ in seen["sync"]] == [
        "http://nextbest.test/v1/decisions", "http://nextbest.test/v1/decisions",
        "http://nextbest.test/v1/feedback", "http://nextbest.test/v1/feedback"]
    assert seen["sync"][2][3] == {"decision_id": "d" * 32, "action_id": "a1", "outcome": "accept",
                                  "value": 9.5, "timestamp": "2026-11-22T10:00:00+00:00"}
