"""What the catalog's size costs a decision, in process: `python -m load_tests.catalog_bench`.

For each catalog size (`--sizes`, default 60, 1,000 and 10,000 actions) the retail world
is generated with that many actions (`training/demo_data.py`, `n_actions`; the world's
own channel and placement rules), its features materialized into SQLite, and one model,
trained on the 60-action world, serves all of them (its inputs do not depend on the
catalog's size). Each size runs twice: `off` scores every eligible action
(NEXTBEST_MAX_SCORED=0), `on` at most `--max-scored` (candidate selection,
`service/candidates.py`). The requests are the benchmark's mix (`load_tests/traffic.py`)
without the caller's candidate lists, so the whole slot is eligible.

Each case is a service runtime deciding the requests in a tight loop (no HTTP, no JSON
parse), in turn with the others, `--rounds` times; reported per case: the median CPU per
decision of `DecisionEngine.decide`, the median over the rounds of its ratio to the
smallest catalog with selection off in the same round (the machine's pace moves
between rounds more than the code's cost does), the
p99 of one decision's wall time, the median number of actions scored, and the CPU of
one refresh of the selection's rankings (off the decision path, in the background).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import time
from pathlib import Path
from typing import Any

import numpy as np

from load_tests.bench import BASKET_CELLS
from load_tests.traffic import mixed_traffic
from service.metrics import Metrics
from service.runtime import Runtime
from service.settings import Settings

#: customers of the generated worlds, and logged interactions (at most, `BASKET_CELLS`)
CUSTOMERS, INTERACTIONS = 2000, 60_000


def prepare(root: Path, n_actions: int) -> Path:
    """The data dir of the retail world with `n_actions` (generated where missing)."""
    from features.config import shipped_world
    from features.store import apply_and_materialize
    from training.demo_data import generate

    data_dir = root / f"a{n_actions}" / "var"
    if not (data_dir / "feast" / "online.db").is_file():
        interactions = min(INTERACTIONS, BASKET_CELLS // n_actions)
        generate(data_dir, seed=7, n_customers=CUSTOMERS, n_interactions=interactions,
                 progress=False, n_actions=n_actions)
        apply_and_materialize(shipped_world("retail"), data_dir, None)
    return data_dir


def prepare_model(root: Path, data_dir: Path) -> Path:
    """A champion trained on `data_dir` (the 60-action world), where missing."""
    from features.config import shipped_world
    from service.manifest import versions
    from service.registry import registry_for
    from training.train import train

    models_dir = root / "models"
    if not versions(models_dir, "nextbest-ranker"):
        _, manifest = train(data_dir, models_dir, progress=False)
        with registry_for(Settings(data_dir=data_dir, models_dir=models_dir),
                                shipped_world("retail")) as registry:
            registry.promote(manifest.version)
    return models_dir


def requests_of(data_dir: Path, n: int) -> list[dict[str, Any]]:
    """The benchmark's mix without candidate lists (every action of the slot eligible)."""
    return [json.loads(item["body"]) for item in mixed_traffic(data_dir, n, candidates=False)]


async def measure(settings: Settings, bodies: list[dict[str, Any]]) -> dict[str, float]:
    """CPU seconds per decision, p99 wall seconds of one, median actions scored."""
    runtime = Runtime.build(settings, Metrics())
    await runtime.start()
    try:
        engine = runtime.engine
        model = runtime.requests.decision
        requests = [model.model_validate(b) for b in bodies]
        for r in requests[:200]:  # warm the customer cache and the contact views
            await engine.decide(r)
        walls = np.empty(len(requests))
        scored: list[int] = []
        started = time.process_time()
        for i, r in enumerate(requests):
            t = time.perf_counter()
            await engine.decide(r)
            walls[i] = time.perf_counter() - t
        cpu = (time.process_time() - started) / len(requests)
        for r in requests[:200]:  # how many each scored, outside the timed loop
            response = await engine.decide(r)
            record = (await runtime.decision_log.get_many([response["decision_id"]]))[0]
            scored.append(len(record["candidates"]) if record else 0)
        refresh = float("nan")  # one refresh of the rankings, over the customers seen
        selection = engine.selection
        if selection is not None and selection.ranking is not None and engine.actions.matrix is not None:
            anonymous = (await engine.customers.get(None)).vector
            started = time.process_time()
            selection.refresh(engine.catalog, engine.actions.matrix, engine.scorer, anonymous, 0.0)
            refresh = time.process_time() - started
        return {"cpu": cpu, "p99": float(np.percentile(walls, 99)),
                "scored": float(statistics.median(scored)), "refresh": refresh}
    finally:
        await runtime.stop()


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--root", type=Path, default=Path("var/catalog-bench"),
                        help="where the generated worlds and the model are kept (reused)")
    parser.add_argument("--sizes", default="60,1000,10000")
    parser.add_argument("--max-scored", type=int, default=200)
    parser.add_argument("--requests", type=int, default=2000)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args(argv)
    sizes = [int(s) for s in args.sizes.split(",")]
    dirs = {n: prepare(args.root, n) for n in sizes}
    models_dir = prepare_model(args.root, prepare(args.root, 60))
    bodies = {n: requests_of(dirs[n], args.requests) for n in sizes}
    cases = {(n, mode): Settings(data_dir=dirs[n], models_dir=models_dir, log_level="WARNING",  # type: ignore[call-arg]
                                 snapshot_seconds=0, seed=1,
                                 max_scored=args.max_scored if mode == "on" else 0)
             for n in sizes for mode in ("off", "on")}
    results: dict[tuple[int, str], list[dict[str, float]]] = {case: [] for case in cases}
    for _ in range(args.rounds):
        for case, settings in cases.items():
            results[case].append(asyncio.run(measure(settings, bodies[case[0]])))
    base_runs = results[(sizes[0], "off")]
    print(f"{'actions':>8} {'selection':>9} {'CPU/decision':>13} {'vs ' + str(sizes[0]):>8} "
          f"{'p99':>9} {'scored':>7} {'refresh CPU':>12}")
    for (n, mode), runs in results.items():
        cpu = statistics.median(r["cpu"] for r in runs)
        # the ratio to the smallest catalog in the same round, median over the rounds
        ratio = statistics.median(r["cpu"] / b["cpu"] for r, b in zip(runs, base_runs, strict=True))
        p99 = statistics.median(r["p99"] for r in runs)
        scored = statistics.median(r["scored"] for r in runs)
        refresh = statistics.median(r["refresh"] for r in runs)
        print(f"{n:>8} {mode:>9} {cpu * 1e6:>10.0f} us {ratio:>7.2f}x {p99 * 1e3:>6.2f} ms "
              f"{scored:>7.0f} {'-' if refresh != refresh else f'{refresh:.3f} s':>12}")


if __name__ == "__main__":
    main()
