"""The benchmark's outputs: the markdown tables, the p50/p99-vs-rate plot, the goals
check, and a summary of a py-spy profile (collapsed stacks)."""

from __future__ import annotations

import re
from collections import Counter
from pathlib import Path
from typing import Any

TARGETS = ("bare", "naive", "nextbest")
COLORS = {"bare": "tab:gray", "naive": "tab:red", "nextbest": "tab:blue"}


def _ms(value: float | None) -> str:
    return "-" if value is None else f"{value:.2f}"


def _cpu(value: float | None) -> str:
    return "-" if value is None else f"{value:.3f}"


def share(value: float | None) -> str:
    """A fraction as a percentage ("-" when unknown)."""
    return "-" if value is None else f"{value:.0%}"


#: nextbest's CPU per request over the bare endpoint's at the target rate (issue 26)
CPU_RATIO_GOAL = 1.6


def goals(results: dict[str, Any]) -> list[dict[str, Any]]:
    """The issue's targets, each with what was measured and whether it is met."""
    t = results["targets"]
    out: list[dict[str, Any]] = []
    rate = results["target_rate"]

    def add(goal: str, measured: str, met: bool | None) -> None:
        out.append({"goal": goal, "measured": measured, "met": met})

    nb, bare, naive = t.get("nextbest"), t.get("bare"), t.get("naive")
    if nb and bare:
        p_nb = next((p for p in nb["sweep"] if p["rate"] == rate), None)
        p_bare = next((p for p in bare["sweep"] if p["rate"] == rate), None)
        cpu_nb, cpu_bare = ((p or {}).get("cpu_ms_per_request") for p in (p_nb, p_bare))
        if cpu_nb and cpu_bare:
            # the figure that counts; in one run of its own (alternating rounds): --gate
            ratio = cpu_nb / cpu_bare
            add(f"nextbest CPU per request at {rate} req/s <= {CPU_RATIO_GOAL}x bare's "
                "(this sweep point; alternating rounds: `--gate`)",
                f"{cpu_nb:.3f} / {cpu_bare:.3f} ms = x{ratio:.2f}", ratio <= CPU_RATIO_GOAL)
        if p_nb and p_bare and p_bare["p99_ms"]:
            # reported, not gated: on a shared machine p99 moves with the machine
            ratio = p_nb["p99_ms"] / p_bare["p99_ms"]
            add(f"nextbest p99 at {rate} req/s against bare p99 (reported, not gated)",
                f"{p_nb['p99_ms']:.2f} / {p_bare['p99_ms']:.2f} ms = x{ratio:.2f}", None)
        if p_nb:
            add(f"nextbest at {rate} req/s: zero errors, zero dropped",
                f"errors {p_nb['errors']}, dropped {p_nb['dropped']}",
                p_nb["errors"] == 0 and p_nb["dropped"] == 0)
        ms_nb, ms_bare = nb["max_sustainable"]["rate"], bare["max_sustainable"]["rate"]
        if ms_bare:
            add("max sustainable rate >= 60% of bare",
                f"{ms_nb} / {ms_bare} req/s = {ms_nb / ms_bare:.0%}", ms_nb >= 0.6 * ms_bare)
    if nb and naive:
        ms_nb, ms_naive = nb["max_sustainable"]["rate"], naive["max_sustainable"]["rate"]
        if ms_naive:
            add(">= 5x the naive baseline's max sustainable rate",
                f"{ms_nb} / {ms_naive} req/s = x{ms_nb / ms_naive:.1f}", ms_nb >= 5 * ms_naive)
    learner = results.get("learner")
    if learner:
        eps = learner["throughput"]["events_per_s"]
        add(">= 5,000 feedback events/s learned by one learner", f"{eps:,} events/s", eps >= 5000)
        lag = learner["lag"]
        if lag["lag_p99_s"] is not None:
            # met only at the rate asked for: a producer that fell behind measured less
            sent_per_s = lag["sent_per_s"]
            add(f"learner lag p99 < 1 s (in-process, {lag['rate']:,} events/s)",
                f"{lag['lag_p99_s'] * 1000:.1f} ms at {sent_per_s:,} events/s sent",
                lag["lag_p99_s"] < 1.0 and sent_per_s >= 0.95 * lag["rate"])
    if nb and nb.get("learner_lag_http"):
        h = nb["learner_lag_http"]
        if h["p99_le_s"] is not None:
            add(f"learner lag p99 < 1 s (service, during the {rate} req/s run)",
                f"<= {h['p99_le_s']} s (histogram bucket, {h['count']} events)",
                h["p99_le_s"] <= 1.0)
    if nb:
        add("start-up to ready <= 5 s", f"{nb['ready_seconds']:.2f} s", nb["ready_seconds"] <= 5.0)
    startup = results.get("startup")
    if startup:
        ready = startup["from_snapshot"]["ready_s"]
        add(f"start-up to ready <= 5 s with {startup['events']:,} events in the stream "
            f"(from a snapshot, {startup['tail']:,} after it; in-process)", f"{ready:.2f} s",
            ready <= 5.0)
    return out


def markdown(results: dict[str, Any]) -> str:
    mix = results["traffic"]
    generator = results.get("generator", "k6")  # runs before --generator were all k6
    lines = [
        f"# nextbest bench — {results['when']}",
        "",
        (f"Traffic: {mix['online_share']:.0%} online shop (web/app, 50 candidates), "
         f"{mix['pos_share']:.0%} POS (offers, store + basket), {mix['anonymous_share']:.0%} "
         f"anonymous, {mix['distinct_customers']} distinct known customers (Zipf), "
         f"{mix['feedback_share']:.0%} of decisions followed by feedback, at constant "
         f"arrival rates from {generator}, {results['duration_s']} s per sweep point, "
         f"{results['search_duration_s']} s per search step; one uvicorn worker each; features "
         "from Redis. "
         f"Sustainable = decision p99 < {results['p99_limit_ms']:.0f} ms, no errors, no drops. "
         f"{generator} runs on the same two cores as the server: `load generator CPU` is what "
         "it spent per request, `machine busy` the share of both cores busy during the point."),
        "",
        "## Rate sweep",
        "",
        ("| target | rate req/s | achieved req/s | p50 ms | p99 ms | feedback p99 ms | errors "
         "| dropped | server CPU ms/request | load generator CPU ms/request | machine busy |"),
        "|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for name in TARGETS:
        r = results["targets"].get(name)
        if not r:
            continue
        for p in r["sweep"]:
            lines.append(
                f"| {name} | {p['rate']} | {p['achieved']} | {_ms(p['p50_ms'])} | {_ms(p['p99_ms'])} | "
                f"{_ms(p['feedback_p99_ms'])} | {p['errors']} | {p['dropped']} | "
                f"{_cpu(p.get('cpu_ms_per_request'))} | {_cpu(p.get('loadgen_cpu_ms_per_request'))} | "
                f"{share(p.get('machine_busy'))} |"
            )
        for s in r.get("skipped", []):
            lines.append(f"| {name} | {s} | skipped: saturated at a lower rate | | | | | | | | |")
    loops = [(p["rate"], p["loop_lag"]) for p in results["targets"].get("nextbest", {})
             .get("sweep", []) if p.get("loop_lag")]
    if loops:
        lines += ["", "nextbest's event loop lag (`nextbest_event_loop_lag_seconds` buckets: how "
                  "long a request arriving at a random moment waits before the server reads it), "
                  "per sweep point: " + ", ".join(
                      f"{rate} req/s p50 <= {lag['p50_le_s']} s, p99 <= {lag['p99_le_s']} s"
                      for rate, lag in loops)]
    lines += [
        "",
        "## Capacity, start-up, memory",
        "",
        "| target | max sustainable req/s | its p99 ms | wrk closed-loop req/s | wrk p99 ms | ready s | RSS MB |",
        "|---|---|---|---|---|---|---|",
    ]
    for name in TARGETS:
        r = results["targets"].get(name)
        if not r:
            continue
        ms, wrk = r["max_sustainable"], r.get("wrk") or {}
        lines.append(
            f"| {name} | {ms['rate']} | {_ms(ms.get('p99_ms'))} | {wrk.get('rate', '-')} | "
            f"{_ms(wrk.get('p99_ms'))} | {r['ready_seconds']:.2f} | {r['rss_mb']:.0f} |"
        )
    learner = results.get("learner")
    if learner:
        th, lag = learner["throughput"], learner["lag"]
        lines += [
            "",
            "## Feedback learning (one learner, real Redis stream)",
            "",
            f"- throughput: {th['events']:,} queued events learned in {th['seconds']} s = "
            f"**{th['events_per_s']:,} events/s**",
            f"- lag at {lag['rate']:,} events/s for {lag['seconds']} s ({lag['sent']:,} sent, "
            f"{lag['learned']:,} learned): "
            f"p50 {lag['lag_p50_s'] * 1000:.1f} ms, **p99 {lag['lag_p99_s'] * 1000:.1f} ms**, "
            f"max {lag['lag_max_s'] * 1000:.1f} ms; publish() {lag['publish_ms']} ms",
        ]
    nb = results["targets"].get("nextbest", {})
    if nb.get("learner_lag_http"):
        h = nb["learner_lag_http"]
        lines.append(f"- in the service during the {results['target_rate']} req/s run: "
                     f"{h['count']} events, lag p50 <= {h['p50_le_s']} s, p99 <= {h['p99_le_s']} s "
                     "(nextbest_learner_lag_seconds buckets)")
    lags = [(p["rate"], p["learner_lag"]) for p in nb.get("sweep", []) if p.get("learner_lag")]
    if lags:
        lines.append("- service learner lag p99 per sweep point: " + ", ".join(
            f"{rate} req/s <= {lag['p99_le_s']} s" for rate, lag in lags))
    startup = results.get("startup")
    if startup:
        full, snap, restored = startup["full_replay"], startup["snapshot"], startup["from_snapshot"]
        lines += [
            "",
            f"## Start-up with {startup['events']:,} feedback events in the stream "
            f"({startup['customers']:,} customers; in-process, `Runtime.start`)",
            "",
            f"- full replay: ready in **{full['ready_s']} s** ({full['replayed']:,} events, "
            f"{full['events_per_s']:,} events/s)",
            f"- snapshot: {snap['bytes'] / 1e6:.1f} MB, written in {snap['write_s'] * 1000:.0f} ms",
            f"- from the snapshot with {startup['tail']:,} events after it: ready in "
            f"**{restored['ready_s']} s** ({restored['replayed']:,} events replayed)",
        ]
    lines += ["", "## Goals", "", "| goal | measured | met |", "|---|---|---|"]
    for g in results["goals"]:
        met = {True: "yes", False: "**no**", None: "-"}[g["met"]]
        lines.append(f"| {g['goal']} | {g['measured']} | {met} |")
    prof = results.get("profile")
    if prof:
        lines += ["", f"## Profile of nextbest at {prof['rate']} req/s ({prof['samples']} samples, "
                  f"py-spy, busy time only)", "", "| self time by package | % |", "|---|---|"]
        lines += [f"| {k} | {v} |" for k, v in prof["by_package"][:12]]
        lines += ["", "| function (self) | % |", "|---|---|"]
        lines += [f"| `{k}` | {v} |" for k, v in prof["self"][:15]]
        lines += ["", "| function (inclusive) | % |", "|---|---|"]
        lines += [f"| `{k}` | {v} |" for k, v in prof["inclusive"][:30]]
    return "\n".join(lines) + "\n"


def series(target: dict[str, Any]) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """A target's sweep points in rate order (drawn as lines) and its search steps (a
    bisection, not a series: drawn as markers, never joined to the sweep)."""
    return sorted(target["sweep"], key=lambda p: p["rate"]), list(target.get("search", []))


def plot(results: dict[str, Any], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(8, 5))
    for name in TARGETS:
        r = results["targets"].get(name)
        if not r or not r["sweep"]:
            continue
        sweep, search = series(r)
        rates = [p["rate"] for p in sweep]
        ax.plot(rates, [p["p99_ms"] for p in sweep], "o-", color=COLORS[name], label=f"{name} p99")
        ax.plot(rates, [p["p50_ms"] for p in sweep], "s--", color=COLORS[name], alpha=0.6,
                label=f"{name} p50")
        if search:
            ax.plot([p["rate"] for p in search], [p["p99_ms"] for p in search], "x",
                    color=COLORS[name], markersize=8, linestyle="none",
                    label=f"{name} p99, search steps")
    ax.axhline(results["p99_limit_ms"], color="black", lw=0.8, ls=":", label="sustainable limit")
    ax.set_yscale("log")
    ax.set_xlabel(f"offered rate, decisions/s ({results.get('generator', 'k6')} constant arrival rate; "
                  "sweep: lines; search steps: crosses)")
    ax.set_ylabel("decision latency, ms")
    ax.set_title("nextbest vs bare FastAPI vs naive Feast-SDK baseline (one worker, 2 cores)")
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


_FRAME = re.compile(r"^(?P<func>.*?) \((?P<file>[^()]*?)(?::\d+)?\)$")
_PACKAGES = (
    ("service/", "nextbest service/"), ("features/", "nextbest features/"),
    ("onnxruntime", "onnxruntime"), ("redis/", "redis-py"), ("prometheus_client", "prometheus_client"),
    ("pydantic", "pydantic"), ("fastapi", "fastapi"), ("starlette", "starlette"),
    ("uvicorn", "uvicorn"), ("httptools", "httptools"), ("numpy", "numpy"), ("orjson", "orjson"),
    ("asyncio", "asyncio"), ("uuid", "uuid"), ("json", "json"), ("river", "river"),
)


def _package(file: str) -> str:
    for needle, name in _PACKAGES:
        if needle in file:
            return name
    return file.rsplit("/", 1)[-1] or "?"


_GENERIC = ("<frozen runpy>", "service/cli.py", "uvicorn/main.py", "uvicorn/server.py",
            "uvicorn/_compat.py", "asyncio/runners.py")


_IDLE_WORKER = "_worker (concurrent/futures/thread.py"


def summarize_profile(collapsed: Path) -> dict[str, Any]:
    """Self time by package and function, inclusive time by function (process entry
    frames left out), in % of busy samples.

    py-spy counts a thread-pool worker blocked on its empty queue as busy (the snapshot
    writer's thread, idle between snapshots): a stack whose innermost frame is the pool's
    `_worker` itself is that wait, and counts as `idle_worker_samples`, not as busy.
    """
    inclusive: Counter[str] = Counter()
    by_package: Counter[str] = Counter()
    by_function: Counter[str] = Counter()
    total = idle_workers = 0
    for line in collapsed.read_text().splitlines():
        stack, _, count_text = line.rpartition(" ")
        if not stack or not count_text.isdigit():
            continue
        count = int(count_text)
        frames = [f for f in stack.split(";") if f]
        if frames and frames[-1].strip().startswith(_IDLE_WORKER):
            idle_workers += count
            continue
        total += count
        names = []
        for f in frames:
            m = _FRAME.match(f.strip())
            func, file = (m["func"], m["file"]) if m else (f, "")
            names.append((f"{func} ({file.rsplit('site-packages/', 1)[-1]})", file))
        if names:
            by_package[_package(names[-1][1])] += count
            by_function[names[-1][0]] += count
        for name in dict.fromkeys(n for n, f in names if not f.startswith(_GENERIC)):
            inclusive[name] += count

    def pct(c: Counter[str]) -> list[tuple[str, float]]:
        return [(k, round(100 * v / total, 1)) for k, v in c.most_common(40)] if total else []

    return {"samples": total, "idle_worker_samples": idle_workers,
            "by_package": pct(by_package), "self": pct(by_function), "inclusive": pct(inclusive)}
