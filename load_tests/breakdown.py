"""`nextbest bench --breakdown`: where a request's CPU goes, and how much of it p99 allows.

Two series of servers on the same machine, loaded in turn (`--rounds` times,
`--duration` seconds each, at `--target-rate`, with the benchmark's mixed traffic):

- calibration: the bare endpoint as is, and with N us of busy CPU added to every request
  (`BARE_SPIN_US`, for N in `SPINS_US`): how p99 grows with the CPU a request costs, on
  this machine, in this run;
- layers: nextbest cut short at each layer (`layers_app.py`: http, parse, customer,
  score, decide, record), then the full service: what each layer adds to the CPU per
  request.

The report reads a CPU budget off the calibration: the CPU per request at which the bare
endpoint's p99 reaches `P99_RATIO` times its own (linear between calibration points).
Within one run these figures are comparable; across runs the machine moves them.

The layer servers run without the contact ledger and the feedback loop (they never
accept feedback, and reading the full service's stream would load the machine while
others are measured), so the full service's row adds those too.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

from load_tests import compare, report
from load_tests.layers_app import LAYERS
from load_tests.processes import Server, free_port, nextbest_args, start_http, uvicorn_args

SPINS_US = (100, 200, 300, 500)
P99_RATIO = 1.5
#: what each nextbest row adds to the one above it
ADDS = {
    "http": "its HTTP path and a fixed answer",
    "parse": "request validation",
    "customer": "the customer's features (cache; Redis on a miss)",
    "score": "one ONNX Runtime call",
    "decide": "the rest of the decision (no contact ledger)",
    "record": "the decision record (log to Redis)",
    "nextbest": "feedback accepted and learned, contact ledger",
}


def start_servers(work: Path, nextbest_env: dict[str, str],
                  spins: tuple[int, ...] = SPINS_US) -> dict[str, Server]:
    """The calibration series (bare, bare + N us) and the layer series, in report order."""
    servers: dict[str, Server] = {}
    for us in (0, *spins):
        name = "bare" if us == 0 else f"bare +{us} us"
        port = free_port()
        servers[name] = start_http(name, uvicorn_args("load_tests.bare_app:app", port),
                                   {"BARE_SPIN_US": str(us)}, port,
                                   work / f"breakdown-bare-{us}.log")
    quiet = {**nextbest_env, "NEXTBEST_ONLINE_LEARNING": "false", "NEXTBEST_CONTACT_POLICY": "false"}
    for layer in LAYERS:
        port = free_port()
        servers[layer] = start_http(
            layer, [*uvicorn_args("load_tests.layers_app:create_app", port), "--factory"],
            {**quiet, "NEXTBEST_BENCH_LAYER": layer}, port, work / f"breakdown-{layer}.log",
        )
    port = free_port()
    servers["nextbest"] = start_http("nextbest", nextbest_args(port), nextbest_env, port,
                                     work / "breakdown-nextbest.log")
    return servers


def cpu_budget(rows: dict[str, dict[str, Any]], ratio: float = P99_RATIO) -> float | None:
    """CPU ms/request at which the calibration's p99 reaches `ratio` x bare's (None: not reached).

    Linear between the first two calibration points (by CPU) that bracket the ratio.
    """
    base = rows["bare"]["median_p99_ms"]
    points = sorted((r["median_cpu_ms"], r["median_p99_ms"] / base)
                    for name, r in rows.items() if name.startswith("bare"))
    for (c0, r0), (c1, r1) in zip(points, points[1:], strict=False):
        if r0 <= ratio <= r1 and r1 > r0:
            return round(c0 + (ratio - r0) * (c1 - c0) / (r1 - r0), 4)
    return None


def markdown(result: dict[str, Any]) -> str:
    rows = result["servers"]
    base = rows["bare"]["median_p99_ms"]
    lines = [
        f"# nextbest cost breakdown ({result['when']})",
        "",
        f"{result['rounds']} rounds of {result['duration_s']} s at {result['rate']} req/s per "
        f"server from {result['generator']}, loaded in turn; medians. `added`: CPU over the row "
        "above (nextbest rows).",
        "",
        ("| server | adds | CPU ms/request | added | p50 ms | p99 ms | p99 / bare | errors | dropped "
         "| load generator CPU ms/request | machine busy |"),
        "|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    previous = None
    for name, r in rows.items():
        added = "-"
        if name in ADDS:  # a nextbest layer: what it adds to the one above
            if previous is not None:
                added = f"{r['median_cpu_ms'] - previous:+.3f}"
            previous = r["median_cpu_ms"]
        lines.append(
            f"| {name} | {ADDS.get(name, 'calibration')} | {r['median_cpu_ms']:.3f} | {added} | "
            f"{r['median_p50_ms']:.2f} | {r['median_p99_ms']:.2f} | {r['median_p99_ms'] / base:.2f} | "
            f"{r['errors']} | {r['dropped']} | {r['median_loadgen_cpu_ms']:.3f} | "
            f"{report.share(r['median_machine_busy'])} |"
        )
    budget = result["cpu_budget_ms"]
    lines.append("")
    if budget is None:
        lines.append(f"The calibration's p99 did not cross {P99_RATIO}x bare's between its points.")
    else:
        lines.append(
            f"CPU budget: the bare endpoint's p99 reaches {P99_RATIO}x its own at about "
            f"**{budget:.3f} ms** of CPU per request ({budget - rows['bare']['median_cpu_ms']:+.3f} "
            f"over bare); nextbest costs **{rows['nextbest']['median_cpu_ms']:.3f} ms**."
        )
    lines.append("")
    return "\n".join(lines)


def run(servers: dict[str, Server], rounds: int, rate: int, duration: float,
        load: Callable[[Server], dict[str, Any]], settle: Callable[[Server], None],
        when: str, out: Path, generator: str) -> dict[str, Any]:
    """Load every server in turn, `rounds` times; write breakdown.json and breakdown.md."""
    measured = compare.run_rounds(servers, rounds, load=load, settle=settle)
    rows = compare.medians(measured)
    result = {"when": when, "rate": rate, "duration_s": duration, "rounds": rounds,
              "generator": generator, "servers": rows, "cpu_budget_ms": cpu_budget(rows)}
    (out / "breakdown.json").write_text(json.dumps(result, indent=2))
    (out / "breakdown.md").write_text(markdown(result))
    return result
