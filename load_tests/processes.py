"""Start and stop the servers a benchmark needs, on loopback, owned by PID."""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import httpx


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@dataclass
class Server:
    name: str
    proc: subprocess.Popen[bytes]
    url: str
    ready_seconds: float

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()

    def rss_mb(self) -> float:
        try:
            for line in Path(f"/proc/{self.proc.pid}/status").read_text().splitlines():
                if line.startswith("VmRSS:"):
                    return int(line.split()[1]) / 1024
        except OSError:
            pass
        return float("nan")

    def cpu_seconds(self) -> float:
        """User + system CPU time the server process has used so far (Linux /proc)."""
        try:
            fields = Path(f"/proc/{self.proc.pid}/stat").read_text().rpartition(")")[2].split()
            return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
        except (OSError, ValueError, IndexError):
            return float("nan")

    def cpu_ms_per_request(self, cpu_before: float, requests: int) -> float:
        """Milliseconds of CPU per request since `cpu_seconds()` read `cpu_before`."""
        return 1000 * (self.cpu_seconds() - cpu_before) / requests


def free_cluster_port() -> int:
    """A free port a cluster node can take: its bus listens 10,000 above, which must
    be free too and still a port (so the port is at most 55535)."""
    import random

    for _ in range(200):
        port = random.randint(20000, 45000)
        try:
            with socket.socket() as a, socket.socket() as b:
                a.bind(("127.0.0.1", port))
                b.bind(("127.0.0.1", port + 10000))
        except OSError:
            continue
        return port
    raise SystemExit("no free port pair for a Redis Cluster node")


def machine_ticks() -> tuple[int, int]:
    """(busy, total) CPU ticks of the whole machine so far, all cores (Linux /proc/stat)."""
    try:
        ticks = [int(v) for v in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
    except (OSError, ValueError):
        return 0, 0
    idle = ticks[3] + (ticks[4] if len(ticks) > 4 else 0)  # idle + iowait
    return sum(ticks) - idle, sum(ticks)


def start_redis(workdir: Path, port: int | None = None, persist: bool = False,
                debug: bool = False) -> Server:
    """A redis-server on loopback (`port`: a free one), its files in `workdir`.

    Nothing on disk unless `persist`: then an append-only file fsynced on every write,
    so a restart on the same `workdir` comes back with everything it acknowledged.
    `debug`: DEBUG allowed from loopback (fault tests use `DEBUG SLEEP`).
    """
    binary = shutil.which("redis-server")
    if binary is None:
        raise SystemExit("redis-server not found: apt-get install redis-server")
    port = free_port() if port is None else port
    t = time.perf_counter()
    durability = (["--appendonly", "yes", "--appendfsync", "always"] if persist
                  else ["--appendonly", "no"])
    proc = subprocess.Popen(
        [binary, "--port", str(port), "--bind", "127.0.0.1", "--save", "", *durability,
         "--enable-debug-command", "local" if debug else "no",
         "--dir", str(workdir), "--logfile", str(workdir / "redis.log")],
    )
    import redis

    client = redis.Redis(port=port)
    deadline = time.monotonic() + 10
    while True:
        try:
            client.ping()
            break
        except redis.ConnectionError:
            if time.monotonic() > deadline or proc.poll() is not None:
                proc.kill()
                raise SystemExit("redis-server did not start") from None
            time.sleep(0.05)
    client.close()
    return Server("redis", proc, f"redis://127.0.0.1:{port}/0", time.perf_counter() - t)


@dataclass
class RedisCluster:
    """A Redis Cluster on loopback: its masters (and their replicas), owned by PID."""

    masters: list[Server]
    replicas: list[Server]
    ready_seconds: float

    @property
    def url(self) -> str:
        """A startup node as a URL, with no database number (a cluster has only db 0)."""
        return self.masters[0].url.rsplit("/", 1)[0]

    @property
    def nodes(self) -> list[Server]:
        return [*self.masters, *self.replicas]

    def stop(self) -> None:
        for node in self.nodes:
            node.stop()


def _redis_node(binary: str, workdir: Path, port: int, *options: str) -> subprocess.Popen[bytes]:
    node_dir = workdir / str(port)
    node_dir.mkdir(parents=True, exist_ok=True)
    return subprocess.Popen(
        [binary, "--port", str(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no",
         "--dir", str(node_dir), "--logfile", str(node_dir / "redis.log"), *options],
    )


def _wait_for_ping(proc: subprocess.Popen[bytes], port: int, timeout: float = 10.0) -> None:
    import redis

    client = redis.Redis(port=port)
    deadline = time.monotonic() + timeout
    try:
        while True:
            try:
                client.ping()
                return
            except redis.ConnectionError:
                if time.monotonic() > deadline or proc.poll() is not None:
                    proc.kill()
                    raise SystemExit(f"redis-server on port {port} did not start") from None
                time.sleep(0.05)
    finally:
        client.close()


def start_redis_cluster(workdir: Path, masters: int = 3, replicas: int = 0,
                        maxmemory_mb: int = 256, timeout: float = 30.0) -> RedisCluster:
    """Start `masters` cluster-enabled redis-servers (and `replicas` replicas of each),
    join them with `redis-cli --cluster create`, and wait until every node reports
    `cluster_state:ok` and knows all its peers."""
    binary, cli = shutil.which("redis-server"), shutil.which("redis-cli")
    if binary is None or cli is None:
        raise SystemExit("redis-server and redis-cli not found: apt-get install redis-server")
    t = time.perf_counter()
    ports: list[int] = []
    while len(ports) < masters * (1 + replicas):
        port = free_cluster_port()
        if port not in ports and port + 10000 not in ports and port - 10000 not in ports:
            ports.append(port)
    procs = [_redis_node(binary, workdir, port, "--cluster-enabled", "yes",
                         "--cluster-config-file", str(workdir / str(port) / "nodes.conf"),
                         "--cluster-node-timeout", "2000", "--maxmemory", f"{maxmemory_mb}mb")
             for port in ports]
    servers = [Server("redis-cluster", proc, f"redis://127.0.0.1:{port}/0", 0.0)
               for proc, port in zip(procs, ports, strict=True)]
    cluster = RedisCluster(servers[:masters], servers[masters:], 0.0)
    try:
        for proc, port in zip(procs, ports, strict=True):
            _wait_for_ping(proc, port)
        subprocess.run(
            [cli, "--cluster", "create", *(f"127.0.0.1:{p}" for p in ports),
             "--cluster-replicas", str(replicas), "--cluster-yes"],
            check=True, capture_output=True, timeout=timeout,
        )
        wait_for_cluster(ports, timeout)
    except BaseException:
        cluster.stop()
        raise
    cluster.ready_seconds = time.perf_counter() - t
    return cluster


def wait_for_cluster(ports: list[int], timeout: float = 30.0) -> None:
    """Until every node on `ports` says `cluster_state:ok` and knows them all."""
    import redis

    deadline = time.monotonic() + timeout
    for port in ports:
        client = redis.Redis(port=port, decode_responses=True)
        try:
            while True:
                info = client.execute_command("CLUSTER", "INFO")
                text = info if isinstance(info, str) else info.decode()
                fields = dict(line.split(":", 1) for line in text.split() if ":" in line)
                if (fields.get("cluster_state") == "ok"
                        and int(fields.get("cluster_known_nodes", 0)) >= len(ports)):
                    break
                if time.monotonic() > deadline:
                    raise SystemExit(f"the Redis Cluster is not ok after {timeout:.0f} s: {text}")
                time.sleep(0.1)
        finally:
            client.close()


def start_http(name: str, args: list[str], env: dict[str, str], port: int,
               log_path: Path, timeout: float = 120.0, cwd: Path | None = None) -> Server:
    """Start `python args...` (in `cwd`) and wait until GET /readyz answers 200."""
    t = time.perf_counter()
    log = log_path.open("wb")
    proc = subprocess.Popen([sys.executable, *args], env={**os.environ, **env}, cwd=cwd,
                            stdout=log, stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise SystemExit(f"{name} exited early; see {log_path}")
        try:
            if httpx.get(f"{url}/readyz", timeout=1.0).status_code == 200:
                return Server(name, proc, url, time.perf_counter() - t)
        except httpx.HTTPError:
            pass
        time.sleep(0.05)
    proc.kill()
    raise SystemExit(f"{name} not ready after {timeout:.0f} s; see {log_path}")


def nextbest_args(port: int) -> list[str]:
    """`python` arguments that serve nextbest (one worker) on `port`."""
    return ["-m", "service.cli", "serve", "--port", str(port)]


def nextbest_env(redis_url: str, data_dir: Path, models_dir: Path,
                 cluster: bool = False) -> dict[str, str]:
    """nextbest's settings for a benchmark: Redis (a Redis Cluster with `cluster`), demo
    data and model, quiet logs."""
    return {"NEXTBEST_REDIS_URL": redis_url, "NEXTBEST_REDIS_CLUSTER": str(cluster).lower(),
            "NEXTBEST_DATA_DIR": str(data_dir), "NEXTBEST_MODELS_DIR": str(models_dir),
            "NEXTBEST_LOG_LEVEL": "WARNING"}


def uvicorn_args(app: str, port: int) -> list[str]:
    return ["-m", "uvicorn", app, "--host", "127.0.0.1", "--port", str(port), "--loop", "uvloop",
            "--http", "httptools", "--workers", "1", "--no-access-log", "--log-level", "warning"]
