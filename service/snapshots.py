"""Snapshots of the learner and the contact ledger, so a new replica need not replay
the whole feedback stream before it turns ready.

Every replica folds the same ordered stream, so any replica's learner and ledger at
stream position P are the state at P. Every `interval` seconds one replica (whichever
claims the turn in Redis first: `SET <key>:turn NX PX`) writes its state with its
position; a starting replica restores the newest snapshot and replays only the stream
after its position (`Runtime._replay_feedback`). Replay time grows with the stream, so
without a snapshot a long stream means a long wait for ready; from a snapshot it grows
only with the events since (`load_tests/startup_bench.py` measures both).

A snapshot is one Redis string: an `.npz` archive (numpy's format, read back with
`allow_pickle=False`, so a snapshot can carry no code) of the learner's River weights as
plain names and numbers, every customer's contacts as one record array, and a JSON
header (format, stream position, when, the catalog's action ids, River's version). The
ledger's contacts follow their action ids into the current catalog's rows, so a catalog
change does not invalidate a snapshot. A snapshot that cannot be read is ignored with a
warning: the replica then replays the whole stream, as it would without one.

Taking one copies the state on the event loop between two stream reads (the state must
match the position), then archives the copy in a thread. The copy grows with the ledger
and stalls the loop while it runs: each snapshot logs it (`copy_seconds`), and
`load_tests/startup_bench.py` times a whole write.
"""

from __future__ import annotations

import asyncio
import io
import json
import logging
import time
import uuid
import zipfile
from dataclasses import dataclass
from typing import Any

import numpy as np
import river

from service.contacts import CONTACT, ContactLedger, LedgerState
from service.learner import LearnerState, OnlineLearner
from service.metrics import Metrics

log = logging.getLogger(__name__)

FORMAT = 1


@dataclass(frozen=True)
class Snapshot:
    position: str  # the last stream entry folded in
    created_at: float
    learner: LearnerState | None
    ledger: LedgerState | None


def encode(snapshot: Snapshot) -> bytes:
    header: dict[str, Any] = {
        "format": FORMAT, "position": snapshot.position, "created_at": snapshot.created_at,
        "river": river.__version__,
    }
    arrays: dict[str, Any] = {}  # (Any: np.savez's keyword arguments include allow_pickle)
    if (learner := snapshot.learner) is not None:
        header["learner"] = {"intercept": learner.intercept, "steps": learner.steps,
                             "updates": learner.updates,
                             "columns": [list(c) for c in learner.columns]}
        arrays |= {"learner_keys": np.array(learner.keys, dtype=str),
                   "learner_weights": learner.weights}
    if (ledger := snapshot.ledger) is not None:
        header["ledger"] = {"actions": ledger.actions}
        arrays |= {"ledger_customers": np.array(ledger.customers, dtype=str),
                   "ledger_counts": ledger.counts, "ledger_contacts": ledger.contacts}
    out = io.BytesIO()
    np.savez(out, header=np.array(json.dumps(header)), **arrays)
    return out.getvalue()


def decode(blob: bytes) -> Snapshot:
    """The snapshot in `blob`; ValueError when it is not one this version can read."""
    try:
        with np.load(io.BytesIO(blob), allow_pickle=False) as archive:
            header = json.loads(str(archive["header"]))
            if header.get("format") != FORMAT:
                raise ValueError(f"snapshot format {header.get('format')!r}, expected {FORMAT}")
            learner = ledger = None
            if (meta := header.get("learner")) is not None:
                learner = LearnerState(
                    keys=archive["learner_keys"].tolist(),
                    weights=archive["learner_weights"].astype(np.float64),
                    intercept=float(meta["intercept"]), steps=int(meta["steps"]),
                    updates=int(meta["updates"]),
                    columns=[(str(t), str(v)) for t, v in meta["columns"]],
                )
            if (meta := header.get("ledger")) is not None:
                contacts = archive["ledger_contacts"]
                if contacts.dtype != CONTACT:
                    raise ValueError(f"ledger contacts of dtype {contacts.dtype}")
                ledger = LedgerState(
                    customers=archive["ledger_customers"].tolist(),
                    counts=archive["ledger_counts"].astype(np.int64),
                    contacts=contacts, actions=[str(a) for a in meta["actions"]],
                )
            if ledger is not None and (
                len(ledger.counts) != len(ledger.customers)
                or int(ledger.counts.sum()) != len(ledger.contacts)
                or not np.all((ledger.contacts["row"] >= 0)
                              & (ledger.contacts["row"] < len(ledger.actions)))
            ):
                raise ValueError("the ledger's counts, customers, contacts and actions disagree")
            if learner is not None and len(learner.keys) != len(learner.weights):
                raise ValueError("the learner's keys and weights disagree")
            return Snapshot(str(header["position"]), float(header["created_at"]), learner, ledger)
    except (OSError, EOFError, KeyError, TypeError, zipfile.BadZipFile,
            json.JSONDecodeError) as exc:
        raise ValueError(f"unreadable snapshot: {exc!r}") from exc


class SnapshotStore:
    """The newest snapshot in Redis, and whose turn it is to write the next one."""

    def __init__(self, client: Any, key: str = "nb:snapshot") -> None:
        self._r = client
        self.key = key
        self._token = uuid.uuid4().hex  # this replica, in the turn key

    async def claim(self, seconds: float) -> bool:
        """True if no replica has written (or claimed) a snapshot in the last `seconds`."""
        return bool(await self._r.set(f"{self.key}:turn", self._token, nx=True,
                                      px=max(1, int(seconds * 1000))))

    async def save(self, blob: bytes) -> None:
        await self._r.set(self.key, blob)

    async def load(self) -> bytes | None:
        blob = await self._r.get(self.key)
        return bytes(blob) if blob is not None else None


class Snapshots:
    """When to take snapshots of this replica's learner and ledger, and restoring one."""

    def __init__(self, store: SnapshotStore, interval_seconds: float, metrics: Metrics,
                 learner: OnlineLearner | None, ledger: ContactLedger | None) -> None:
        self._store = store
        self._interval = interval_seconds
        self._metrics = metrics
        self._learner = learner
        self._ledger = ledger
        self._next = time.monotonic() + interval_seconds
        self._position: str | None = None  # of the last snapshot this replica wrote

    def due(self) -> bool:
        return time.monotonic() >= self._next

    async def take(self, position: str) -> bool:
        """Write the state at `position` if it is this replica's turn; True if written.

        The caller must not change the learner or the ledger until this returns.
        """
        self._next = time.monotonic() + self._interval
        if position == self._position or not await self._store.claim(self._interval):
            return False  # nothing new since this replica's last one, or not its turn
        started = time.perf_counter()
        snapshot = Snapshot(
            position, time.time(),
            self._learner.state() if self._learner is not None else None,
            self._ledger.state() if self._ledger is not None else None,
        )
        copied = time.perf_counter() - started
        # the state is a copy: archiving it (zip, CRC) need not hold up the event loop
        blob = await asyncio.to_thread(encode, snapshot)
        await self._store.save(blob)
        self._position = position
        self._metrics.snapshots_written.inc()
        self._metrics.snapshot_bytes.set(len(blob))
        log.info("snapshot written", extra={
            "position": position, "bytes": len(blob), "copy_seconds": round(copied, 4),
            "seconds": round(time.perf_counter() - started, 4)})
        return True

    async def restore(self) -> str | None:
        """Load the newest snapshot into the (fresh) learner and ledger; its position.

        None when there is none, or it cannot be read (the caller then replays the
        whole stream).
        """
        blob = await self._store.load()
        if blob is None:
            return None
        try:
            snapshot = decode(blob)
        except ValueError as exc:
            log.warning("ignoring the snapshot in %s: %s", self._store.key, exc)
            return None
        missing = [part for part, mine, theirs in (
            ("learner", self._learner, snapshot.learner), ("ledger", self._ledger, snapshot.ledger)
        ) if mine is not None and theirs is None]
        if missing:  # its position would skip events this replica needs folded in
            log.warning("ignoring the snapshot in %s: it holds no %s", self._store.key,
                        " and no ".join(missing))
            return None
        if self._learner is not None and snapshot.learner is not None:
            self._learner.restore(snapshot.learner)
        if self._ledger is not None and snapshot.ledger is not None:
            self._ledger.restore(snapshot.ledger)
        self._metrics.snapshot_bytes.set(len(blob))
        log.info("snapshot restored", extra={
            "position": snapshot.position, "bytes": len(blob),
            "age_seconds": round(time.time() - snapshot.created_at, 1)})
        return snapshot.position
