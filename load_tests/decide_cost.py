"""A decision's own CPU, in process, against another checkout: `python -m load_tests.decide_cost`.

`DecisionEngine.decide` over the benchmark's mixed requests (`load_tests/traffic.py`) in a
tight loop, no HTTP, no JSON parse, embedded state: the CPU time per decision (least of
`--passes` passes) and the time of each stage from the service's own stage histogram.
With `--against DIR`, this checkout and DIR are measured in turn, each in a fresh process
with its checkout first on the path, `--rounds` times, and the medians printed side by
side (the other checkout needs only `service/` and `load_tests/traffic.py`: this file is
run from here). `--gc-off` measures with the garbage collector disabled, whose passes
otherwise fall in whichever stage crosses its allocation threshold.
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parents[1]


async def measure(data_dir: Path, models_dir: Path, requests: int, passes: int,
                  gc_off: bool = False) -> dict[str, float]:
    """Microseconds per decision: `cpu` (process time) and each stage's time."""
    from load_tests.traffic import mixed_traffic
    from service.metrics import Metrics
    from service.runtime import Runtime
    from service.settings import Settings

    bodies = [json.loads(item["body"]) for item in mixed_traffic(data_dir, requests)]
    metrics = Metrics()
    runtime = Runtime.build(Settings(data_dir=data_dir, models_dir=models_dir, log_level="WARNING",
                                     snapshot_seconds=0), metrics)
    await runtime.start()
    try:
        decisions = [runtime.requests.decision.model_validate(b) for b in bodies]
        for r in decisions[:200]:  # warm the customer cache and the views
            await runtime.engine.decide(r)
        least: dict[str, float] = {}
        if gc_off:
            gc.disable()
        sums: dict[str, float] = metrics.stage_latency._sums
        for _ in range(passes):
            before = dict(sums)
            started = time.process_time()
            for r in decisions:
                await runtime.engine.decide(r)
            took = {"cpu": time.process_time() - started,
                    **{stage: sums[stage] - before[stage] for stage in sums}}
            for name, seconds in took.items():
                least[name] = min(least.get(name, float("inf")), seconds / len(decisions) * 1e6)
        return least
    finally:
        gc.enable()
        await runtime.stop()


def _in_process_of(checkout: Path, args: argparse.Namespace) -> dict[str, float]:
    command = [sys.executable, str(HERE / "load_tests" / "decide_cost.py"), "--once",
               "--data-dir", str(args.data_dir), "--models-dir", str(args.models_dir),
               "--requests", str(args.requests), "--passes", str(args.passes),
               *(["--gc-off"] if args.gc_off else [])]
    env = {**os.environ, "PYTHONPATH": str(checkout), "PYTHONHASHSEED": "0"}
    done = subprocess.run(command, cwd=checkout, env=env, capture_output=True, text=True, check=True)
    result: dict[str, float] = json.loads(done.stdout.strip().splitlines()[-1])
    return result


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--data-dir", type=Path, default=Path("var"))
    parser.add_argument("--models-dir", type=Path, default=Path("models"))
    parser.add_argument("--requests", type=int, default=3000)
    parser.add_argument("--passes", type=int, default=5)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--against", type=Path, help="another checkout, measured in turn")
    parser.add_argument("--gc-off", action="store_true", help="with the garbage collector disabled")
    parser.add_argument("--once", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    args.data_dir, args.models_dir = args.data_dir.resolve(), args.models_dir.resolve()
    if args.once:
        print(json.dumps(asyncio.run(measure(args.data_dir, args.models_dir, args.requests, args.passes,
                                             args.gc_off))))
        return
    checkouts = {"this": HERE, **({"other": args.against.resolve()} if args.against else {})}
    runs: dict[str, list[dict[str, float]]] = {name: [] for name in checkouts}
    for i in range(args.rounds):
        for name, checkout in checkouts.items():
            runs[name].append(_in_process_of(checkout, args))
            print(f"round {i + 1} {name}: {runs[name][-1]['cpu']:.1f} us CPU/decision", file=sys.stderr)
    print(table(runs))


def table(runs: dict[str, list[dict[str, Any]]]) -> str:
    """Medians per decision, in microseconds, one column per checkout (and this / other)."""
    names = list(runs)
    rows = [f"| us per decision | {' | '.join(names)} |" + (" this / other |" if len(names) == 2 else ""),
            "|---|" + "---|" * (len(names) + (len(names) == 2))]
    for key in runs[names[0]][0]:
        medians = [statistics.median(r[key] for r in runs[n]) for n in names]
        ratio = f" {medians[0] / medians[1]:.3f} |" if len(names) == 2 and medians[1] else ""
        label = "CPU (process time)" if key == "cpu" else f"stage {key}"
        rows.append(f"| {label} | {' | '.join(f'{m:.1f}' for m in medians)} |{ratio}")
    return "\n".join(rows)


if __name__ == "__main__":
    main()
