"""A real Prometheus on loopback scrapes a running nextbest under light load, and a
decision-latency quantile comes back through Prometheus's HTTP API.

Both processes are started by this test and killed by PID in teardown. The service runs
`nextbest demo` on a private tmp data dir (the first run generates data and trains)."""

from __future__ import annotations

import math
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from load_tests.processes import free_port
from tests.demo_fixtures import stop_process
from tests.ops.conftest import ROOT

#: the first `nextbest demo` generates data and trains (Feast's point-in-time join
#: included) before it serves, which takes minutes on a slow shared machine
READY_TIMEOUT = 600.0
QUERY = ('histogram_quantile(0.99, sum by (le) '
         '(rate(nextbest_http_request_duration_seconds_bucket{endpoint="/v1/decisions"}[30s])))')
#: channel -> a placement the retail world lets it appear on (features/worlds/retail.yaml)
SLOTS = {"web": "home", "app": "home", "pos": "checkout", "call_center": "service", "email": "inbox"}
CHANNELS = tuple(SLOTS)


def tail(path: Path, n: int = 40) -> str:
    return "\n".join(path.read_text(errors="replace").splitlines()[-n:]) if path.exists() else ""


def wait_ready(name: str, proc: subprocess.Popen[bytes], url: str, log: Path,
               timeout: float, interval: float) -> None:
    """Poll `url` until it answers 200; fail with the log's tail if the process exits or time runs out."""
    deadline = time.monotonic() + timeout
    while True:
        if proc.poll() is not None:
            pytest.fail(f"{name} exited with {proc.returncode}:\n{tail(log)}")
        try:
            if httpx.get(url, timeout=2).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        if time.monotonic() > deadline:
            pytest.fail(f"{name} not ready at {url} after {timeout:.0f} s:\n{tail(log)}")
        time.sleep(interval)


@pytest.fixture(scope="module")
def nextbest(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """Base URL of a `nextbest demo` this test started."""
    workdir = tmp_path_factory.mktemp("nextbest")
    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("NEXTBEST_")}
    env.update(NEXTBEST_DATA_DIR=str(workdir / "var"), NEXTBEST_MODELS_DIR=str(workdir / "models"),
               NEXTBEST_LOG_LEVEL="WARNING")
    log = workdir / "nextbest.log"
    with log.open("wb") as out:
        proc = subprocess.Popen(
            [sys.executable, "-m", "service.cli", "demo", "--host", "127.0.0.1", "--port", str(port)],
            cwd=ROOT, env=env, stdout=out, stderr=subprocess.STDOUT,
        )
    base = f"http://127.0.0.1:{port}"
    try:
        wait_ready("nextbest demo", proc, f"{base}/readyz", log, READY_TIMEOUT, 0.5)
        yield base
    finally:
        stop_process(proc)


@pytest.fixture(scope="module")
def prometheus_url(prometheus: str, nextbest: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """Base URL of a Prometheus this test started, scraping `nextbest` every second."""
    workdir = tmp_path_factory.mktemp("prometheus")
    port = free_port()
    target = nextbest.removeprefix("http://")
    config = workdir / "prometheus.yml"
    config.write_text(
        "global: {scrape_interval: 1s, evaluation_interval: 1s}\n"
        "scrape_configs:\n"
        "  - job_name: nextbest\n"
        "    metrics_path: /metrics\n"
        f"    static_configs: [{{targets: ['{target}']}}]\n"
    )
    log = workdir / "prometheus.log"
    with log.open("wb") as out:
        proc = subprocess.Popen(
            [prometheus, f"--config.file={config}", f"--storage.tsdb.path={workdir / 'data'}",
             f"--web.listen-address=127.0.0.1:{port}", "--storage.tsdb.retention.time=1h"],
            cwd=workdir, stdout=out, stderr=subprocess.STDOUT,
        )
    base = f"http://127.0.0.1:{port}"
    try:
        wait_ready("prometheus", proc, f"{base}/-/ready", log, 30.0, 0.2)
        yield base
    finally:
        stop_process(proc)


def query(prometheus_url: str, promql: str) -> list[dict[str, object]]:
    response = httpx.get(f"{prometheus_url}/api/v1/query", params={"query": promql}, timeout=5)
    response.raise_for_status()
    body = response.json()
    assert body["status"] == "success", body
    return body["data"]["result"]  # type: ignore[no-any-return]


def decide(client: httpx.Client, i: int) -> None:
    channel = CHANNELS[i % len(CHANNELS)]
    body = {"customer_id": f"c{i % 200:05d}", "channel": channel,
            "placement": SLOTS[channel], "context": {"device": "mobile"}, "limit": 3}
    response = client.post("/v1/decisions", json=body)
    assert response.status_code == 200, response.text


def scraped_samples(prometheus_url: str) -> float:
    """How many scrapes in the last 30 s saw decisions (0 before the first)."""
    result = query(prometheus_url, 'max(count_over_time(nextbest_decisions_total{job="nextbest"}[30s]))')
    return float(result[0]["value"][1]) if result else 0.0  # type: ignore[index]


def test_decision_latency_quantile_through_prometheus(nextbest: str, prometheus_url: str) -> None:
    """Light load (bursts of 20 decisions a quarter of a second apart, at most 2,000 in all) runs
    until Prometheus has scraped the growing counters at least twice and the p99 query
    answers, or 45 s have passed."""
    served = 0
    value = math.nan
    deadline = time.monotonic() + 45
    with httpx.Client(base_url=nextbest, timeout=5) as client:
        while time.monotonic() < deadline and served < 2_000:
            for _ in range(20):
                decide(client, served)
                served += 1
            time.sleep(0.25)
            if served % 100 == 0 and scraped_samples(prometheus_url) >= 3:
                result = query(prometheus_url, QUERY)
                value = float(result[0]["value"][1]) if result else math.nan  # type: ignore[index]
                if math.isfinite(value) and value > 0:
                    break
    up = query(prometheus_url, 'up{job="nextbest"}')
    assert up and up[0]["value"][1] == "1", f"target not up: {up}"  # type: ignore[index]
    assert math.isfinite(value) and value > 0, (
        f"p99 decision latency from Prometheus: {value} after {served} decisions; "
        f"buckets: {query(prometheus_url, 'nextbest_http_request_duration_seconds_count')}"
    )
    assert value < 1.0, value  # inside the finite buckets: a decision takes milliseconds here

    stages = query(prometheus_url, "count by (stage) (nextbest_stage_duration_seconds_bucket)")
    assert {s["metric"]["stage"] for s in stages} >= {"features", "offline", "arbitration"}  # type: ignore[index]

    # the dashboard's loop lag panel: its query answers with a finite lag for the replica
    lag = query(prometheus_url, "histogram_quantile(0.99, sum by (instance, le) "
                "(rate(nextbest_event_loop_lag_seconds_bucket[1m])))")
    assert lag and math.isfinite(float(lag[0]["value"][1])), lag  # type: ignore[index]
