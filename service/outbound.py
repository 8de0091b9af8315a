"""`nextbest decide-batch`: the next best action for every customer of a file, at once.

For email and the other outbound channels: read the customers (CSV or Parquet, a
`customer_id` column and optionally one column per context field of the world), send
them to a running service's `POST /v1/decisions/batch` through the Python client in
requests of `batch_size`, and write what it decided (CSV, Parquet or JSON Lines). The
service decides each customer exactly as `POST /v1/decisions` would, with the same
rules, caps and budgets, and logs each decision, so the campaign's feedback (impression
when sent, accept when taken) joins its `decision_id`.

Output: one row per shown action (`customer_id`, `decision_id`, `rank`, `action_id`,
`score`, `propensity`, `value`, `explored`, `catalog`), a customer the service could not
decide for, or for whom no action is eligible, as one row with `rank` 0 and `error`
saying why. JSON Lines writes one line per customer with the whole decision instead.
"""

from __future__ import annotations

import json
import math
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from features.config import World
from service.client import SyncNextbestClient
from service.schemas import BatchResult

FORMATS = (".csv", ".parquet", ".jsonl")
COLUMNS = ("customer_id", "decision_id", "rank", "action_id", "score", "propensity", "value",
           "explored", "catalog", "error")


class OutboundError(ValueError):
    """A file the command cannot read or write as asked (the message says why)."""


@dataclass(frozen=True)
class Outcome:
    customers: int
    decided: int
    failed: int
    seconds: float

    @property
    def per_second(self) -> float:
        return self.customers / self.seconds if self.seconds > 0 else math.inf


def _suffix(path: Path, what: str, allowed: Sequence[str]) -> str:
    suffix = path.suffix.lower()
    if suffix not in allowed:
        raise OutboundError(f"{what} {path}: expected a {', '.join(allowed)} file")
    return suffix


def read_customers(path: Path, world: World, channel: str, placement: str | None,
                   limit: int) -> list[dict[str, Any]]:
    """One decision request per row; unknown columns are refused by name."""
    import pandas as pd

    suffix = _suffix(path, "--customers", (".csv", ".parquet"))
    if not path.is_file():
        raise OutboundError(f"--customers {path} does not exist")
    frame = (pd.read_csv(path, dtype={"customer_id": str}, keep_default_na=False)
             if suffix == ".csv" else pd.read_parquet(path))
    if "customer_id" not in frame.columns:
        raise OutboundError(f"--customers {path} has no customer_id column "
                            f"(columns: {', '.join(map(str, frame.columns))})")
    unknown = [c for c in frame.columns if c != "customer_id" and c not in world.context]
    if unknown:
        raise OutboundError(f"--customers {path}: {', '.join(map(repr, unknown))} is not a "
                            f"context field of the {world.world} world (its fields: "
                            f"{', '.join(world.context) or 'none'})")
    base: dict[str, Any] = {"channel": channel, "limit": limit}
    if placement is not None:
        base["placement"] = placement
    fields = [c for c in frame.columns if c != "customer_id"]
    requests = []
    for row in frame.to_dict("records"):
        context = {f: v for f in fields
                   if (v := _context_value(row[f], world.context[f].type)) is not None}
        requests.append({**base, "customer_id": str(row["customer_id"]),
                         **({"context": context} if context else {})})
    return requests


def _context_value(value: Any, kind: str) -> Any:
    if value is None or (isinstance(value, float) and math.isnan(value)) or value == "":
        return None
    if kind == "id_list":
        if isinstance(value, str):
            return [v for v in value.replace(",", "|").split("|") if v]
        return [str(v) for v in value]
    if kind == "number":
        return float(value)
    return str(value)


def decide(client: SyncNextbestClient, requests: list[dict[str, Any]], batch_size: int,
           progress: bool) -> tuple[list[BatchResult], Outcome]:
    from tqdm import tqdm

    results: list[BatchResult] = []
    started = time.perf_counter()
    with tqdm(total=len(requests), desc="decide-batch", unit="customer", disable=not progress) as bar:
        for start in range(0, len(requests), batch_size):
            part = client.decide_batch(requests[start:start + batch_size], batch_size=batch_size)
            results += [r.model_copy(update={"index": r.index + start}) for r in part.results]
            bar.update(len(part.results))
    seconds = time.perf_counter() - started
    failed = sum(r.status != 200 for r in results)
    return results, Outcome(len(requests), len(results) - failed, failed, seconds)


def rows(requests: Sequence[dict[str, Any]], results: Sequence[BatchResult]) -> Iterator[dict[str, Any]]:
    for request, result in zip(requests, results, strict=True):
        customer = request["customer_id"]
        d = result.decision
        if d is None or not d.actions:
            error = (f"{result.status} {result.error}: {result.message}" if d is None
                     else "no eligible action")
            yield {"customer_id": customer, "decision_id": d.decision_id if d else None,
                   "rank": 0, "action_id": None, "score": None, "propensity": None,
                   "value": None, "explored": None,
                   "catalog": d.model_versions.get("catalog") if d else None, "error": error}
            continue
        for a in d.actions:
            yield {"customer_id": customer, "decision_id": d.decision_id, "rank": a.rank,
                   "action_id": a.action_id, "score": a.score, "propensity": a.propensity,
                   "value": a.value, "explored": a.explored,
                   "catalog": d.model_versions.get("catalog"), "error": None}


def write(path: Path, requests: Sequence[dict[str, Any]], results: Sequence[BatchResult]) -> int:
    """Write the decisions to `path` (its suffix is the format); the rows written."""
    suffix = _suffix(path, "--out", FORMATS)
    path.parent.mkdir(parents=True, exist_ok=True)
    if suffix == ".jsonl":
        with path.open("w") as out:
            for request, result in zip(requests, results, strict=True):
                line = {"customer_id": request["customer_id"],
                        **result.model_dump(mode="json", exclude_none=True)}
                out.write(json.dumps(line) + "\n")
        return len(results)
    import pandas as pd

    frame = pd.DataFrame(list(rows(requests, results)), columns=list(COLUMNS))
    frame["rank"] = frame["rank"].astype("int64")
    if suffix == ".csv":
        frame.to_csv(path, index=False)
    else:
        frame.to_parquet(path, index=False)
    return len(frame)
