"""Caps and budgets: the counters' contract on every backend, the limiter's re-selection,
and two real service processes racing for the same customers on one real Redis."""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import AsyncIterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest
import redis.asyncio as aioredis

from load_tests.processes import free_port, nextbest_args, nextbest_env, start_http
from service.exploration import select_top_k
from service.limits import Budget, ContactPolicy, Limiter, Limits
from service.state.counters import CounterStore, MemoryCounters, RedisCounters, Slot
from service.state.resp import RespConnection
from tests.demo_fixtures import DemoDirs, redis_client

ROOT = Path(__file__).resolve().parents[2]
pytestmark = pytest.mark.anyio


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


@pytest.fixture(params=["memory", "redis", "redis-cluster-mode", "redis-cluster"])
async def store(request: pytest.FixtureRequest) -> AsyncIterator[CounterStore]:
    """In-process; one Redis node as the service talks to it; one node called as in
    cluster mode (a script per hash tag); a real Redis Cluster of three masters."""
    if request.param == "memory":
        yield MemoryCounters()
        return
    if request.param == "redis-cluster":
        client = aioredis.RedisCluster.from_url(request.getfixturevalue("redis_cluster_url"))
        yield RedisCounters(client, scripted=False)
        await client.aclose()
        return
    url = request.getfixturevalue("redis_url")
    connection = RespConnection(url)
    yield RedisCounters(connection, scripted=request.param == "redis")
    await connection.aclose()


def window(key: str, limit: int, group: int, seconds: float = 60.0) -> Slot:
    return Slot(key, "window", limit, seconds, group)


async def test_a_window_cap_takes_up_to_its_limit(store: CounterStore) -> None:
    key = "nb:{c:x}:cap:a"
    answers = [(await store.take([window(key, 2, 0)], f"d{i}", 1000.0 + i))[0] for i in range(4)]
    assert answers == [True, True, False, False]
    # the window slides: the first impression (t=1000) is out of it at t=1061
    assert await store.take([window(key, 2, 0)], "d9", 1061.0) == [True]


async def test_a_group_is_granted_whole_or_not_at_all(store: CounterStore) -> None:
    cap, budget = "nb:{c:x}:cap:a", "nb:{budget}:a:total"
    both = [window(cap, 5, 0), Slot(budget, "reserve", 1, 0, 0)]
    assert await store.take(both, "d1", 1000.0) == [True, True]
    assert await store.take(both, "d2", 1001.0) == [False, False]  # the budget is spent
    assert await store.read([budget]) == [1]
    # the refused decision recorded no impression under the cap
    assert await store.take([window(cap, 2, 0)], "d3", 1002.0) == [True]
    assert await store.take([window(cap, 2, 0)], "d4", 1003.0) == [False]


async def test_give_back_undoes_what_was_taken_and_not_shown(store: CounterStore) -> None:
    slots = [window("nb:{c:y}:cap:a", 1, 0), Slot("nb:{budget}:a:day", "reserve", 1, 60, 0)]
    assert await store.take(slots, "d1", 1000.0) == [True, True]
    await store.give_back(slots, "d1")
    assert await store.take(slots, "d2", 1001.0) == [True, True]


async def test_check_slots_read_a_budget_that_accepts_spend(store: CounterStore) -> None:
    check = Slot("nb:{budget}:b:day", "check", 2, 60, 0)
    assert await store.take([check], "d1", 1000.0) == [True]
    assert await store.read([check.key]) == [0]  # a check takes nothing
    await store.add([check, check])
    assert await store.take([check], "d2", 1001.0) == [False]


def limits(contact: ContactPolicy | None = None, budget: Budget | None = None) -> Limits:
    return Limits(["a", "b", "c"], [contact, None, None], [None, budget, None])


async def test_the_limiter_drops_what_is_at_its_cap_and_selects_again() -> None:
    lim = limits(ContactPolicy(max_impressions=1, window_seconds=60))
    limiter = Limiter(MemoryCounters())
    rows = np.arange(3)
    priority = np.array([3.0, 2.0, 1.0])  # "a" ranks first

    def reselect(excluded: np.ndarray | None = None) -> Any:
        return select_top_k(priority, 2, 0.0, np.random.default_rng(0), 0, None, excluded)

    first, refused = await limiter.hold(lim, rows, reselect(), "c1", "web", "d1", reselect)
    assert first.positions.tolist() == [0, 1] and refused == {}
    again, refused = await limiter.hold(lim, rows, reselect(), "c1", "web", "d2", reselect)
    assert again.positions.tolist() == [1, 2] and refused == {0: "cap"}
    other, _ = await limiter.hold(lim, rows, reselect(), "c2", "web", "d3", reselect)
    assert other.positions.tolist() == [0, 1]  # caps are per customer
    anonymous, _ = await limiter.hold(lim, rows, reselect(), None, "web", "d4", reselect)
    assert anonymous.positions.tolist() == [0, 1]  # nobody to count


async def test_per_channel_caps_count_each_channel() -> None:
    lim = limits(ContactPolicy(max_impressions=1, window_seconds=60, per_channel=True))
    limiter = Limiter(MemoryCounters())
    rows, priority = np.arange(3), np.array([3.0, 2.0, 1.0])

    def reselect(excluded: np.ndarray | None = None) -> Any:
        return select_top_k(priority, 1, 0.0, np.random.default_rng(0), 0, None, excluded)

    shown = []
    for i, channel in enumerate(["web", "pos", "web"]):
        sel, _ = await limiter.hold(lim, rows, reselect(), "c1", channel, f"d{i}", reselect)
        shown.append(sel.positions.tolist())
    assert shown == [[0], [0], [1]]


async def test_a_failing_store_closes_limited_actions() -> None:
    class Broken(MemoryCounters):
        async def take(self, slots: Any, member: str, now: float) -> list[bool]:
            raise ConnectionError("redis is away")

    lim = limits(budget=Budget(limit=10))
    rows, priority = np.arange(3), np.array([1.0, 3.0, 2.0])  # "b" (budgeted) first

    def reselect(excluded: np.ndarray | None = None) -> Any:
        return select_top_k(priority, 2, 0.0, np.random.default_rng(0), 0, None, excluded)

    sel, refused = await Limiter(Broken()).hold(lim, rows, reselect(), "c1", "web", "d1", reselect)
    assert sel.positions.tolist() == [2, 0] and refused == {1: "limits_unavailable"}


# --- two service processes, one Redis -------------------------------------------------------
CAP = 2
BUDGET = 25
CUSTOMERS = [f"c{i:05d}" for i in range(1, 13)]


def race_catalog(demo: DemoDirs, path: Path) -> tuple[Path, list[str], str]:
    """The demo catalog with a cap on every web product shown at home, and one budget."""
    document = json.loads((demo.data_dir / "catalog.json").read_text())
    home = [a for a in document["actions"] if "web" in a["channels"] and "home" in a["placements"]]
    capped = [a["action_id"] for a in home[:8]]
    budgeted = home[8]["action_id"]
    for a in document["actions"]:
        if a["action_id"] in capped:
            a["contact"] = {"max_impressions": CAP, "window_seconds": 3600}
        if a["action_id"] == budgeted:
            a["budget"] = {"limit": BUDGET, "per": "day", "counts": "impression"}
    path.write_text(json.dumps(document))
    return path, capped, budgeted


def test_two_replicas_never_exceed_a_cap_or_a_budget(shared_redis: tuple[str, bool],
                                                     demo: DemoDirs, tmp_path: Path) -> None:
    demo_redis, cluster = shared_redis
    catalog, capped, budgeted = race_catalog(demo, tmp_path / "catalog.json")
    candidates = [*capped, budgeted]
    env = {**nextbest_env(demo_redis, demo.data_dir, demo.models_dir, cluster=cluster),
           "NEXTBEST_CATALOG_PATH": str(catalog), "NEXTBEST_EPSILON": "0.3",
           "NEXTBEST_REDIS_TIMEOUT_SECONDS": "2", "PYTHONPATH": str(ROOT)}
    servers = []
    try:
        for i in range(2):
            port = free_port()
            servers.append(start_http(f"replica-{i}", nextbest_args(port), env, port,
                                      tmp_path / f"replica-{i}.log", cwd=ROOT))
        shown: list[list[str]] = []

        def burst(server_url: str) -> list[list[str]]:
            out = []
            with httpx.Client(base_url=server_url, timeout=10) as http:
                for _ in range(6):
                    for customer in CUSTOMERS:
                        r = http.post("/v1/decisions", json={
                            "customer_id": customer, "channel": "web", "placement": "home",
                            "candidates": candidates, "limit": 3})
                        assert r.status_code == 200, r.text
                        out.append([customer, *(a["action_id"] for a in r.json()["actions"])])
            return out

        # four clients, two per replica, all deciding for the same customers at once
        with ThreadPoolExecutor(4) as pool:
            for result in pool.map(burst, [s.url for s in servers] * 2):
                shown += result
    finally:
        for s in servers:
            s.stop()
    per_customer = Counter((row[0], a) for row in shown for a in row[1:] if a in capped)
    budget_spent = sum(a == budgeted for row in shown for a in row[1:])
    overshoot = sum(max(0, n - CAP) for n in per_customer.values()) + max(0, budget_spent - BUDGET)
    assert overshoot == 0, (per_customer.most_common(3), budget_spent)
    # the race was real: caps were reached for every customer and the budget spent
    assert all(per_customer[(c, a)] == CAP for c in CUSTOMERS for a in capped)
    assert budget_spent == BUDGET
    # and what Redis holds agrees with what the decisions returned
    client = redis_client(demo_redis, cluster)
    held = {(c, a): client.zcard(f"nb:{{c:{c}}}:cap:{a}") for c in CUSTOMERS for a in capped}
    day_keys = list(client.scan_iter(match=f"nb:{{budget}}:{budgeted}:*"))
    spent: list[Any] = [client.get(k) for k in day_keys]
    assert held == dict(per_customer) and [int(v) for v in spent] == [BUDGET]
    client.close()

