"""Redis commands and round trips per decision and per feedback event, on one node and
on a Redis Cluster: `python -m load_tests.redis_cost [--decisions N] [--work DIR]`.

Starts a redis-server and a 3-master cluster on loopback, prepares the small demo data
in each (features materialized by Feast, a trained model promoted, the benchmark's
catalog where every action is allowed everywhere), and serves the app in-process
(`create_app`, the real runtime) against each in turn. Then, one request at a time:
N decisions of the benchmark's mixed traffic (`load_tests/traffic.py`), and one
feedback event for each decision that gets one in the mix, one request per event.

- commands and Redis CPU: `INFO commandstats` calls (commands a script runs counted
  too, next to the script's own call) and `INFO cpu` (the servers' user and system time,
  networking included), summed over every node, before and after each phase,
  less what the service sends on its own meanwhile (health checks, the feedback loop's
  blocking reads, watchers), measured in an idle window of the same length just before;
- round trips: client calls counted in the process (a command on the lean connection,
  a redis-py command, a pipeline's execute: each one call, one network round trip,
  whatever number of commands it carries; a redis-py cluster pipeline is counted once
  though it sends one pipeline per master it touches).

Prints a Markdown table; stops everything it started.
"""

from __future__ import annotations

import argparse
import shutil
import tempfile
import time
from collections import Counter
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import redis

from load_tests.bench import prepare_data, serve_from
from load_tests.processes import start_redis, start_redis_cluster
from load_tests.traffic import mixed_traffic

#: commands the measurement itself sends
OWN = {"info", "cluster|slots", "cluster|nodes", "cluster|info", "command", "command|docs",
       "client|setinfo"}

CALLS: Counter[str] = Counter()
#: the Redis servers' CPU time (user and system, microseconds) next to the calls in a Counter
CPU = " cpu"


def _counting(cls: Any, name: str, label: str) -> Callable[[], None]:
    original = getattr(cls, name)

    async def counted(self: Any, *args: Any, **kwargs: Any) -> Any:
        CALLS[label] += 1
        return await original(self, *args, **kwargs)

    setattr(cls, name, counted)
    return lambda: setattr(cls, name, original)


def count_client_calls() -> Callable[[], None]:
    """Count every call that goes to Redis from this process, by the client that sends it;
    returns what stops counting."""
    import redis.asyncio.client as rc
    import redis.asyncio.cluster as rcl

    from service.state.resp import RespConnection

    undo = [_counting(RespConnection, "execute_command", "lean"),
            _counting(rc.Redis, "execute_command", "redis-py"),
            _counting(rc.Pipeline, "execute", "redis-py pipeline"),
            _counting(rcl.RedisCluster, "execute_command", "redis-py cluster"),
            _counting(rcl.ClusterPipeline, "execute", "redis-py cluster pipeline")]

    def stop() -> None:
        for u in reversed(undo):
            u()

    return stop


def node_clients(url: str, cluster: bool) -> list[redis.Redis]:
    if not cluster:
        return [redis.Redis.from_url(url)]
    c = redis.RedisCluster.from_url(url)
    nodes = [redis.Redis(host=n.host, port=n.port) for n in c.get_primaries()]
    c.close()
    return nodes


def commandstats(nodes: list[redis.Redis]) -> Counter[str]:
    total: Counter[str] = Counter()
    for n in nodes:
        info: dict[str, Any] = n.info("commandstats")  # type: ignore[assignment]
        for name, stats in info.items():
            command = name.removeprefix("cmdstat_")
            if command not in OWN:
                total[command] += int(stats["calls"])
        cpu: dict[str, Any] = n.info("cpu")  # type: ignore[assignment]
        total[CPU] += round(1e6 * (float(cpu["used_cpu_user"]) + float(cpu["used_cpu_sys"])))
    return total


def prepare(work: Path, urls: dict[str, tuple[str, bool]]) -> tuple[Path, Path]:
    """The small demo data, a model, its features in every store and the model promoted."""
    data_dir, models_dir = work / "data", work / "models"
    version = prepare_data(data_dir, models_dir, small=True)
    for url, cluster in urls.values():
        serve_from(data_dir, models_dir, url, version, cluster=cluster)
    return data_dir, models_dir


@contextmanager
def phase(nodes: list[redis.Redis]) -> Iterator[Callable[[], tuple[Counter[str], Counter[str]]]]:
    """Commands (less the idle rate) and client calls of what runs in the block."""
    started, calls_before, stats_before = time.monotonic(), CALLS.copy(), commandstats(nodes)
    result: dict[str, tuple[Counter[str], Counter[str]]] = {}
    yield lambda: result["r"]
    seconds = time.monotonic() - started
    commands, calls = commandstats(nodes) - stats_before, CALLS - calls_before
    idle_calls, idle_stats = CALLS.copy(), commandstats(nodes)
    time.sleep(seconds)
    idle_commands, idle_client = commandstats(nodes) - idle_stats, CALLS - idle_calls
    result["r"] = (commands - idle_commands, calls - idle_client)


def measure(name: str, url: str, cluster: bool, data_dir: Path, models_dir: Path,
            decisions: int) -> dict[str, Any]:
    from fastapi.testclient import TestClient

    from service.app import create_app
    from service.settings import Settings

    settings = Settings(data_dir=data_dir, models_dir=models_dir, redis_url=url,
                        redis_cluster=cluster, epsilon=0.0, seed=1)
    items = mixed_traffic(data_dir, decisions)
    nodes = node_clients(url, cluster)
    out: dict[str, Any] = {"backend": name}
    with TestClient(create_app(settings)) as api:
        for item in items[:50]:  # warm: caches, connections, scripts
            api.post("/v1/decisions", content=item["body"])
        time.sleep(1.0)
        answered: list[tuple[dict[str, Any], dict[str, Any]]] = []
        with phase(nodes) as decided:
            for item in items:
                r = api.post("/v1/decisions", content=item["body"])
                r.raise_for_status()
                if item["fb"] is not None:
                    answered.append((r.json(), item["fb"]))
        events = 0
        with phase(nodes) as fed:
            for decision, fb in answered:
                shown = decision["actions"]
                if not shown:
                    continue
                action = shown[min(fb["rank"], len(shown) - 1)]["action_id"]
                event = {"decision_id": decision["decision_id"], "action_id": action,
                         "outcome": fb["outcome"]}
                if fb["value"] is not None:
                    event["value"] = fb["value"]
                api.post("/v1/feedback", json=event).raise_for_status()
                events += 1
            time.sleep(1.0)  # the feedback loop reads what was sent
    for node in nodes:
        node.close()
    for label, (commands, calls), n in (("decision", decided(), decisions),
                                        ("feedback event", fed(), events)):
        cpu_usec = commands.pop(CPU, 0)
        out[label] = {"n": n,
                      "commands": round(sum(commands.values()) / n, 2),
                      "round_trips": round(sum(calls.values()) / n, 2),
                      "redis_usec": round(cpu_usec / n, 1),
                      "by_command": {k: round(v / n, 2) for k, v in commands.most_common(8)
                                     if v / n >= 0.01}}
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--decisions", type=int, default=1000)
    parser.add_argument("--work", type=Path, default=None, help="a scratch directory (default: a temporary one)")
    args = parser.parse_args(argv)
    work = args.work or Path(tempfile.mkdtemp(prefix="redis-cost-"))
    (work / "redis").mkdir(parents=True, exist_ok=True)
    (work / "cluster").mkdir(parents=True, exist_ok=True)
    count_client_calls()
    single = start_redis(work / "redis")
    cluster = start_redis_cluster(work / "cluster")
    try:
        urls = {"one Redis": (single.url, False), "Redis Cluster (3 masters)": (cluster.url, True)}
        data_dir, models_dir = prepare(work, urls)
        rows = [measure(name, url, is_cluster, data_dir, models_dir, args.decisions)
                for name, (url, is_cluster) in urls.items()]
    finally:
        single.stop()
        cluster.stop()
        if args.work is None:
            shutil.rmtree(work, ignore_errors=True)
    print("| backend | per | requests | Redis commands | round trips | Redis CPU (µs, all nodes) | "
          "commands per request |")
    print("|---|---|---|---|---|---|---|")
    for row in rows:
        for label in ("decision", "feedback event"):
            m = row[label]
            top = ", ".join(f"{k} {v}" for k, v in m["by_command"].items())
            print(f"| {row['backend']} | {label} | {m['n']:,} | {m['commands']} | "
                  f"{m['round_trips']} | {m['redis_usec']} | {top} |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
