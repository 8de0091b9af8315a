"""No input yields a 5xx: property-based requests (hypothesis) against every endpoint.

Bodies are drawn three ways: near-valid ones (the request models' keys with values of
every JSON type, in and out of bounds, real ids mixed with made-up ones), arbitrary JSON,
and arbitrary bytes; headers vary the content type and add arbitrary ones; paths and
methods are drawn too. The app is the real one (TestClient), on the embedded backend
and, for feedback (whose keys reach Redis as keys of their own), on Redis. Each endpoint
gets a bounded number of examples and no deadline, so the module stays short; the count
of inputs tried and of 5xx seen is printed (`pytest -s`).
"""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Iterator
from typing import Any

import pytest
from fastapi.testclient import TestClient
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from features.config import shipped_world
from service.app import create_app
from tests.demo_fixtures import DemoDirs, clear_service_state
from tests.service.conftest import make_settings

EXAMPLES = 300
RETAIL = shipped_world("retail")
SETTINGS = settings(max_examples=EXAMPLES, deadline=None, derandomize=True,
                    suppress_health_check=[HealthCheck.function_scoped_fixture,
                                           HealthCheck.too_slow, HealthCheck.data_too_large])

tried: Counter[str] = Counter()
server_errors: Counter[str] = Counter()
statuses: Counter[tuple[str, int]] = Counter()


@pytest.fixture(scope="module")
def app_client(demo: DemoDirs) -> Iterator[TestClient]:
    with TestClient(create_app(make_settings(demo)), raise_server_exceptions=False) as c:
        yield c


@pytest.fixture(scope="module")
def redis_client(demo: DemoDirs, demo_redis: str) -> Iterator[TestClient]:
    clear_service_state(demo_redis)
    settings = make_settings(demo, demo_redis)
    with TestClient(create_app(settings), raise_server_exceptions=False) as c:
        yield c


@pytest.fixture(scope="module")
def shown(app_client: TestClient) -> tuple[str, list[str]]:
    """A real decision of the embedded app: its id and the actions it showed."""
    d = app_client.post("/v1/decisions", json={
        "customer_id": "c00001", "channel": "web", "placement": "home", "limit": 3}).json()
    return d["decision_id"], [a["action_id"] for a in d["actions"]]


@pytest.fixture(scope="module", autouse=True)
def figures() -> Iterator[None]:
    yield
    print(f"\nHOSTILE INPUTS: tried {dict(tried)} ({sum(tried.values())} in all), "
          f"5xx seen {dict(server_errors)} ({sum(server_errors.values())} in all); "
          f"statuses {sorted(statuses.items())}")


scalars = (st.none() | st.booleans() | st.integers(min_value=-(2**70), max_value=2**70)
           | st.floats(allow_nan=False) | st.text(max_size=40))
json_values = st.recursive(scalars, lambda inner: st.lists(inner, max_size=5)
                           | st.dictionaries(st.text(max_size=12), inner, max_size=5),
                           max_leaves=20)
ids = st.text(max_size=80) | st.sampled_from(["c00001", "p001", "o001", "", " ", "\x00", "é" * 300])
channels = st.sampled_from(RETAIL.channels) | st.text(max_size=12)
placements = st.sampled_from(list(RETAIL.placements)) | st.text(max_size=12)
timestamps = (st.datetimes().map(lambda t: t.isoformat()) | st.text(max_size=30)
              | st.integers() | st.sampled_from(["2100-01-01T00:00:00Z", "1970-01-01", "now"]))


def maybe(**fields: st.SearchStrategy[Any]) -> st.SearchStrategy[dict[str, Any]]:
    """Dicts with any subset of `fields` (and now and then a key no model knows)."""
    return st.fixed_dictionaries({}, optional={**fields, "unexpected": json_values})


contexts = maybe(store_id=ids | json_values, basket=st.lists(ids, max_size=60) | json_values,
                 device=st.text(max_size=10) | json_values,
                 cart_value=st.floats() | st.integers() | json_values,
                 journey_stage=st.text(max_size=10) | json_values) | json_values
hostile_decisions = maybe(customer_id=ids | json_values, channel=channels | json_values,
                          placement=placements | json_values, context=contexts,
                          candidates=st.lists(ids, max_size=30) | json_values,
                          limit=st.integers(min_value=-5, max_value=50) | json_values,
                          explain=st.booleans() | json_values)
valid_decisions = st.sampled_from([(c, p) for p, cs in RETAIL.placements.items() for c in cs]).flatmap(
    lambda pair: st.fixed_dictionaries(
        {"channel": st.just(pair[0]), "placement": st.just(pair[1])},
        optional={"customer_id": st.sampled_from(["c00001", "c00002", "nobody"]),
                  "limit": st.integers(min_value=1, max_value=20), "explain": st.booleans(),
                  "context": st.fixed_dictionaries({}, optional={
                      "cart_value": st.floats(min_value=0, max_value=1e6),
                      "basket": st.lists(st.sampled_from(["p001", "p002", "zz"]), max_size=5),
                      "device": st.sampled_from(["mobile", "desktop", "fridge"])})}))


def mutated(valid: st.SearchStrategy[dict[str, Any]]) -> st.SearchStrategy[dict[str, Any]]:
    """A valid body with one key dropped, or set to an arbitrary value, or one added."""
    def change(body: dict[str, Any], key: str, value: Any, drop: bool) -> dict[str, Any]:
        body = dict(body)
        if drop:
            body.pop(key, None)
        else:
            body[key] = value
        return body

    return st.builds(change, valid, st.sampled_from(["customer_id", "channel", "placement",
                                                      "context", "candidates", "limit",
                                                      "explain", "decision_id", "action_id",
                                                      "outcome", "value", "timestamp",
                                                      "event_id", "other"]),
                     json_values, st.booleans())


decisions = valid_decisions | mutated(valid_decisions) | hostile_decisions


def feedback_events(shown: tuple[str, list[str]]) -> st.SearchStrategy[dict[str, Any]]:
    decision_id, actions = shown
    valid = st.fixed_dictionaries(
        {"decision_id": st.just(decision_id), "action_id": st.sampled_from(actions),
         "outcome": st.sampled_from(["impression", "click", "accept", "dismiss", "purchase"])},
        optional={"value": st.floats(min_value=0, max_value=1e6),
                  "event_id": st.text(min_size=1, max_size=60)})
    hostile = maybe(decision_id=st.just(decision_id) | ids | json_values,
                    action_id=st.sampled_from(actions) | ids | json_values,
                    outcome=st.sampled_from(["impression", "click", "accept", "dismiss",
                                             "purchase"]) | st.text(max_size=10) | json_values,
                    value=st.floats() | st.integers() | json_values,
                    timestamp=timestamps | json_values, event_id=ids | json_values)
    return valid | mutated(valid) | hostile


def encoded(strategy: st.SearchStrategy[Any]) -> st.SearchStrategy[bytes]:
    """The strategy's values as JSON (some not strictly JSON: Infinity, NaN), or any bytes."""
    return (strategy.map(lambda v: json.dumps(v).encode())
            | json_values.map(lambda v: json.dumps(v).encode())
            | st.binary(max_size=200))


headers = st.fixed_dictionaries({}, optional={
    "content-type": st.sampled_from(["application/json", "text/plain", "application/x+json",
                                     "application/json; charset=latin-1", "", "*/*"])
    | st.text(alphabet=st.characters(min_codepoint=32, max_codepoint=126), max_size=30),
    "x-api-key": st.text(alphabet=st.characters(min_codepoint=32, max_codepoint=126), max_size=20),
    "x-anything": st.text(alphabet=st.characters(min_codepoint=32, max_codepoint=126), max_size=20),
})


def check(client: TestClient, endpoint: str, method: str, path: str, body: bytes,
          head: dict[str, str]) -> None:
    tried[endpoint] += 1
    r = client.request(method, path, content=body, headers=head)
    statuses[endpoint, r.status_code] += 1
    if r.status_code >= 500:
        server_errors[endpoint] += 1
    assert r.status_code < 500, (method, path, body[:300], head, r.status_code, r.text[:500])


@SETTINGS
@given(body=encoded(decisions), head=headers)
def test_decisions(app_client: TestClient, body: bytes, head: dict[str, str]) -> None:
    check(app_client, "POST /v1/decisions", "POST", "/v1/decisions", body, head)


@SETTINGS
@given(data=st.data(), head=headers)
def test_feedback(app_client: TestClient, shown: tuple[str, list[str]], data: st.DataObject,
                  head: dict[str, str]) -> None:
    events = feedback_events(shown)
    body = data.draw(encoded(events | maybe(events=st.lists(events, max_size=8) | json_values)))
    check(app_client, "POST /v1/feedback", "POST", "/v1/feedback", body, head)


@settings(SETTINGS, max_examples=EXAMPLES // 2)
@given(data=st.data(), head=headers)
def test_feedback_on_redis(redis_client: TestClient, data: st.DataObject,
                           head: dict[str, str]) -> None:
    decision = redis_client.post("/v1/decisions", json={
        "customer_id": "c00002", "channel": "web", "placement": "home", "limit": 2}).json()
    shown = (decision["decision_id"], [a["action_id"] for a in decision["actions"]])
    events = feedback_events(shown)
    body = data.draw(encoded(events | maybe(events=st.lists(events, max_size=8) | json_values)))
    check(redis_client, "POST /v1/feedback (redis)", "POST", "/v1/feedback", body, head)


OPS = ["/healthz", "/readyz", "/metrics", "/docs", "/openapi.json", "/redoc"]


@SETTINGS
@given(path=st.sampled_from(OPS), method=st.sampled_from(["GET", "HEAD", "POST", "DELETE"]),
       body=st.binary(max_size=100), head=headers)
def test_operations_endpoints(app_client: TestClient, path: str, method: str, body: bytes,
                              head: dict[str, str]) -> None:
    check(app_client, "ops", method, path, body, head)


# a segment is never empty: a path starting with "//" is one the HTTP client itself refuses
# to send (a protocol-relative URL), so it would test httpx, not the service
segments = st.text(alphabet=st.characters(min_codepoint=33, max_codepoint=126,
                                          exclude_characters="/?#%"), min_size=1, max_size=12)


@SETTINGS
@given(path=st.lists(segments, max_size=4).map(lambda s: "/" + "/".join(s))
       | st.sampled_from(["/v1/decisions", "/v1/feedback", "/v1/", "/v1/decisions/x",
                          "//v1//decisions", "/v1/feedback?x=1"]),
       method=st.sampled_from(["GET", "POST", "PUT", "PATCH", "DELETE", "OPTIONS", "HEAD"]),
       body=encoded(json_values), head=headers)
def test_any_path_and_method(app_client: TestClient, path: str, method: str, body: bytes,
                             head: dict[str, str]) -> None:
    check(app_client, "any path", method, path, body, head)


def test_the_inputs_reached_past_validation() -> None:
    """Run after the tests above (file order): some of their inputs were valid, so the
    decision and feedback paths themselves were exercised, not only the validation."""
    assert statuses["POST /v1/decisions", 200] > 0, statuses
    assert statuses["POST /v1/feedback", 202] > 0, statuses
    assert statuses["POST /v1/feedback (redis)", 202] > 0, statuses
