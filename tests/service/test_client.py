"""The Python client: against the real app on a loopback port, and its retries on fakes."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator, Callable, Iterator

import httpx
import pytest

from load_tests.processes import free_port
from service.app import create_app
from service.client import (
    MAX_FEEDBACK_BATCH,
    NextbestAPIError,
    NextbestClient,
    NextbestTimeout,
    NextbestTransportError,
)
from service.schemas import DecisionRequest, Outcome
from tests.demo_fixtures import DemoDirs, serve_in_thread
from tests.service.conftest import make_settings

pytestmark = pytest.mark.anyio

KEY = "client-test-key"
KNOWN = "c00001"


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


@pytest.fixture(scope="module")
def service_url(demo: DemoDirs) -> Iterator[str]:
    """The real app (embedded state, API key required) served by uvicorn in a thread."""
    with serve_in_thread(create_app(make_settings(demo, api_keys=KEY)), free_port()) as url:
        yield url


@pytest.fixture
async def nb(service_url: str) -> AsyncIterator[NextbestClient]:
    async with NextbestClient(service_url, api_key=KEY) as client:
        yield client


# --- against the real service -------------------------------------------------------------
async def test_decide_returns_ranked_actions(nb: NextbestClient) -> None:
    d = await nb.decide(customer_id=KNOWN, channel="web", placement="home", limit=4,
                        context={"device": "desktop"}, explain=True)
    assert len(d.decision_id) == 32 and d.customer_id == KNOWN and d.channel == "web"
    assert [a.rank for a in d.actions] == [1, 2, 3, 4]
    assert [a.score for a in d.actions] == sorted((a.score for a in d.actions), reverse=True)
    for a in d.actions:
        assert 0 < a.propensity < 1 and a.probability == 1.0 and a.explanation is not None
    assert d.model_versions["offline"].startswith("nextbest-ranker:")


async def test_decide_takes_a_request_dict_or_model(nb: NextbestClient) -> None:
    body = {"customer_id": KNOWN, "channel": "app", "placement": "home", "limit": 2}
    by_dict = await nb.decide(body)
    by_model = await nb.decide(DecisionRequest.model_validate(body))
    assert len(by_dict.actions) == len(by_model.actions) == 2
    anonymous = await nb.decide(channel="web")
    assert anonymous.degraded == ["anonymous"] and len(anonymous.actions) == 3  # server default
    with pytest.raises(TypeError):
        await nb.decide(body, limit=3)
    with pytest.raises(TypeError):
        await nb.decide(customer_id=KNOWN)


async def test_feedback_single_and_batch_are_accepted(nb: NextbestClient) -> None:
    d = await nb.decide(customer_id=KNOWN, channel="web", limit=2)
    first, second = (a.action_id for a in d.actions)
    one = await nb.feedback(d.decision_id, first, Outcome.impression)
    assert one.accepted == 1 and one.rejected == []
    batch = await nb.feedback_batch([
        {"decision_id": d.decision_id, "action_id": second, "outcome": "impression"},
        {"decision_id": "0" * 32, "action_id": second, "outcome": "click"},
        {"decision_id": d.decision_id, "action_id": first, "outcome": "accept", "value": 12.5,
         "timestamp": "2024-05-01T12:00:00+00:00"},
    ])
    assert batch.accepted == 2
    assert [(r.index, r.reason) for r in batch.rejected] == [(1, "unknown_decision")]
    assert (await nb.feedback_batch([])).accepted == 0


async def test_a_large_batch_is_split_and_indices_stay_global(nb: NextbestClient) -> None:
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


async def test_a_bad_channel_raises_with_the_servers_message(nb: NextbestClient) -> None:
    with pytest.raises(NextbestAPIError) as err:
        await nb.decide({"customer_id": KNOWN, "channel": "fax"})
    assert err.value.status_code == 422 and err.value.error == "invalid_request"
    assert "channel" in err.value.message and err.value.detail


async def test_feedback_on_an_unknown_decision_is_404(nb: NextbestClient) -> None:
    with pytest.raises(NextbestAPIError) as err:
        await nb.feedback("f" * 32, "anything", "click")
    assert err.value.status_code == 404 and err.value.error == "unknown_decision"
    assert "f" * 32 in err.value.message


async def test_the_api_key_is_sent(service_url: str) -> None:
    async with NextbestClient(service_url) as anonymous:
        with pytest.raises(NextbestAPIError) as err:
            await anonymous.decide(channel="web")
    assert err.value.status_code == 401 and err.value.error == "unauthorized"


async def test_a_silent_server_times_out() -> None:
    async def never_answer(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.read(1)
        await asyncio.sleep(5)

    server = await asyncio.start_server(never_answer, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    try:
        async with NextbestClient(f"http://127.0.0.1:{port}", timeout=0.1, retries=1,
                                  backoff=0.0) as client:
            with pytest.raises(NextbestTimeout, match="after 2 attempts"):
                await client.decide(channel="web")  # decide retried the timeout once
            with pytest.raises(NextbestTimeout) as err:
                await client.feedback("d", "a", "click")
            assert "attempts" not in str(err.value)  # feedback did not: it may have counted
    finally:
        server.close()


async def test_a_refused_connection_is_retried_then_raised() -> None:
    async with NextbestClient(f"http://127.0.0.1:{free_port()}", retries=2, backoff=0.0) as c:
        with pytest.raises(NextbestTransportError, match="after 3 attempts"):
            await c.feedback("d", "a", "click")


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


def fake(handler: Callable[[httpx.Request], httpx.Response], sleeps: list[float],
         **kwargs: object) -> NextbestClient:
    async def sleep(seconds: float) -> None:
        sleeps.append(seconds)

    return NextbestClient("http://nextbest.test", transport=httpx.MockTransport(handler),
                          sleep=sleep, **kwargs)  # type: ignore[arg-type]


def unavailable(status: int = 503, **headers: str) -> httpx.Response:
    return httpx.Response(status, json={"error": "not_ready", "message": "warming up"},
                          headers=headers)


@pytest.mark.parametrize("status", [503, 429])
async def test_decide_retries_twice_then_succeeds(status: int) -> None:
    handler = Flaky([unavailable(status), unavailable(status)], httpx.Response(200, json=DECISION))
    sleeps: list[float] = []
    async with fake(handler, sleeps, backoff=0.1, api_key="k") as client:
        d = await client.decide(channel="web")
    assert d.actions[0].action_id == "a1" and len(handler.requests) == 3
    assert all(r.headers["X-API-Key"] == "k" for r in handler.requests)
    assert 0.05 <= sleeps[0] <= 0.1 and 0.1 <= sleeps[1] <= 0.2  # exponential, jittered


async def test_retry_after_is_honoured_and_capped() -> None:
    handler = Flaky([unavailable(429, **{"Retry-After": "0.7"}),
                     unavailable(503, **{"Retry-After": "120"})], httpx.Response(200, json=DECISION))
    sleeps: list[float] = []
    async with fake(handler, sleeps, backoff=0.01, max_backoff=1.5) as client:
        await client.decide(channel="web")
    assert sleeps == [0.7, 1.5]


async def test_gives_up_after_the_retries() -> None:
    handler = Flaky([], unavailable(503))
    sleeps: list[float] = []
    async with fake(handler, sleeps, retries=2) as client:
        with pytest.raises(NextbestAPIError) as err:
            await client.decide(channel="web")
    assert err.value.status_code == 503 and err.value.error == "not_ready"
    assert err.value.message == "warming up"
    assert len(handler.requests) == 3 and len(sleeps) == 2


async def test_other_errors_are_not_retried() -> None:
    handler = Flaky([], httpx.Response(502, text="<html>bad gateway</html>"))
    async with fake(handler, []) as client:
        with pytest.raises(NextbestAPIError) as err:
            await client.feedback("d", "a", "click")
    assert len(handler.requests) == 1
    assert err.value.status_code == 502 and err.value.error == "http_502"


async def test_feedback_retries_only_what_cannot_have_been_counted() -> None:
    accepted = httpx.Response(202, json={"accepted": 1, "rejected": []})
    connect = Flaky([httpx.ConnectError("refused"), unavailable(429)], accepted)
    async with fake(connect, []) as client:
        assert (await client.feedback("d", "a", "click")).accepted == 1
    assert len(connect.requests) == 3

    read_timeout = Flaky([httpx.ReadTimeout("slow")], accepted)
    async with fake(read_timeout, []) as client:
        with pytest.raises(NextbestTimeout):
            await client.feedback("d", "a", "click")
    assert len(read_timeout.requests) == 1

    decide_timeout = Flaky([httpx.ReadTimeout("slow")], httpx.Response(200, json=DECISION))
    async with fake(decide_timeout, []) as client:
        await client.decide(channel="web")
    assert len(decide_timeout.requests) == 2


async def test_feedback_batch_sends_at_most_the_server_limit() -> None:
    sizes: list[int] = []

    def handler(request: httpx.Request) -> httpx.Response:
        events = json.loads(request.content)["events"]
        sizes.append(len(events))
        return httpx.Response(202, json={"accepted": len(events) - 1, "rejected": [
            {"index": 0, "decision_id": "d", "action_id": "a", "reason": "unknown_decision",
             "message": "unknown"}]})

    events = [{"decision_id": "d", "action_id": "a", "outcome": "impression"}] * 2500
    async with fake(handler, []) as client:
        result = await client.feedback_batch(events)
    assert sizes == [1000, 1000, 500]
    assert result.accepted == 2497 and [r.index for r in result.rejected] == [0, 1000, 2000]


def test_backoff_is_exponential_and_capped() -> None:
    client = NextbestClient("http://nextbest.test", backoff=0.05, max_backoff=0.3)
    delays = [client.delay(n) for n in range(5)]
    for n, d in enumerate(delays[:3]):
        assert 0.05 * 2**n / 2 <= d <= 0.05 * 2**n
    assert delays[-1] == 0.3
    assert client.delay(0, "Thu, 01 Jan 1970 00:00:00 GMT") <= 0.05  # a date in the past
    assert client.delay(0, "soon") <= 0.05  # unreadable: ignored
    with pytest.raises(ValueError):
        NextbestClient("http://nextbest.test", retries=-1)
