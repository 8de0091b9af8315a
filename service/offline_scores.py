"""Offline scores, remembered: the model is not asked twice for the same input row.

The offline model is a pure function of its input row, and a decision's rows are one
shared part (the customer's encoded features, the request context, the basket) joined
with each candidate action's features. Customers come back within seconds (page after
page of one visit, a refresh, the till after the web) with the same features (cached for
NEXTBEST_CUSTOMER_CACHE_SECONDS) and often the same context, so the logits of the
actions already scored for that shared part are kept, and only the other candidates
are encoded and scored.

The key is the content of the shared part, not the customer id: equal inputs hit
(anonymous callers share theirs), and a customer whose features changed misses. A
refreshed action matrix clears everything. Each entry holds one logit per catalog action
(NaN: not scored yet), in an LRU bounded by NEXTBEST_SCORE_CACHE_MB (0: off). The online
correction is never remembered: the engine adds it afterwards, from the learner's
current weights.
"""

from __future__ import annotations

from collections import OrderedDict

import numpy as np

from features.encoding import ActionMatrix, CustomerVector, encode_candidates
from service.metrics import Metrics
from service.model import OnnxScorer


class OfflineScores:
    def __init__(self, scorer: OnnxScorer, memory_mb: float, n_actions: int, metrics: Metrics) -> None:
        self.scorer = scorer
        self.max_entries = int(memory_mb * 2**20) // (8 * max(n_actions, 1))
        self._memo: OrderedDict[bytes, np.ndarray] = OrderedDict()
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
        known = self._memo.get(key)
        if known is None:
            known = np.full(len(actions.ids), np.nan)
            self._memo[key] = known
            if len(self._memo) > self.max_entries:
                self._memo.popitem(last=False)
        else:
            self._memo.move_to_end(key)
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
