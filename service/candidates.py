"""Candidate selection: at most `max_scored` actions scored per decision, whatever the catalog.

Scoring every eligible action costs a decision in proportion to the catalog. When the
slot (or the caller's list) holds more than `max_scored` actions, this step takes the
candidates from cheap sources (`service/candidate_sources.py`), in this order, until it
has `max_scored` distinct ones allowed in the slot:

    basket     neighbours of the basket's items (co-purchase in the logged interactions)
    category   the best actions of the customer's strongest categories
    explore    a few of the actions the slot's ranking leaves out, and a few of those added
               to the catalog while serving, in turn
    slot_best  the best actions of the channel x placement x segment, by the offline model
    caller     the caller's own list, in its order (with a list only: the sources above
               propose from within it)

Basket, rules and contact eligibility then apply to the selected ones only, so a
decision's per-candidate work is bounded by the selection. The decision record names the
source of each candidate (`sources` in `Candidates`), so off-policy evaluation knows the
candidate set was a selection, and how it was made.

With no more eligible actions than `max_scored` the step is a no-op: the rows are
returned as they are and nothing is recorded (the 60-action demo decides as without it).
The rankings are computed off the decision path (`refresh`, in a thread) and swapped in
whole; a decision reads one reference.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import numpy as np

from features.encoding import ActionMatrix, CustomerVector, Encoder
from service.action_features import ActionFeatureCache
from service.candidate_sources import CoPurchase, CustomerSample, SlotRanking, file_stamp, rank_slots
from service.catalog import Catalog
from service.customer_features import CustomerFeatureService
from service.model import OnnxScorer

log = logging.getLogger(__name__)

#: source names, as decision records name them; index = the code in `Candidates.sources`
SOURCES = ("basket", "category", "explore", "slot_best", "caller")
BASKET, CATEGORY, EXPLORE, SLOT_BEST, CALLER = range(len(SOURCES))
#: per decision: at most this many basket neighbours
BASKET_NEIGHBOURS = 20
#: the customer's strongest categories, and the best actions taken from each
STRONG_CATEGORIES, PER_CATEGORY = 2, 10
#: actions taken in turn per decision among those a slot's ranking leaves out, and among
#: those of them the catalog added while serving
EXPLORE_DRAWS, NEW_DRAWS = 8, 4
_NAMES = np.array(SOURCES, dtype=object)
_DRAWS, _NEW_DRAWS = np.arange(EXPLORE_DRAWS), np.arange(NEW_DRAWS)
#: how often the background task checks whether the rankings are stale
CHECK_SECONDS = 1.0
#: a ranking made over the anonymous customer alone is made again this soon after
#: customers were seen (their segments get their own cells)
WARM_AFTER_SECONDS = 10.0


class Serving(Protocol):
    """What the rankings follow: the engine's catalog, model, action features, customers."""

    catalog: Catalog
    scorer: OnnxScorer
    actions: ActionFeatureCache
    customers: CustomerFeatureService


@dataclass(frozen=True)
class Candidates:
    """The selected rows, ascending (catalog order), and each one's source code."""

    rows: np.ndarray
    sources: np.ndarray

    def sources_of(self, rows: np.ndarray) -> list[str]:
        """Source names of `rows`, a subset of `self.rows` in the same order."""
        return _NAMES[self.sources[np.searchsorted(self.rows, rows)]].tolist()  # type: ignore[no-any-return]


class CandidateSelection:
    """The selection step and the rankings it reads (refreshed in the background)."""

    def __init__(self, max_scored: int, encoder: Encoder, slots: Mapping[str, Sequence[str]],
                 anonymous_context: Any, refresh_seconds: float,
                 co_purchase: Callable[[], CoPurchase] = lambda: CoPurchase({}),
                 segment_feature: str = "segment") -> None:
        """`co_purchase` reads the basket neighbours, at the first refresh and again at
        the first after their file changed (a catalog within the cap never reads them)."""
        self.max_scored = max_scored
        self.refresh_seconds = refresh_seconds
        self._encoder = encoder
        self._slots = slots
        self._context = anonymous_context
        self._segment = segment_feature
        self._affinity = encoder.action_affinity()
        self._read_pairs = co_purchase
        self._co_purchase: CoPurchase | None = None
        self._neighbours: dict[int, np.ndarray] = {}
        self.sample = CustomerSample()
        self.ranking: SlotRanking | None = None
        #: the first catalog row added while serving (None: before the first ranking)
        self._new_from: int | None = None
        self._stamp = np.zeros(0, dtype=np.int64)
        self._turn = 0
        self._catalog_version: str | None = None

    # -- the decision path ------------------------------------------------------------------
    def active(self, n_rows: int) -> bool:
        """Whether a decision with `n_rows` eligible actions selects (more than the cap)."""
        return 0 < self.max_scored < n_rows

    def select(self, rows: np.ndarray, allowed: np.ndarray, channel: str, placement: str,
               customer: CustomerVector, context: Any, basket_rows: np.ndarray,
               requested: bool) -> Candidates | None:
        """At most `max_scored` of `rows` (the slot's, or the caller's list within it;
        `allowed` their catalog-wide mask); None: the ranking is not computed yet (then
        every row is scored)."""
        ranking = self.ranking
        segment = customer.labels.get(self._segment, "")
        self.sample.add(channel, segment, customer, context)
        cell = ranking.cell(channel, placement, segment) if ranking is not None else None
        if ranking is None or cell is None:
            return None
        parts: list[np.ndarray] = []
        codes: list[int] = []
        if basket_rows.size and self._neighbours:
            near = [self._neighbours[r] for r in basket_rows.tolist() if r in self._neighbours]
            if near:
                parts.append(np.concatenate(near)[:BASKET_NEIGHBOURS])
                codes.append(BASKET)
        if self._affinity is not None and cell.by_code:
            strength = customer.affinities[self._affinity[0]][:-1]  # the last entry: unknown
            for code in np.argsort(-strength, kind="stable")[:STRONG_CATEGORIES].tolist():
                best = cell.by_code.get(code)
                if best is not None:
                    parts.append(best[:PER_CATEGORY])
                    codes.append(CATEGORY)
        pool = ranking.explore.get((channel, placement))
        if pool is not None and len(pool):  # in turn through what the ranking leaves out
            self._turn += EXPLORE_DRAWS
            new = ranking.new.get((channel, placement))
            if new is not None:
                parts.append(new[(self._turn + _NEW_DRAWS) % len(new)])
                codes.append(EXPLORE)
            parts.append(pool[(self._turn + _DRAWS) % len(pool)])
            codes.append(EXPLORE)
        parts.append(cell.rows)
        codes.append(SLOT_BEST)
        if requested:
            parts.append(rows)
            codes.append(CALLER)
        proposed = np.concatenate(parts)
        source = np.repeat(np.array(codes, dtype=np.int8), [len(p) for p in parts])
        keep = allowed[proposed]
        proposed, source = proposed[keep], source[keep]
        # each row's first proposal, in the sources' order, up to the cap: a scratch array
        # over the catalog takes the position of each row's first proposal
        if len(self._stamp) < len(allowed):
            self._stamp = np.zeros(len(allowed), dtype=np.int64)
        position = np.arange(len(proposed))
        self._stamp[proposed] = len(proposed)
        np.minimum.at(self._stamp, proposed, position)
        first = np.flatnonzero(self._stamp[proposed] == position)[:self.max_scored]
        chosen = proposed[first]
        order = np.argsort(chosen)
        return Candidates(chosen[order], source[first[order]])

    # -- off the path ------------------------------------------------------------------------
    def stale(self, catalog: Catalog, scorer: OnnxScorer, now: float) -> bool:
        r = self.ranking
        age = now - r.computed_at if r is not None else 0.0
        return (r is None or r.model != scorer.label or r.catalog != catalog.version
                or age >= self.refresh_seconds
                or (not r.warm and bool(self.sample) and age >= WARM_AFTER_SECONDS))

    def refresh(self, catalog: Catalog, matrix: ActionMatrix, scorer: OnnxScorer,
                anonymous: CustomerVector, features_at: float) -> None:
        """Rank the slots anew (CPU-bound: runs in a thread), then swap the ranking in."""
        if self._new_from is None:
            self._new_from = len(catalog)
        if self._co_purchase is None or self._co_purchase.stale():
            self._co_purchase = self._read_pairs()
            self._catalog_version = None  # its neighbours are mapped to rows again below
        if catalog.version != self._catalog_version:
            self._neighbours = self._co_purchase.rows(catalog)
            self._catalog_version = catalog.version
        codes = matrix.codes[self._affinity[1]] if self._affinity is not None else None
        depth = self.max_scored + 32  # margin for the actions the slot's mask refuses
        self.ranking = rank_slots(catalog, matrix, self._encoder, scorer, self._slots, self.sample,
                                  (anonymous, self._context), depth, PER_CATEGORY, self._new_from,
                                  codes, features_at, time.time())

    async def run(self, engine: Serving) -> None:
        """Keep the rankings fresh for `engine`'s catalog and model (and, every
        `refresh_seconds`, its action features and the customers seen)."""
        while True:
            await self.refresh_if_stale(engine)
            await asyncio.sleep(CHECK_SECONDS)

    async def refresh_if_stale(self, engine: Serving, now: float | None = None) -> bool:
        """Rank anew if the rankings are stale at `now` (default: the clock's)."""
        catalog, scorer, matrix = engine.catalog, engine.scorer, engine.actions.matrix
        now = time.time() if now is None else now
        if matrix is None or len(catalog) <= self.max_scored or not self.stale(catalog, scorer, now):
            return False
        anonymous = (await engine.customers.get(None)).vector
        started = time.monotonic()
        try:
            await asyncio.to_thread(self.refresh, catalog, matrix, scorer, anonymous,
                                    engine.actions.loaded_at)
        except Exception:  # keep serving the ranking there is; try again at the next check
            log.exception("ranking the candidate sources failed")
            return False
        log.info("candidate rankings refreshed", extra={
            "cells": len(self.ranking.cells) if self.ranking else 0,
            "seconds": round(time.monotonic() - started, 3)})
        return True


def co_purchase_of(path: Path, basket: str | None, action_key: str) -> CoPurchase:
    """The basket neighbours in the logged interactions at `path` (none: no pairs)."""
    stamp = file_stamp(path)
    try:
        return CoPurchase.from_log(path, basket, action_key)
    except Exception:  # a log we cannot read proposes nothing; the other sources still do
        log.exception("cannot read the co-purchase pairs from %s", path)
        return CoPurchase({}, path, stamp)  # read again once the file is written again
