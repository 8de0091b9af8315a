"""The fault tests' parts (tests/service/test_faults.py): a redis-server they stop, stall
and start again on the same port, a real `nextbest serve` process on it, and bounded
open-loop traffic of decisions, each followed by one feedback event.

Everything binds 127.0.0.1 and is stopped by its PID; every load ends by itself.
"""

from __future__ import annotations

import asyncio
import os
import signal
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import cast

import httpx
import numpy as np
import orjson
import redis
import uvloop

from load_tests.processes import Server, free_port, nextbest_args, nextbest_env, start_http, start_redis
from tests.demo_fixtures import DemoDirs

ROOT = Path(__file__).resolve().parents[2]
#: how long a request of the load may take before it counts as unanswered
REQUEST_TIMEOUT = 5.0


@dataclass
class RedisProcess:
    """A redis-server the test owns, stopped and started again on the same port."""

    workdir: Path
    persist: bool
    server: Server | None = None
    port: int = field(default_factory=free_port)

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self, empty: bool = False) -> None:
        """Start on the port; `empty`: in a new directory, so nothing persisted is loaded."""
        workdir = self.workdir
        if empty:
            workdir = workdir.with_name(f"{workdir.name}-{time.monotonic_ns()}")
        workdir.mkdir(parents=True, exist_ok=True)
        self.workdir = workdir
        self.server = start_redis(workdir, port=self.port, persist=self.persist, debug=True)

    def stop(self, sig: signal.Signals = signal.SIGTERM) -> None:
        """Send `sig` and wait for the process to end (SIGTERM: it writes its AOF first)."""
        assert self.server is not None
        proc = self.server.proc
        if proc.poll() is None:
            proc.send_signal(sig)
            proc.wait(timeout=10)

    def client(self) -> redis.Redis:
        return redis.Redis.from_url(self.url, socket_timeout=10)


def copy_store(source_url: str, target_url: str) -> int:
    """Copy the materialized features (every key but the service's `nb:*`) to another
    server, byte for byte (DUMP/RESTORE); how many keys."""
    source, target = redis.Redis.from_url(source_url), redis.Redis.from_url(target_url)
    keys = [k for k in source.scan_iter(count=1000) if not k.startswith(b"nb:")]
    dumps = source.pipeline(transaction=False)
    for k in keys:
        dumps.dump(k)
    restore = target.pipeline(transaction=False)
    for k, payload in zip(keys, dumps.execute(), strict=True):
        restore.restore(k, 0, payload, replace=True)
    restore.execute()
    source.close()
    target.close()
    return len(keys)


def start_service(redis_url: str, demo: DemoDirs, workdir: Path, **settings: str) -> Server:
    """`nextbest serve` of this checkout on a free port, on `redis_url`, with the demo's
    data and model; `settings`: more NEXTBEST_* variables (without the prefix)."""
    port = free_port()
    # the demo's model pinned: these stores are copies without the registry's pointers, and
    # the faults under test (an emptied Redis among them) are not the registry's
    env = {**nextbest_env(redis_url, demo.data_dir, demo.models_dir), "PYTHONPATH": str(ROOT),
           "NEXTBEST_MODEL_VERSION": "1",
           **{f"NEXTBEST_{k.upper()}": v for k, v in settings.items()}}
    return start_http("nextbest", nextbest_args(port), env, port, workdir / "nextbest.log",
                      timeout=90, cwd=ROOT)


def kill(server: Server) -> None:
    """SIGKILL: nothing of the process gets to run again."""
    if server.proc.poll() is None:
        os.kill(server.proc.pid, signal.SIGKILL)
        server.proc.wait(timeout=10)


@dataclass
class Call:
    """One request of the load, timed from the load's start (`sent`, seconds)."""

    kind: str  # "decision", "feedback" or "ready"
    sent: float
    seconds: float
    status: int  # 0: no answer (connection refused or reset, timeout)
    decision_id: str | None = None
    event_id: str | None = None
    degraded: tuple[str, ...] = ()
    attempts: int = 1
    body: dict | None = None


@dataclass
class Load:
    """What a load sent and got back."""

    calls: list[Call]
    #: when each scheduled fault action ran, seconds from the start: (started, done)
    marks: dict[str, tuple[float, float]]

    def of(self, kind: str, start: float = 0.0, end: float = float("inf")) -> list[Call]:
        return [c for c in self.calls if c.kind == kind and start <= c.sent < end]

    def answered(self, kind: str = "decision") -> list[Call]:
        return [c for c in self.of(kind) if c.status in (200, 202)]


def p99(calls: Sequence[Call]) -> float:
    return float(np.percentile([c.seconds for c in calls], 99)) if calls else float("nan")


Fault = tuple[float, str, Callable[[], object]]


class Connections:
    """Keep-alive HTTP/1.1 connections to one loopback server: a minimal client.

    httpx costs milliseconds of CPU per request, which on a shared machine made the
    generator, not the service, the bottleneck of these tests; this costs a small part
    of that. A request takes an idle connection or opens one; a connection that fails
    or times out is closed, and the request counts as unanswered (status 0).
    """

    def __init__(self, base_url: str) -> None:
        address = base_url.removeprefix("http://")
        host, _, port = address.partition(":")
        self._host, self._port = host, int(port)
        self._idle: list[tuple[asyncio.StreamReader, asyncio.StreamWriter]] = []

    async def request(self, method: str, path: str, body: bytes = b"",
                      timeout: float = REQUEST_TIMEOUT) -> tuple[int, dict[str, str], bytes]:
        head = (f"{method} {path} HTTP/1.1\r\nhost: {self._host}\r\n"
                f"content-type: application/json\r\ncontent-length: {len(body)}\r\n\r\n")
        request = head.encode() + body
        try:
            async with asyncio.timeout(timeout):
                while self._idle:
                    # the server may have closed an idle connection (its keep-alive timeout)
                    # before it read this request: then, as HTTP clients do, send it again
                    answer = await self._exchange(self._idle.pop(), request, reused=True)
                    if answer is not None:
                        return answer
                connection = await asyncio.open_connection(self._host, self._port)
                answer = await self._exchange(connection, request, reused=False)
                assert answer is not None
                return answer
        except (OSError, TimeoutError, asyncio.IncompleteReadError, ValueError):
            return 0, {}, b""

    async def _exchange(self, connection: tuple[asyncio.StreamReader, asyncio.StreamWriter],
                        request: bytes, reused: bool) -> tuple[int, dict[str, str], bytes] | None:
        """One request on `connection`; None when a reused one turned out closed unread."""
        reader, writer = connection
        try:
            writer.write(request)
            head = await reader.readuntil(b"\r\n\r\n")
            status_line, *lines = head.decode("latin-1").split("\r\n")
            headers = {k.lower(): v.strip() for k, _, v in
                       (line.partition(":") for line in lines if line)}
            payload = await reader.readexactly(int(headers.get("content-length", "0")))
        except (asyncio.IncompleteReadError, ConnectionResetError) as exc:
            writer.close()
            unread = not isinstance(exc, asyncio.IncompleteReadError) or not exc.partial
            if reused and unread:
                return None
            raise
        except BaseException:
            writer.close()
            raise
        self._idle.append(connection)
        return int(status_line.split(" ", 2)[1]), headers, payload

    def close(self) -> None:
        for _, writer in self._idle:
            writer.close()
        self._idle.clear()


def run_load(base_url: str, bodies: Sequence[str], rate: float, duration: float,
             faults: Sequence[Fault] = (), ready_every: float = 0.25,
             feedback_deadline: float = 30.0) -> Load:
    """Decisions at `rate` per second for `duration` seconds (open loop: each due at its
    time, whatever the answers of the others; its latency counts from then), each
    answered one followed by an impression of its first action with an `event_id` of its
    own; a 503 is retried after its `Retry-After` until `feedback_deadline` seconds after
    the start. `/readyz` every `ready_every` seconds. `faults`: (at seconds, name,
    blocking action), each run in a thread.
    """
    with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
        return runner.run(_load(base_url, bodies, rate, duration, faults, ready_every,
                                feedback_deadline))


async def _load(base_url: str, bodies: Sequence[str], rate: float, duration: float,
                faults: Sequence[Fault], ready_every: float, feedback_deadline: float) -> Load:
    calls: list[Call] = []
    marks: dict[str, tuple[float, float]] = {}
    http = Connections(base_url)
    start = time.monotonic()

    def now() -> float:
        return time.monotonic() - start

    async def feedback(decision_id: str, action_id: str) -> None:
        event = {"decision_id": decision_id, "action_id": action_id,
                 "outcome": "impression", "event_id": f"{decision_id}:impression"}
        payload = orjson.dumps(event)
        sent = now()
        attempts = 0
        while True:
            attempts += 1
            status, headers, _ = await http.request("POST", "/v1/feedback", payload)
            if status == 503 and now() < feedback_deadline:
                await asyncio.sleep(float(headers.get("retry-after", "1")))
                continue
            break
        calls.append(Call("feedback", sent, now() - sent, status, decision_id=decision_id,
                          event_id=event["event_id"], attempts=attempts))

    async def decide(due: float, body: str) -> None:
        status, _, payload = await http.request("POST", "/v1/decisions", body.encode())
        call = Call("decision", due, now() - due, status)
        calls.append(call)
        if status != 200:
            return
        answer = orjson.loads(payload)
        call.decision_id, call.degraded = answer["decision_id"], tuple(answer["degraded"])
        if answer["actions"]:
            await feedback(answer["decision_id"], answer["actions"][0]["action_id"])

    async def ready() -> None:
        while now() < duration:
            sent = now()
            status, _, payload = await http.request("GET", "/readyz")
            calls.append(Call("ready", sent, now() - sent, status,
                              body=orjson.loads(payload) if status else None))
            await asyncio.sleep(ready_every)

    async def fault(at: float, name: str, action: Callable[[], object]) -> None:
        await asyncio.sleep(max(0.0, at - now()))
        began = now()
        await asyncio.to_thread(action)
        marks[name] = (began, now())

    tasks = [asyncio.create_task(fault(*f)) for f in faults]
    if ready_every > 0:
        tasks.append(asyncio.create_task(ready()))
    for i in range(int(rate * duration)):
        due = i / rate
        await asyncio.sleep(max(0.0, due - now()))
        tasks.append(asyncio.create_task(decide(due, bodies[i % len(bodies)])))
    await asyncio.gather(*tasks)
    http.close()
    return Load(calls, marks)


def stream_ids(client: redis.Redis, key: str, field: bytes, name: str) -> list[str]:
    """The `name` of every JSON entry of a stream, in stream order."""
    ids: list[str] = []
    after = "-"
    while True:
        entries = cast(list[tuple[bytes, dict[bytes, bytes]]], client.xrange(
            key, min=after if after == "-" else f"({after}", count=5000))
        if not entries:
            return ids
        ids += [orjson.loads(fields[field])[name] for _, fields in entries]
        after = entries[-1][0].decode()


def wait_for_stream(client: redis.Redis, key: str, length: int, seconds: float) -> int:
    """XLEN once it reaches `length`, or when `seconds` have passed."""
    deadline = time.monotonic() + seconds
    while True:
        n = cast(int, client.xlen(key))
        if n >= length or time.monotonic() > deadline:
            return n
        time.sleep(0.1)


def metric(base_url: str, name: str) -> float | None:
    """A sample of the service's /metrics, by its name with labels as exposed."""
    for line in httpx.get(f"{base_url}/metrics", timeout=5).text.splitlines():
        if line.startswith(name + " "):
            return float(line.rsplit(" ", 1)[1])
    return None
