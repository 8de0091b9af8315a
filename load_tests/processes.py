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


def nextbest_env(redis_url: str, data_dir: Path, models_dir: Path) -> dict[str, str]:
    """nextbest's settings for a benchmark: Redis, demo data and model, quiet logs."""
    return {"NEXTBEST_REDIS_URL": redis_url, "NEXTBEST_DATA_DIR": str(data_dir),
            "NEXTBEST_MODELS_DIR": str(models_dir), "NEXTBEST_LOG_LEVEL": "WARNING"}


def uvicorn_args(app: str, port: int) -> list[str]:
    return ["-m", "uvicorn", app, "--host", "127.0.0.1", "--port", str(port), "--loop", "uvloop",
            "--http", "httptools", "--workers", "1", "--no-access-log", "--log-level", "warning"]
