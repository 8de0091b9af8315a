"""The learner loop: learns every event, publishes to the decision path at most every
`publish_interval` while events keep coming, and at once when the stream goes quiet."""

from __future__ import annotations

import asyncio
import time

import pytest

from service.feedback_loop import FeedbackLoop
from service.learner import OnlineLearner
from service.metrics import Metrics
from service.state.memory import MemoryState
from tests.service.retail import RETAIL_TABLES

ACTIONS = ["p001", "p002", "p003"]
pytestmark = pytest.mark.anyio


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


def event(i: int) -> dict[str, object]:
    return {
        "decision_id": f"d{i}", "action_id": ACTIONS[i % 3], "outcome": "accept" if i % 4 else "dismiss",
        "ts": time.time(), "accepted_at": time.time(), "customer_id": f"c{i % 5}",
        "channel": "web", "placement": "home", "journey_stage": "browse", "segment": "new",
        "rank": 1, "probability": 1.0, "offline_logit": 0.0, "exposures": 0,
    }


class CountingLearner(OnlineLearner):
    def __init__(self) -> None:
        super().__init__(ACTIONS, RETAIL_TABLES)
        self.publications = 0

    def publish(self):  # type: ignore[no-untyped-def]
        self.publications += 1
        return super().publish()


async def run_loop(publish_interval: float, batches: int) -> tuple[FeedbackLoop, CountingLearner]:
    state = MemoryState(3600)
    learner = CountingLearner()
    loop = FeedbackLoop(state, learner, Metrics(), block_ms=1000, publish_interval=publish_interval)
    task = asyncio.create_task(loop.run())
    try:
        for b in range(batches):  # a steady trickle: one event at a time
            await state.append_feedback([event(b)])
            await asyncio.sleep(0.01)
        deadline = time.monotonic() + 5
        while loop.learned < batches and time.monotonic() < deadline:
            await asyncio.sleep(0.01)
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
    return loop, learner


async def test_a_trickle_is_learned_whole_but_published_in_few_copies() -> None:
    loop, learner = await run_loop(publish_interval=10.0, batches=20)
    assert loop.learned == 20
    assert learner.updates == 20
    assert learner.publications == 2  # the first read at once, then only when the stream went quiet


async def test_without_an_interval_every_read_is_published() -> None:
    loop, learner = await run_loop(publish_interval=0.0, batches=20)
    assert loop.learned == 20
    assert learner.publications >= 10


def counted_reads() -> tuple[MemoryState, list[float]]:
    """A store whose stream reads are counted: the clock at each read, in a list."""
    state = MemoryState(3600)
    reads: list[float] = []
    read_feedback = state.read_feedback

    async def counting_read(after: str, count: int, block_ms: int):  # type: ignore[no-untyped-def]
        reads.append(time.monotonic())
        return await read_feedback(after, count, block_ms)

    state.read_feedback = counting_read  # type: ignore[method-assign]
    return state, reads


async def test_reads_are_spaced_by_the_read_interval() -> None:
    state, reads = counted_reads()
    loop = FeedbackLoop(state, OnlineLearner(ACTIONS, RETAIL_TABLES), Metrics(), block_ms=1000, read_interval=0.05)
    task = asyncio.create_task(loop.run())
    try:
        for b in range(30):  # a trickle lasting three read intervals
            await state.append_feedback([event(b)])
            await asyncio.sleep(0.005)
        deadline = time.monotonic() + 5
        while loop.learned < 30 and time.monotonic() < deadline:
            await asyncio.sleep(0.01)
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
    assert loop.learned == 30
    assert len(reads) <= 8  # unspaced, a trickle like this costs about one read per event
    gaps = [b - a for a, b in zip(reads, reads[1:], strict=False)]
    assert min(gaps) >= 0.045


async def test_a_deferred_publication_falls_due_without_a_stream_read() -> None:
    """Pairs of events: the second's read comes too soon after a publication, so that one
    waits; once the stream has been quiet for the interval a timer makes it, not a read
    cut short that comes back empty (one more Redis round trip per event at a trickle)."""
    state, reads = counted_reads()
    learner = CountingLearner()
    loop = FeedbackLoop(state, learner, Metrics(), block_ms=1000, publish_interval=0.05)
    task = asyncio.create_task(loop.run())
    pairs = 6
    try:
        await asyncio.sleep(0.01)
        for b in range(pairs):
            await state.append_feedback([event(2 * b)])
            await asyncio.sleep(0.005)
            await state.append_feedback([event(2 * b + 1)])
            sent = time.monotonic()
            while loop.learned < 2 * b + 2 and time.monotonic() - sent < 1.0:
                await asyncio.sleep(0.005)
            published = time.monotonic() - sent
            assert published < 0.5  # within the interval, not at the read's block of 1 s
            await asyncio.sleep(0.1)
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
    assert loop.learned == 2 * pairs
    assert learner.publications >= 2 * pairs - 1
    assert len(reads) <= 2 * pairs + 1  # one per event (cut short to publish: three per pair)


async def test_catch_up_folds_in_the_stream_up_to_its_end_without_counting_lag() -> None:
    """A starting replica replays history: learned, in the ledger-feeding order, and
    published, but not observed as learner lag (it was never waiting for this replica)."""
    state = MemoryState(3600)
    learner = CountingLearner()
    metrics = Metrics()
    loop = FeedbackLoop(state, learner, metrics, read_count=7, block_ms=1000)
    await state.append_feedback([event(i) for i in range(50)])
    bounds = await state.feedback_bounds()
    assert bounds is not None
    end = bounds[1]
    seen: list[int] = []
    assert await loop.catch_up(end, lambda n, _position: seen.append(n)) == 50
    assert loop.position == end and learner.updates == 50 and loop.learned == 50
    assert seen == [7, 14, 21, 28, 35, 42, 49, 50]  # one report per read
    assert learner.publications == 1
    assert metrics.registry.get_sample_value("nextbest_learner_lag_seconds_count") == 0.0
    assert await loop.catch_up(end) == 0  # already there: no read, no publication
    assert learner.publications == 1
