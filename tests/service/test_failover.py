"""A master of a real Redis Cluster stops under traffic and its replica takes over.

A cluster of three masters with one replica each (its own, not the suite's shared one),
one `nextbest serve` process on it, clients deciding and sending feedback all along.
The master holding the feedback stream is stopped (SIGTERM: Redis 7 lets its replica
catch up before it exits); the cluster promotes the replica after its node timeout.
Decisions keep being answered (degraded while the slots move), feedback is answered 202
(spooled, then written) or 503, never 500, and every acknowledged event is in the
stream afterwards. The test prints how long decisions were degraded.
"""

from __future__ import annotations

import os
import signal
import threading
import time
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import orjson
import pytest
import redis

from load_tests.processes import (
    RedisCluster,
    free_port,
    nextbest_args,
    nextbest_env,
    start_http,
    start_redis_cluster,
)
from tests.demo_fixtures import DemoDirs, materialize_into

ROOT = Path(__file__).resolve().parents[2]
#: the cluster's node timeout is 2 s (load_tests/processes.py): failure detection,
#: the replica's election and the clients' new slot map fit well within this
RECOVERY_SECONDS = 20.0


@pytest.fixture(scope="module")
def replicated_cluster(tmp_path_factory: pytest.TempPathFactory,
                       demo: DemoDirs) -> Iterator[RedisCluster]:
    cluster = start_redis_cluster(tmp_path_factory.mktemp("failover"), replicas=1,
                                  maxmemory_mb=128)
    try:
        materialize_into(demo, cluster.url, cluster=True)
        yield cluster
    finally:
        cluster.stop()


@dataclass
class Traffic:
    """Clients deciding and sending feedback on each decision, until stopped."""

    url: str
    answers: list[tuple[float, str, int, tuple[str, ...]]] = field(default_factory=list)
    acknowledged: list[str] = field(default_factory=list)
    readiness: list[tuple[int, str]] = field(default_factory=list)
    stop: threading.Event = field(default_factory=threading.Event)

    def probe(self) -> None:
        """What Kubernetes' readiness probe would see, polled often."""
        with httpx.Client(base_url=self.url, timeout=10) as http:
            while not self.stop.is_set():
                r = http.get("/readyz")
                self.readiness.append((r.status_code, "" if r.status_code == 200 else r.text))
                time.sleep(0.1)

    def client(self, worker: int) -> None:
        with httpx.Client(base_url=self.url, timeout=10) as http:
            n = 0
            while not self.stop.is_set():
                n += 1
                started = time.monotonic()
                r = http.post("/v1/decisions", json={
                    "customer_id": f"c{(worker * 131 + n) % 400:05d}", "channel": "web",
                    "placement": "home", "limit": 3})
                body: dict[str, Any] = r.json() if r.status_code == 200 else {}
                self.answers.append((started, "decision", r.status_code,
                                     tuple(body.get("degraded", ()))))
                if not body.get("actions"):
                    continue
                event = {"decision_id": body["decision_id"], "outcome": "impression",
                         "action_id": body["actions"][0]["action_id"], "event_id": f"{worker}-{n}"}
                f = http.post("/v1/feedback", json={"events": [event]})
                self.answers.append((started, "feedback", f.status_code, ()))
                if f.status_code == 202:
                    self.acknowledged.append(event["event_id"])


def promotion(port: int, slot: int, old_master: int, since: float) -> float:
    """When (monotonic) the node on `port` first sees `slot` served by a master other
    than `old_master` and the cluster ok."""
    node = redis.Redis(port=port, decode_responses=True)
    try:
        while time.monotonic() - since < RECOVERY_SECONDS:
            ranges: Any = node.execute_command("CLUSTER", "SLOTS")
            owner = next(int(r[2][1]) for r in ranges if int(r[0]) <= slot <= int(r[1]))
            info: Any = node.execute_command("CLUSTER", "INFO")
            if owner != old_master and "cluster_state:ok" in str(info):
                return time.monotonic()
            time.sleep(0.05)
    finally:
        node.close()
    raise AssertionError(f"no replica took over slot {slot} within {RECOVERY_SECONDS:.0f} s")


def test_a_master_fails_over_under_traffic(replicated_cluster: RedisCluster, demo: DemoDirs,
                                           tmp_path: Path) -> None:
    cluster = replicated_cluster
    port = free_port()
    env = {**nextbest_env(cluster.url, demo.data_dir, demo.models_dir, cluster=True),
           "NEXTBEST_EPSILON": "0", "PYTHONPATH": str(ROOT),
           # degraded by the failover, not by a busy test machine's slow reads
           "NEXTBEST_REDIS_TIMEOUT_SECONDS": "0.5"}
    server = start_http("nextbest", nextbest_args(port), env, port, tmp_path / "serve.log", cwd=ROOT)
    client: Any = redis.RedisCluster.from_url(cluster.url)
    node = client.get_node_from_key("nb:feedback")
    slot = client.keyslot("nb:feedback")
    client.close()
    victim = next(s for s in cluster.masters if s.url.endswith(f":{node.port}/0"))
    survivor_port = int(next(s for s in cluster.masters if s is not victim).url.split(":")[-1]
                        .split("/")[0])
    traffic = Traffic(server.url)
    workers = [threading.Thread(target=traffic.client, args=(w,)) for w in range(3)]
    workers.append(threading.Thread(target=traffic.probe))
    try:
        for w in workers:
            w.start()
        time.sleep(2.0)
        stopped = time.monotonic()
        os.kill(victim.proc.pid, signal.SIGTERM)
        promoted = promotion(survivor_port, slot, node.port, stopped) - stopped
        time.sleep(3.0)  # traffic on the promoted replica
    finally:
        traffic.stop.set()
        for w in workers:
            w.join()
        server_log = (tmp_path / "serve.log").read_text()
        server.stop()

    after_stop = [a for a in traffic.answers if a[0] >= stopped]
    outcomes = Counter((kind, status) for _, kind, status, _ in after_stop)
    assert outcomes[("decision", 200)] > 0 and outcomes[("feedback", 202)] > 0, outcomes
    assert {status for kind, status in outcomes if kind == "decision"} == {200}, outcomes
    assert {status for kind, status in outcomes if kind == "feedback"} <= {202, 503}, outcomes
    assert "unhandled error" not in server_log
    # a failover is no reason to take the replica out of the load balancer
    assert {status for status, _ in traffic.readiness} == {200}, Counter(traffic.readiness)
    degraded = [a for a in after_stop if a[1] == "decision" and a[3]]
    window = (degraded[-1][0] - stopped) if degraded else 0.0
    assert window < RECOVERY_SECONDS, "decisions stayed degraded"
    tail = [a for a in traffic.answers if a[1] == "decision"][-50:]
    assert all(not a[3] for a in tail), "decisions are still degraded at the end"

    # the replica took over, and holds every event the service acknowledged
    client = redis.RedisCluster(host="127.0.0.1", port=survivor_port)
    try:
        entries = client.xrange("nb:feedback")
        new_master = client.get_node_from_key("nb:feedback").port
    finally:
        client.close()
    assert new_master != node.port
    in_stream = {orjson.loads(fields[b"e"])["event_id"] for _, fields in entries}
    missing = set(traffic.acknowledged) - in_stream
    assert not missing, f"{len(missing)} of {len(traffic.acknowledged)} acknowledged events lost"
    print(f"\nfailover: replica promoted {promoted:.2f} s after the master stopped; decisions "
          f"degraded until {window:.2f} s ({len(degraded)} of {outcomes[('decision', 200)]}); "
          f"{dict(outcomes)}")
