"""`nextbest bench --against DIR`: this checkout's nextbest side by side with another's.

Two benchmark runs on a shared machine differ by more than most code changes do: the
machine's speed moves from minute to minute. This starts both versions at once, on the
same Redis and demo data, and loads them in turn, `--rounds` times each at
`--target-rate` for `--duration` seconds, so that both see the same machine. Each round
records the server's CPU time per request (decisions and feedback), p50 and p99; the
report gives the medians and the ratio of CPU per request (this / other). DIR is
another checkout of nextbest (e.g. `git worktree add /tmp/before HEAD~3`); both run
with this checkout's Python environment. Both servers read the one feedback stream, as
two replicas would, so both learn from both.
"""

from __future__ import annotations

import json
import statistics
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from load_tests.processes import Server, free_port, nextbest_args, start_http


@dataclass(frozen=True)
class Round:
    cpu_ms: float
    p50_ms: float
    p99_ms: float
    errors: int
    dropped: int
    loadgen_cpu_ms: float
    machine_busy: float | None


def start_pair(here: Path, other: Path, work: Path, env: dict[str, str],
               this_env: dict[str, str] | None = None) -> dict[str, Server]:
    """nextbest from this checkout (`this`) and from `other`, each importing its own code;
    `this_env`: settings for this checkout's server only (e.g. a catalog with rules)."""
    servers: dict[str, Server] = {}
    for name, root, extra in (("this", here, this_env or {}), ("other", other, {})):
        port = free_port()
        servers[name] = start_http(
            name, nextbest_args(port), {**env, **extra, "PYTHONPATH": str(root)}, port,
            work / f"compare-{name}.log", cwd=root,
        )
    return servers


def run_rounds(servers: dict[str, Server], rounds: int,
               load: Callable[[Server], dict[str, Any]],
               settle: Callable[[Server], None]) -> dict[str, list[Round]]:
    """`load` each server in turn, `rounds` times; `settle` lets it drain after each load."""
    measured: dict[str, list[Round]] = {name: [] for name in servers}
    for i in range(rounds):
        for name, server in servers.items():
            cpu_before = server.cpu_seconds()
            point = load(server)
            served = max(1, point["decisions"] + point["feedback"])
            r = Round(round(server.cpu_ms_per_request(cpu_before, served), 4),
                      point["p50_ms"], point["p99_ms"], point["errors"], point["dropped"],
                      point["loadgen_cpu_ms_per_request"], point["machine_busy"])
            measured[name].append(r)
            print(f"round {i + 1} {name}: server CPU {r.cpu_ms} ms/request, p50 {r.p50_ms} "
                  f"p99 {r.p99_ms} ms, errors {r.errors}, dropped {r.dropped}, "
                  f"load generator CPU {r.loadgen_cpu_ms} ms/request, machine busy {r.machine_busy}",
                  flush=True)
            settle(server)
    return measured


def medians(rounds: dict[str, list[Round]]) -> dict[str, dict[str, Any]]:
    """Per server: its rounds, the medians of CPU per request, p50 and p99, and the errors."""
    return {
        name: {
            "rounds": [r.__dict__ for r in rs],
            "median_cpu_ms": round(statistics.median(r.cpu_ms for r in rs), 4),
            "median_p50_ms": round(statistics.median(r.p50_ms for r in rs), 3),
            "median_p99_ms": round(statistics.median(r.p99_ms for r in rs), 3),
            "median_loadgen_cpu_ms": round(statistics.median(r.loadgen_cpu_ms for r in rs), 4),
            "median_machine_busy": _median_or_none([r.machine_busy for r in rs]),
            "errors": sum(r.errors for r in rs),
            "dropped": sum(r.dropped for r in rs),
        }
        for name, rs in rounds.items()
    }


def _median_or_none(values: list[float | None]) -> float | None:
    known = [v for v in values if v is not None]
    return round(statistics.median(known), 3) if known else None


def summarize(rounds: dict[str, list[Round]], numerator: str = "this",
              denominator: str = "other") -> dict[str, Any]:
    """The medians, and `cpu_ratio`: median CPU per request of `numerator` / `denominator`."""
    out: dict[str, Any] = medians(rounds)
    out["cpu_ratio"] = round(
        out[numerator]["median_cpu_ms"] / out[denominator]["median_cpu_ms"], 4)
    return out


def markdown(result: dict[str, Any]) -> str:
    return _table(
        f"# nextbest compared side by side ({result['when']})",
        f"this: `{result['this_dir']}`; other: `{result['other_dir']}`; ", "code",
        ("this", "other"), result, "")


def gate_markdown(result: dict[str, Any]) -> str:
    limit = result.get("max_cpu_ratio")
    verdict = "" if limit is None else (
        f" (limit {limit}: {'over' if result['cpu_ratio'] > limit else 'within'})")
    table = _table(f"# nextbest against the bare endpoint ({result['when']})", "", "server",
                   ("nextbest", "bare"), result, verdict)
    scale = result.get("scale")
    if scale:
        table += (f"\nCustomers drawn {scale['customer_draw']}; Redis: {scale['redis_keys']} keys, "
                  f"{scale['redis_used_memory_mb']} MB; customer cache: hit rate "
                  f"{scale['cache_hit_rate']}, {scale['cache_entries']} entries; nextbest RSS "
                  f"{scale['nextbest_rss_mb']} MB\n")
    startup = (scale or {}).get("startup")
    if startup:
        table += (f"\nStart-up with {startup['events']:,} feedback events of "
                  f"{startup['customers']:,} customers: full replay "
                  f"{startup['full_replay']['ready_s']} s; snapshot {startup['snapshot']['bytes']:,} "
                  f"bytes written in {startup['snapshot']['write_s']} s; from the snapshot "
                  f"{startup['from_snapshot']['ready_s']} s\n")
    return table


def _table(title: str, intro: str, column: str, names: tuple[str, str], result: dict[str, Any],
           verdict: str) -> str:
    first, second = names
    lines = [
        title,
        "",
        f"{intro}{len(result[first]['rounds'])} rounds each of {result['duration_s']} s at "
        f"{result['rate']} req/s from {result['generator']}, loaded in turn.",
        "",
        f"| {column} | median server CPU ms/request | median p50 ms | median p99 ms | errors | dropped |",
        "|---|---|---|---|---|---|",
    ]
    for name in names:
        r = result[name]
        lines.append(f"| {name} | {r['median_cpu_ms']} | {r['median_p50_ms']} | "
                     f"{r['median_p99_ms']} | {r['errors']} | {r['dropped']} |")
    lines += ["", f"CPU per request, {first} / {second}: **{result['cpu_ratio']}**{verdict}", ""]
    return "\n".join(lines)


def write(result: dict[str, Any], out: Path, stem: str = "compare") -> str:
    """`<stem>.json` and `<stem>.md` (the table, returned) in `out`."""
    (out / f"{stem}.json").write_text(json.dumps(result, indent=2))
    table = gate_markdown(result) if stem == "gate" else markdown(result)
    (out / f"{stem}.md").write_text(table)
    return table
