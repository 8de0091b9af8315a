"""Many decisions at once, for outbound channels (an email campaign's customers).

Each request is decided by the same engine as `POST /v1/decisions`, one by one through
`DecisionEngine.decide`: the same rules, contact policies, caps and budgets (checked and
taken atomically per decision, so a batch can never spend more of a budget than it
holds) and the same decision log, so every decision has its own id and its feedback
joins. `CONCURRENCY` decisions are in flight at once, so their customer reads from the
online store overlap, and each worker yields to the event loop after every decision: a
batch shares the replica with live traffic instead of holding the loop for its whole
length.
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from typing import Any

from service.engine import DecisionEngine
from service.schemas import DecisionRequestBase

#: decisions of one batch in flight at once
CONCURRENCY = 16


async def decide_many(engine: DecisionEngine,
                      requests: Sequence[DecisionRequestBase | BaseException]
                      ) -> list[dict[str, Any] | BaseException]:
    """The decision of each request, in order, or the exception it raised (a request
    given as an exception, one that did not validate, stays as it is)."""
    out: list[dict[str, Any] | BaseException] = list(requests)  # type: ignore[arg-type]
    todo = iter([i for i, r in enumerate(requests) if not isinstance(r, BaseException)])

    async def worker() -> None:
        for i in todo:
            request = requests[i]
            assert not isinstance(request, BaseException)
            try:
                out[i] = await engine.decide(request)
            except Exception as exc:  # answered per request; the others go on
                out[i] = exc
            await asyncio.sleep(0)

    await asyncio.gather(*(worker() for _ in range(CONCURRENCY)))
    return out
