"""Training's peak memory and speed at a given number of logged decisions.

    python -m load_tests.train_memory --rows 1000000 [--rows 5000000] [--source DIR]

`--source` is a demo data dir (default: one generated under --work with the demo's
defaults, `training/demo_data.py`, and loaded into SQLite). Its interaction log is scaled
to each `--rows` by replication: copy k of every logged decision gets the decision id
`<id>~k` and its timestamp moved by a random offset within +-JITTER_SECONDS, so the
point-in-time join sees as many distinct (customer, time) pairs as a real log of that
size, against the same feature sources (generating millions of decisions with the
simulator would take longer than training on them). The log is written in row groups
of ROW_GROUP_ROWS, as a bounded reader needs.

Each size then trains in a subprocess of its own, `training.train.train` as `nextbest
train` runs it, and the parent reads the child's peak resident set size
(getrusage(RUSAGE_CHILDREN).ru_maxrss) and the manifest's step durations
(`training.step_seconds`): rows per second of the read, the point-in-time join, the
encoding, the fit, and of the whole run.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

JITTER_SECONDS = 3600
ROW_GROUP_ROWS = 100_000


def demo_source(work: Path) -> Path:
    """A demo data dir of the default size, generated once under `work`."""
    from features.config import interactions_path, shipped_world
    from features.store import apply_and_materialize
    from training.demo_data import generate

    data_dir = work / "demo"
    if not interactions_path(data_dir).is_file():
        generate(data_dir, progress=False)
        apply_and_materialize(shipped_world("retail"), data_dir, None)
    return data_dir


def scaled_log(source: Path, rows: int, out: Path, seed: int = 0) -> Path:
    """`source`'s interaction log replicated (ids suffixed, times jittered) to `rows` rows."""
    if out.is_file() and pq.ParquetFile(out).metadata.num_rows == rows:
        return out
    base = pq.read_table(source)
    rng = np.random.default_rng(seed)
    written, copy = 0, 0
    with pq.ParquetWriter(out, base.schema) as writer:
        while written < rows:
            part = base.slice(0, min(len(base), rows - written))
            if copy:
                ids = pa.compute.binary_join_element_wise(
                    part.column("decision_id"), pa.scalar(str(copy)), "~")
                shift = rng.integers(-JITTER_SECONDS, JITTER_SECONDS + 1, len(part)) * 1_000_000
                ts = part.column("event_timestamp")
                moved = pa.array(ts.cast(pa.int64()).to_numpy() + shift).cast(ts.type)
                part = part.set_column(part.schema.get_field_index("decision_id"), "decision_id", ids)
                part = part.set_column(part.schema.get_field_index("event_timestamp"),
                                       "event_timestamp", moved)
            writer.write_table(part, row_group_size=ROW_GROUP_ROWS)
            written += len(part)
            copy += 1
    return out


def measure(data_dir: Path, log_file: Path, models_dir: Path) -> dict[str, Any]:
    """Train once in a child process: its peak RSS, its duration and its steps' speeds."""
    out, err = models_dir.with_suffix(".json"), models_dir.with_suffix(".log")
    command = [sys.executable, "-m", "load_tests.train_memory", "--child",
               str(data_dir), str(log_file), str(models_dir), str(out)]
    started = time.perf_counter()
    with err.open("w") as stderr:
        child = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=stderr)
        _, status, usage = os.wait4(child.pid, 0)  # this child's own rusage
    wall = time.perf_counter() - started
    child.returncode = os.waitstatus_to_exitcode(status)
    if child.returncode != 0:
        raise RuntimeError(f"training failed:\n{err.read_text()[-4000:]}")
    peak_kib = usage.ru_maxrss
    manifest = json.loads(out.read_text())
    n = int(manifest["training"]["n_examples"])
    steps = manifest["training"].get("step_seconds", {})
    return {
        "rows": n, "peak_rss_gib": round(peak_kib / 2**20, 2), "wall_seconds": round(wall, 1),
        "rows_per_second": round(n / wall),
        "steps": {step: {"seconds": s, "rows_per_second": round(n / s) if s else None}
                  for step, s in steps.items()},
        "fit_iterations": manifest["training"].get("fit_iterations"),
        "holdout_auc": round(manifest["metrics"]["auc"], 4),
    }


def _child(data_dir: Path, log_file: Path, models_dir: Path, out: Path) -> None:
    from training.train import train

    _, manifest = train(data_dir, models_dir, interactions=log_file, progress=False)
    out.write_text(json.dumps(manifest.model_dump(mode="json")))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, action="append", help="logged decisions (repeatable)")
    parser.add_argument("--source", type=Path, default=None, help="a demo data dir to scale")
    parser.add_argument("--work", type=Path, default=Path("/tmp/nextbest-train-memory"))
    parser.add_argument("--child", nargs=4, type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.child:
        _child(*args.child)
        return 0
    args.work.mkdir(parents=True, exist_ok=True)
    source = args.source if args.source is not None else demo_source(args.work)
    from features.config import interactions_path

    for rows in args.rows or [1_000_000]:
        log_file = scaled_log(interactions_path(source), rows, args.work / f"interactions-{rows}.parquet")
        result = measure(source, log_file, args.work / f"models-{rows}")
        print(json.dumps(result), flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
