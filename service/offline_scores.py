"""Offline scores, remembered: the model is not asked twice for the same input row.

The offline model is a pure function of its input row, and a decision's rows are one
shared part (the customer's encoded features, the request context, the basket) joined
with each candidate action's features. Customers come back within seconds (page after
page of one visit, a refresh, the till after the web) with the same features (cached for
NEXTBEST_CUSTOMER_CACHE_SECONDS) and often the same context, so the logits of the
actions already scored for that shared part are kept, and only the other candidates
are encoded and scored.

The key is the content of the shared part, not the customer id: equal inputs hit
(anonymous callers share theirs), and a customer whose features changed misses. An
entry lives as long as a customer's features are cached (`ttl_seconds`, set from
NEXTBEST_CUSTOMER_CACHE_SECONDS), so remembering covers one visit, not a whole day of
identical requests. A refreshed action matrix clears everything. Each entry holds one
logit per catalog action (NaN: not scored yet), in an LRU bounded by
NEXTBEST_SCORE_CACHE_MB (0: off). The online correction is never remembered: the engine
adds it afterwards, from the learner's current weights.
"""

from __future__ import annotations

import time
from collections import OrderedDict
from collections.abc import Callable

import numpy as np

from features.encoding import ActionMatrix, CustomerVector, encode_candidates
from service.metrics import Metrics
from service.model import OnnxScorer


class OfflineScores:
    def __init__(self, scorer: OnnxScorer, memory_mb: float, ttl_seconds: float, n_actions: int,
                 metrics: Metrics, clock: Callable[[], float] = time.monotonic) -> None:
        self.scorer = scorer
        self.max_entries = int(memory_mb * 2**20) // (8 * max(n_actions, 1)) if ttl_seconds > 0 else 0
        self.ttl_seconds = ttl_seconds
        self._clock = clock
        # input key -> (monotonic expiry, one logit per catalog action, NaN if not scored)
        self._memo: OrderedDict[bytes, tuple[float, np.ndarray]] = OrderedDict()
        self._actions: ActionMatrix | None = None
        self._counted = metrics.offline_scores

    def __len__(self) -> int:
        return len(self._memo)

    def logits(self, customer: CustomerVector, context_block: np.ndarray, channel: str,
               actions: ActionMatrix, rows: np.ndarray, basket_rows: np.ndarray) -> np.ndarray:
        """The offline logit of each candidate action at `rows`, float64."""
        if not len(rows):
            return np.zeros(0)
        if self.max_entries <= 0:
            self._counted.inc("model", amount=len(rows))
            return self._score(customer, context_block, channel, actions, rows, basket_rows)
        if actions is not self._actions:
            self._memo.clear()
            self._actions = actions
        key = b"".join((customer.block.tobytes(), customer.category_affinity.tobytes(),
                        customer.channel_affinity.tobytes(), context_block.tobytes(),
                        basket_rows.tobytes()))
        now = self._clock()
        entry = self._memo.get(key)
        if entry is not None and entry[0] > now:
            known = entry[1]
            self._memo.move_to_end(key)
        else:
            known = np.full(len(actions.ids), np.nan)
            self._memo[key] = (now + self.ttl_seconds, known)
            self._memo.move_to_end(key)
            if len(self._memo) > self.max_entries:
                self._memo.popitem(last=False)
        z = known[rows]
        missing = np.isnan(z)
        n_missing = int(np.count_nonzero(missing))
        if n_missing:
            todo = rows[missing] if n_missing < len(rows) else rows
            fresh = self._score(customer, context_block, channel, actions, todo, basket_rows)
            z[missing] = fresh
            known[todo] = fresh
            self._counted.inc("model", amount=n_missing)
        if n_missing < len(rows):
            self._counted.inc("memo", amount=len(rows) - n_missing)
        return z

    def _score(self, customer: CustomerVector, context_block: np.ndarray, channel: str,
               actions: ActionMatrix, rows: np.ndarray, basket_rows: np.ndarray) -> np.ndarray:
        x = encode_candidates(customer, context_block, channel, actions, rows, basket_rows)
        return self.scorer.logits(x)
