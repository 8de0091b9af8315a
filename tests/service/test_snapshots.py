"""Snapshots: a restored learner and ledger behave as the ones they were taken from;
one replica writes per interval; unreadable or incomplete snapshots are ignored."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from typing import Any

import numpy as np
import pytest
import redis.asyncio as aioredis

from service.contacts import ContactLedger
from service.learner import LearningExample, OnlineLearner
from service.metrics import Metrics
from service.model import sigmoid
from service.snapshots import Snapshot, Snapshots, SnapshotStore, decode, encode
from tests.service.retail import RETAIL_TABLES

IDS = ["a", "b", "c", "d"]
ALL = np.arange(len(IDS))
NOW = 1_000_000.0
pytestmark = pytest.mark.anyio


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


def learned(rng: np.random.Generator, ids: list[str] = IDS) -> OnlineLearner:
    learner = OnlineLearner(ids, RETAIL_TABLES, groups=["x", "x", "y", None][:len(ids)])
    for _ in range(300):
        learner.learn([LearningExample(
            str(rng.choice(ids)), str(rng.choice(["web", "pos", "kiosk"])),  # kiosk: a new column
            "home", str(rng.choice(["browse", "purchase"])), float(rng.normal(-2, 1)),
            str(rng.choice(["accept", "dismiss", "impression"])), float(rng.integers(0, 4)),
        )])
    return learner


def contacted(rng: np.random.Generator) -> ContactLedger:
    ledger = ContactLedger(IDS, clock=lambda: NOW)
    ledger.record({"customer_id": f"c{rng.integers(20)}", "action_id": str(rng.choice(IDS)),
                   "outcome": str(rng.choice(["impression", "impression", "dismiss", "accept"])),
                   "ts": NOW - float(rng.uniform(0, 40 * 86_400))} for _ in range(400))
    return ledger


def test_a_restored_learner_and_ledger_serve_and_learn_as_the_originals() -> None:
    rng = np.random.default_rng(3)
    learner, ledger = learned(rng), contacted(rng)
    snapshot = decode(encode(Snapshot("17-3", 5.0, learner.state(), ledger.state())))
    assert (snapshot.position, snapshot.created_at) == ("17-3", 5.0)

    learner2 = OnlineLearner(IDS, RETAIL_TABLES, groups=["x", "x", "y", None])
    ledger2 = ContactLedger(IDS, clock=lambda: NOW)
    assert snapshot.learner is not None and snapshot.ledger is not None
    learner2.restore(snapshot.learner)
    ledger2.restore(snapshot.ledger)

    z = np.linspace(-3, 1, len(IDS))
    w1, w2 = learner.publish(), learner2.weights  # restore publishes
    for channel in ("web", "pos", "kiosk"):
        assert np.array_equal(w1.correction(z, ALL, channel, "home", "browse", ALL % 3),
                              w2.correction(z, ALL, channel, "home", "browse", ALL % 3))
    assert learner2.updates == learner.updates == 300
    # and both go on learning alike (optimizer state included)
    more = LearningExample("b", "kiosk", "home", "purchase", -1.0, "accept", 2.0)
    learner.learn([more]), learner2.learn([more])
    assert learner2.predict_proba(more) == learner.predict_proba(more)

    assert len(ledger2) == len(ledger) > 0
    for customer in [f"c{i}" for i in range(20)]:
        for mine, theirs in zip(ledger.lookup(customer, ALL), ledger2.lookup(customer, ALL),
                                strict=True):
            assert (mine is None and theirs is None) or (
                mine is not None and theirs is not None and np.array_equal(mine, theirs))
    assert list(ledger2.state().customers) == list(ledger.state().customers)  # recency kept


def test_contacts_follow_their_action_into_a_changed_catalog() -> None:
    old = ContactLedger(IDS, clock=lambda: NOW)
    old.record([{"customer_id": "c1", "action_id": a, "outcome": "impression", "ts": NOW - 1}
                for a in ("a", "c", "c", "d")])
    new_ids = ["d", "x", "c"]  # "a" and "b" left the catalog, the rest moved
    new = ContactLedger(new_ids, clock=lambda: NOW)
    state = decode(encode(Snapshot("1", 0.0, None, old.state()))).ledger
    assert state is not None
    new.restore(state)
    assert new.exposures("c1", np.arange(3)).tolist() == [1, 0, 2]


def test_an_empty_state_restores_to_an_empty_ledger() -> None:
    state = decode(encode(Snapshot("0", 0.0, None, ContactLedger(IDS).state()))).ledger
    assert state is not None
    ledger = ContactLedger(IDS)
    ledger.restore(state)
    assert len(ledger) == 0


@pytest.mark.parametrize("blob", [b"", b"not a snapshot", b"PK\x03\x04 broken zip"])
def test_garbage_is_not_a_snapshot(blob: bytes) -> None:
    with pytest.raises(ValueError):
        decode(blob)


def test_inconsistent_ledger_arrays_are_refused() -> None:
    ledger = contacted(np.random.default_rng(1))
    state = ledger.state()
    broken = type(state)(state.customers[:-1], state.counts[:-1], state.contacts, state.actions)
    with pytest.raises(ValueError, match="disagree"):
        decode(encode(Snapshot("1", 0.0, None, broken)))


@pytest.fixture(params=["redis", "redis-cluster"])
def connect(request: pytest.FixtureRequest) -> Callable[[], Any]:
    """New clients of a real Redis, or of a real Redis Cluster."""
    if request.param == "redis-cluster":
        url = request.getfixturevalue("redis_cluster_url")
        return lambda: aioredis.RedisCluster.from_url(url)
    url = request.getfixturevalue("redis_url")
    return lambda: aioredis.from_url(url)


@pytest.fixture
async def store(connect: Callable[[], Any]) -> AsyncIterator[SnapshotStore]:
    client = connect()
    yield SnapshotStore(client, key="test:snapshot")
    await client.aclose()


async def test_one_replica_writes_per_interval(connect: Callable[[], Any],
                                               store: SnapshotStore) -> None:
    rng = np.random.default_rng(5)
    other_client = connect()
    try:
        mine = Snapshots(store, 30.0, Metrics(), learned(rng), contacted(rng))
        theirs = Snapshots(SnapshotStore(other_client, key="test:snapshot"), 30.0, Metrics(),
                           learned(rng), contacted(rng))
        assert await mine.take("5-0")
        assert not await theirs.take("5-0")  # not its turn within the interval
        blob = await store.load()
        assert blob is not None and decode(blob).position == "5-0"
        await other_client.delete("test:snapshot:turn")  # the interval has passed
        assert not await mine.take("5-0")  # nothing new since its last one
        assert await theirs.take("6-0")
        blob = await store.load()
        assert blob is not None and decode(blob).position == "6-0"
    finally:
        await other_client.aclose()


async def test_restore_ignores_a_snapshot_without_a_part_this_replica_needs(
    store: SnapshotStore,
) -> None:
    rng = np.random.default_rng(6)
    await store.save(encode(Snapshot("9-0", 0.0, None, contacted(rng).state())))
    learner = OnlineLearner(IDS, RETAIL_TABLES)
    fresh = Snapshots(store, 30.0, Metrics(), learner, ContactLedger(IDS))
    assert await fresh.restore() is None  # learning on here, none in the snapshot
    assert learner.updates == 0
    ledger_only = Snapshots(store, 30.0, Metrics(), None, ContactLedger(IDS))
    assert await ledger_only.restore() == "9-0"
    await store.save(b"garbage")
    assert await Snapshots(store, 30.0, Metrics(), None, ContactLedger(IDS)).restore() is None


def test_probabilities_match_after_restore_for_unseen_context() -> None:
    """A context value never seen gets no column: restored and original agree on it."""
    rng = np.random.default_rng(9)
    learner = learned(rng)
    restored = OnlineLearner(IDS, RETAIL_TABLES, groups=["x", "x", "y", None])
    restored.restore(learner.state())
    z = np.array([-2.0])
    for row in range(len(IDS)):
        rows = np.array([row])
        a = sigmoid(z + learner.publish().correction(z, rows, "email", "home", "browse"))
        b = sigmoid(z + restored.weights.correction(z, rows, "email", "home", "browse"))
        assert a[0] == b[0]
