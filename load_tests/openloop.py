"""The benchmark's own open-loop load generator (openloop.c), built with the machine's C
compiler on first use.

k6 spends more CPU per request than the bare endpoint it loads, on the same cores as the
server under test, so at the benchmark's rates it keeps a good part of the machine busy
by itself. openloop sends the same traffic (the same items, in the same order, the same
feedback rule as k6_decisions.js) at a fixed arrival rate for a small fraction of k6's CPU
per request, so the server's latency is measured with far less of the load generator in
it (`nextbest bench` reports the generator's CPU per request beside the server's, for
either `--generator`).
"""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
SOURCE = HERE / "openloop.c"
BUILD = HERE / ".build" / "openloop"


def binary() -> Path:
    """The compiled generator, (re)built when the source is newer than the binary."""
    if BUILD.exists() and BUILD.stat().st_mtime >= SOURCE.stat().st_mtime:
        return BUILD
    cc = shutil.which("cc") or shutil.which("gcc")
    if cc is None:
        raise SystemExit("no C compiler (cc/gcc) to build load_tests/openloop.c: "
                         "apt-get install gcc, or use --generator k6")
    BUILD.parent.mkdir(exist_ok=True)
    tmp = BUILD.with_suffix(".tmp")
    subprocess.run([cc, "-O2", "-Wall", "-o", str(tmp), str(SOURCE), "-lm"], check=True)
    tmp.replace(BUILD)
    return BUILD


def write_items(items: list[dict[str, Any]], path: Path) -> None:
    """One line per item: FB, OUTCOME, VALUE, RANK, BODY separated by tabs."""
    lines = []
    for item in items:
        fb = item["fb"]
        if "\t" in item["body"] or "\n" in item["body"]:
            raise ValueError("an item's body holds a tab or a newline")
        if fb is None:
            lines.append(f"0\t-\t-\t0\t{item['body']}\n")
        else:
            value = "-" if fb["value"] is None else json.dumps(fb["value"])
            lines.append(f"1\t{fb['outcome']}\t{value}\t{fb['rank']}\t{item['body']}\n")
    path.write_text("".join(lines))


def command(base_url: str, items_file: Path, out: Path, rate: int, duration: float,
            connections: int, max_connections: int, timeout_s: float) -> list[str]:
    return [str(binary()), base_url, str(items_file), str(rate), str(duration), str(out),
            str(connections), str(max_connections), str(timeout_s)]


def point(summary: dict[str, Any], rate: int, duration: float) -> dict[str, Any]:
    """openloop's summary as a bench point (the keys bench.k6_point reads from k6's summary)."""
    dec = summary["decision_ms"]
    return {
        "rate": rate,
        "achieved": round(summary["decisions"] / duration, 1),
        "decisions": summary["decisions"],
        "feedback": summary["feedback"],
        "p50_ms": dec["p50"],
        "p90_ms": dec["p90"],
        "p99_ms": dec["p99"],
        "max_ms": dec["max"],
        "feedback_p99_ms": summary["feedback_p99_ms"],
        "errors": summary["errors"] + summary["connect_errors"],
        "failed_checks": summary["failed_checks"],
        "dropped": summary["dropped"],
    }
