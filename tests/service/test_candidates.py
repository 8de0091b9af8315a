"""Candidate selection: the sources, the cap on scored actions, the record's sources, and
that a catalog within the cap decides exactly as without the step."""

from __future__ import annotations

import os
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from features.config import shipped_world
from features.encoding import CustomerVector, Encoder
from service.candidate_sources import Cell, CoPurchase, CustomerSample, SlotRanking
from service.candidates import SOURCES, CandidateSelection, co_purchase_of
from service.metrics import Metrics
from service.runtime import Runtime
from service.schemas import request_models
from tests.demo_fixtures import DemoDirs
from tests.service.conftest import make_settings
from training.world import World

pytestmark = pytest.mark.anyio
WORLD = shipped_world("retail")
REQUESTS = request_models(WORLD)
ENCODER = Encoder(WORLD)
LARGE = 400  # actions of the scaled world
CAP = 60


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


# -- the world, scaled -------------------------------------------------------------------------
def test_the_default_world_is_unchanged_and_a_scaled_one_only_adds_products() -> None:
    now = datetime(2026, 1, 1, tzinfo=UTC)
    default, scaled = World.build(7, 50, now), World.build(7, 50, now, n_actions=1000)
    assert len(default.actions) == 60 and "n_actions" not in default.to_json()
    assert len(scaled.actions) == 1000
    kinds = [a.kind for a in scaled.actions]
    assert kinds.count("offer") == 12 and kinds.count("service") == 6
    counts = [sum(a.category == c and a.kind == "product" for a in scaled.actions)
              for c in World.category_names]
    assert max(counts) - min(counts) <= 1
    assert len(World.from_json(scaled.to_json()).actions) == 1000
    with pytest.raises(ValueError, match="n_actions"):
        World.build(7, 50, now, n_actions=20)


# -- the selection step, on a ranking made by hand ----------------------------------------
def customer(segment: str, strongest: int) -> CustomerVector:
    table, _ = ENCODER.action_affinity() or (0, 0)
    affinities = [np.zeros(8, dtype=np.float32) for _ in range(table + 1)]
    affinities[table][strongest] = 1.0
    return CustomerVector(np.zeros(3, dtype=np.float32), tuple(affinities), {"segment": segment})


def selection(cap: int) -> CandidateSelection:
    s = CandidateSelection(cap, ENCODER, {}, None, 60.0)
    s.ranking = SlotRanking(
        cells={("web", "home", ""): Cell(np.arange(100, 130), {1: np.array([200, 201, 202])}),
               ("web", "home", "vip"): Cell(np.arange(300, 330), {})},
        explore={("web", "home"): np.array([400, 401])}, model="m", catalog="1",
        features_at=0.0, computed_at=0.0)
    s._neighbours = {5: np.array([500, 501, 100])}
    return s


def test_the_sources_propose_in_order_and_the_cap_keeps_the_first_proposed() -> None:
    s = selection(cap=10)
    allowed = np.ones(1000, dtype=bool)
    rows = np.arange(1000)
    chosen = s.select(rows, allowed, "web", "home", customer("new", 1), None, np.array([5]), False)
    assert chosen is not None and len(chosen.rows) == 10
    assert list(chosen.rows) == sorted(chosen.rows)
    by_row = dict(zip(chosen.rows.tolist(), chosen.sources_of(chosen.rows), strict=True))
    # basket neighbours first (100 too: proposed by the basket before the slot's best)
    assert by_row[500] == by_row[501] == by_row[100] == "basket"
    assert by_row[200] == by_row[201] == by_row[202] == "category"
    assert {by_row[r] for r in (400, 401) if r in by_row} <= {"explore"}
    assert sum(v == "slot_best" for v in by_row.values()) == 10 - len(
        [v for v in by_row.values() if v != "slot_best"])


def test_actions_new_to_the_catalog_are_proposed_by_every_decision_of_their_slot() -> None:
    from dataclasses import replace

    s = selection(cap=10)
    assert s.ranking is not None
    s.ranking = replace(s.ranking, new={("web", "home"): np.array([950, 951])})
    for _ in range(3):
        chosen = s.select(np.arange(1000), np.ones(1000, dtype=bool), "web", "home",
                          customer("new", 1), None, np.zeros(0, dtype=np.int64), False)
        assert chosen is not None
        sources = dict(zip(chosen.rows.tolist(), chosen.sources_of(chosen.rows), strict=True))
        assert sources[950] == sources[951] == "explore"


def test_the_segment_has_its_own_cell_and_the_mask_drops_what_the_slot_refuses() -> None:
    s = selection(cap=10)
    allowed = np.ones(1000, dtype=bool)
    allowed[300:305] = False
    chosen = s.select(np.arange(1000), allowed, "web", "home", customer("vip", 0), None,
                      np.zeros(0, dtype=np.int64), False)
    assert chosen is not None
    slot_best = chosen.rows[np.array(chosen.sources_of(chosen.rows)) == "slot_best"]
    assert set(slot_best.tolist()) <= set(range(305, 330))
    assert not set(chosen.rows.tolist()) & set(range(300, 305))


def test_a_caller_list_larger_than_the_cap_is_filled_in_its_own_order() -> None:
    s = selection(cap=8)
    requested = np.array([900, 901, 902, 903, 904, 905, 906, 907, 908, 101])
    allowed = np.zeros(1000, dtype=bool)
    allowed[requested] = True
    chosen = s.select(requested, allowed, "web", "home", customer("new", 3), None,
                      np.zeros(0, dtype=np.int64), True)
    assert chosen is not None and len(chosen.rows) == 8
    assert set(chosen.rows.tolist()) <= set(requested.tolist())
    sources = dict(zip(chosen.rows.tolist(), chosen.sources_of(chosen.rows), strict=True))
    assert sources[101] == "slot_best"  # the slot's best within the list come first
    assert [r for r, v in sources.items() if v == "caller"] == list(range(900, 907))


def test_no_ranking_yet_means_no_selection_and_the_cap_decides_when_it_is_active() -> None:
    s = CandidateSelection(10, ENCODER, {}, None, 60.0)
    assert not s.active(10) and s.active(11)
    assert CandidateSelection(0, ENCODER, {}, None, 60.0).active(10_000) is False
    assert s.select(np.arange(50), np.ones(50, dtype=bool), "web", "home", customer("new", 0),
                    None, np.zeros(0, dtype=np.int64), False) is None


def test_the_sample_keeps_the_newest_customers_per_channel_and_segment() -> None:
    sample = CustomerSample(size=2)
    for i in range(5):
        sample.add("web", "vip", customer("vip", i), i)
    sample.add("pos", "vip", customer("vip", 0), "pos")
    assert sorted(c for _, c in sample.of("web")["vip"]) == [3, 4]
    assert [c for _, c in sample.of("pos")["vip"]] == ["pos"]


def test_co_purchase_pairs_come_from_accepted_logged_interactions(tmp_path: Path) -> None:
    import pandas as pd

    path = tmp_path / "interactions.parquet"
    pd.DataFrame({"basket": ["a,b", "a", "a", "", "b"], "action_id": ["x", "x", "y", "z", "a"],
                  "label": [1, 1, 1, 1, 0]}).to_parquet(path)
    pairs = CoPurchase.from_log(path, "basket", "action_id").pairs
    assert pairs == {"a": ["x", "y"], "b": ["x"]}
    assert CoPurchase.from_log(tmp_path / "missing.parquet", "basket", "action_id").pairs == {}


def test_co_purchase_pairs_are_stale_once_their_file_is_written_or_appears(tmp_path: Path) -> None:
    import pandas as pd

    path = tmp_path / "interactions.parquet"
    missing = CoPurchase.from_log(path, "basket", "action_id")
    assert not missing.stale()
    pd.DataFrame({"basket": ["a"], "action_id": ["x"], "label": [1]}).to_parquet(path)
    assert missing.stale()
    read = CoPurchase.from_log(path, "basket", "action_id")
    assert read.pairs == {"a": ["x"]} and not read.stale()
    os.utime(path, ns=(path.stat().st_atime_ns, path.stat().st_mtime_ns + 1_000_000))
    assert read.stale()
    path.write_bytes(b"not parquet")
    unreadable = co_purchase_of(path, "basket", "action_id")
    assert unreadable.pairs == {} and not unreadable.stale()  # tried again once rewritten


# -- the service on a large catalog ------------------------------------------------------
@pytest.fixture(scope="module")
def large(demo: DemoDirs, tmp_path_factory: pytest.TempPathFactory) -> DemoDirs:
    """The retail world with `LARGE` actions, served by the demo's model."""
    from features.store import apply_and_materialize
    from training.demo_data import generate

    data_dir = tmp_path_factory.mktemp("large") / "var"
    generate(data_dir, seed=7, n_customers=200, n_interactions=4000, progress=False,
             n_actions=LARGE)
    apply_and_materialize(WORLD, data_dir, None)
    return DemoDirs(data_dir, demo.models_dir)


async def started(dirs: DemoDirs, **overrides: Any) -> Runtime:
    rt = Runtime.build(make_settings(dirs, **overrides), Metrics(), WORLD, REQUESTS)
    await rt.start()
    return rt


def bodies(n: int) -> list[dict[str, Any]]:
    rng = np.random.default_rng(5)
    slots = [("web", "home"), ("web", "cart"), ("app", "product"), ("email", "inbox")]
    out = []
    for i in range(n):
        channel, placement = slots[i % len(slots)]
        body: dict[str, Any] = {"channel": channel, "placement": placement, "limit": 3,
                                "customer_id": f"c{int(rng.integers(200)):05d}"}
        if placement == "cart":
            body["context"] = {"basket": [f"p{int(rng.integers(1, 300)):03d}"]}
        out.append(body)
    return out


@pytest.fixture
async def capped(large: DemoDirs) -> AsyncIterator[Runtime]:
    rt = await started(large, max_scored=CAP, epsilon=0.1)
    yield rt
    await rt.stop()


async def records(rt: Runtime, responses: list[dict[str, Any]]) -> list[dict[str, Any]]:
    found = await rt.decision_log.get_many([r["decision_id"] for r in responses])
    assert all(f is not None for f in found)
    return [f for f in found if f is not None]


async def test_the_cap_bounds_the_scored_actions_and_the_record_names_their_sources(
        capped: Runtime) -> None:
    engine = capped.engine
    requests = [REQUESTS.decision.model_validate(b) for b in bodies(40)]
    responses = [await engine.decide(r) for r in requests]
    logged = await records(capped, responses)
    seen: set[str] = set()
    for request, response, record in zip(requests, responses, logged, strict=True):
        eligible = len(engine.catalog.candidates(request.channel, request.placement))
        assert eligible > CAP and record["eligible"] == eligible
        assert 0 < len(record["candidates"]) <= CAP
        assert len(record["candidate_sources"]) == len(record["candidates"])
        assert set(record["candidate_sources"]) <= set(SOURCES)
        assert {a["action_id"] for a in response["actions"]} <= set(record["candidates"])
        seen |= set(record["candidate_sources"])
    assert {"slot_best", "category", "explore"} <= seen
    # explore proposes what the slot's ranking leaves out, a few at a time, in turn
    ranking = engine.selection.ranking  # type: ignore[union-attr]
    assert ranking is not None
    pool, top = ranking.explore[("web", "home")], ranking.cells[("web", "home", "")].rows
    assert not set(pool.tolist()) & set(top.tolist())
    assert len(pool) + len(top) == len(engine.catalog.candidates("web", "home"))


async def test_explain_lists_the_eligible_actions_the_selection_left_out(capped: Runtime) -> None:
    engine = capped.engine
    request = REQUESTS.decision.model_validate({**bodies(1)[0], "explain": True})
    response = await engine.decide(request)
    record = (await records(capped, [response]))[0]
    left_out = {r["action_id"] for r in response["removed"] if r["rule"] == "not_selected"}
    slot = {engine.catalog.ids[r] for r in engine.catalog.candidates(request.channel, request.placement)}
    scored = set(record["candidates"])
    assert len(left_out) == record["eligible"] - len(scored) > 0
    assert left_out | scored == slot and not left_out & scored


async def test_the_basket_neighbours_follow_a_rewritten_interactions_file(
        capped: Runtime, large: DemoDirs) -> None:
    import pandas as pd

    from features.config import interactions_path

    path = interactions_path(large.data_dir)
    original, stat = path.read_bytes(), path.stat()
    engine, selection = capped.engine, capped.engine.selection
    assert selection is not None
    item, neighbour = engine.catalog.ids[3], engine.catalog.ids[7]
    try:
        pd.DataFrame({"basket": [item], "action_id": [neighbour], "label": [1]}).to_parquet(path)
        os.utime(path, ns=(stat.st_atime_ns, stat.st_mtime_ns + 1_000_000))
        assert await selection.refresh_if_stale(engine, now=datetime.now(UTC).timestamp() + 3600)
        assert selection._neighbours == {3: np.array([7])}
    finally:
        path.write_bytes(original)
        os.utime(path, ns=(stat.st_atime_ns, stat.st_mtime_ns))


async def test_without_a_cap_every_eligible_action_is_scored(large: DemoDirs) -> None:
    rt = await started(large, max_scored=0)
    try:
        assert rt.engine.selection is None
        request = REQUESTS.decision.model_validate(bodies(1)[0])
        record = (await records(rt, [await rt.engine.decide(request)]))[0]
        assert len(record["candidates"]) == len(rt.engine.catalog.candidates("web", "home"))
        assert "candidate_sources" not in record
    finally:
        await rt.stop()


async def test_a_catalog_within_the_cap_decides_as_without_the_step(demo: DemoDirs) -> None:
    requests = [REQUESTS.decision.model_validate(b) for b in bodies(30)]
    answers = []
    for cap in (200, 0):
        rt = await started(demo, max_scored=cap, epsilon=0.2)
        try:
            if cap:
                assert rt.engine.selection is not None and rt.engine.selection.ranking is None
            responses = [await rt.engine.decide(r) for r in requests]
            logged = await records(rt, responses)
            assert not any("candidate_sources" in r for r in logged)
            answers.append(([{k: v for k, v in r.items() if k != "decision_id"} for r in responses],
                            [r["candidates"] for r in logged]))
        finally:
            await rt.stop()
    assert answers[0] == answers[1]


async def test_the_rankings_follow_the_model_the_catalog_and_the_customers_seen(
        capped: Runtime) -> None:
    from dataclasses import replace

    engine, selection = capped.engine, capped.engine.selection
    assert selection is not None and selection.ranking is not None
    ranking = selection.ranking
    # start-up ranks over the anonymous customer: one cell per slot larger than the cap
    assert not ranking.warm and {segment for _, _, segment in ranking.cells} == {""}
    assert all(len(engine.catalog.candidates(c, p)) > CAP for c, p, _ in ranking.cells)
    now = ranking.computed_at
    assert not selection.stale(engine.catalog, engine.scorer, now)
    for b in bodies(8):
        await engine.decide(REQUESTS.decision.model_validate(b))
    assert not selection.stale(engine.catalog, engine.scorer, now + 1)
    assert selection.stale(engine.catalog, engine.scorer, now + 11)  # customers seen: again
    assert not await selection.refresh_if_stale(engine, now + 1)
    assert await selection.refresh_if_stale(engine, now + 11)
    warm = selection.ranking
    assert warm is not None and warm.warm and len({s for _, _, s in warm.cells}) > 1
    assert not selection.stale(engine.catalog, engine.scorer, warm.computed_at + 11)
    for changed in (replace(warm, model="another:1"), replace(warm, catalog="another")):
        selection.ranking = changed
        assert selection.stale(engine.catalog, engine.scorer, warm.computed_at)
    selection.ranking = warm
    assert selection.stale(engine.catalog, engine.scorer,
                           warm.computed_at + selection.refresh_seconds)
