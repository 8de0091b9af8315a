"""Follow the registry's pointers: swap the scorer a replica serves, between two requests.

Every `interval` seconds the watcher reads the pointers (`service/registry.py`). When
the champion or the challenger changed, it loads the new version completely in a worker
thread (manifest, sha256, the world's columns and encodings, an ONNX Runtime session and
one warm-up run) and only then replaces the one reference the engine reads per decision
(`DecisionEngine.scorer`, `DecisionEngine.shadow`), on the event loop. A decision reads
that reference once, so it is scored by one version from start to end, and no request
waits for a load. A version that fails to load is logged and counted
(`nextbest_model_load_failures_total`); the replica keeps serving what it served, and
tries again when the pointers change again.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from dataclasses import dataclass

import numpy as np

from service.engine import DecisionEngine, Shadow
from service.errors import ModelError
from service.metrics import Metrics
from service.model import OnnxScorer
from service.registry import Pointers, Registry

log = logging.getLogger(__name__)

#: rows of the warm-up run a loaded scorer gets before it serves
WARMUP_ROWS = 8


def starting_models(registry: Registry, pinned: str | None) -> tuple[OnnxScorer, Shadow | None, int]:
    """What a starting replica serves: (champion, challenger in shadow, pointers' revision).

    A pinned version (NEXTBEST_MODEL_VERSION) is served alone, whatever the pointers say
    (revision -1). Without a champion the replica refuses to start (ModelError): serving
    "the newest on disk" would let replicas started at different times serve different
    models. A challenger that does not load is logged and left out; the champion serves.
    """
    if pinned is not None:
        return registry.load(pinned), None, -1
    pointers = registry.pointers()
    if pointers.champion is None:
        registered = [r.manifest.version for r in registry.registered()]
        if not registered:
            raise ModelError(f"no model '{registry.name}' registered under "
                             f"{registry.models_dir}: run `nextbest train` (or `nextbest demo`) first")
        raise ModelError(
            f"model '{registry.name}' has no champion ({registry.store.where}); registered "
            f"versions: {', '.join(registered)}. Promote one with `nextbest models promote "
            "VERSION` (or pin one with NEXTBEST_MODEL_VERSION)")
    scorer = registry.load(pointers.champion)
    shadow = None
    if pointers.challenger is not None and pointers.share > 0:
        try:
            shadow = Shadow(registry.load(pointers.challenger), pointers.share)
        except ModelError as exc:
            log.error("cannot load the challenger v%s, serving without shadow: %s",
                      pointers.challenger, exc.message)
    return scorer, shadow, pointers.revision


@dataclass
class ModelWatcher:
    registry: Registry
    engine: DecisionEngine
    metrics: Metrics
    interval: float
    #: the pointers' revision this replica has acted on (-1: none yet)
    seen: int = -1

    async def run(self) -> None:
        while True:
            await asyncio.sleep(self.interval)
            await self.check()

    async def check(self) -> None:
        """Read the pointers once and follow them if they changed."""
        try:
            pointers = await asyncio.to_thread(self.registry.pointers)
        except Exception as exc:  # a Redis outage or an unreadable file: try again next time
            self.metrics.model_pointer_errors.inc()
            log.warning("cannot read the model pointers from %s: %s",
                        self.registry.store.where, exc)
            return
        if pointers.revision == self.seen:
            return
        self.seen = pointers.revision
        await self._follow_champion(pointers)
        await self._follow_challenger(pointers)

    async def _follow_champion(self, pointers: Pointers) -> None:
        current = self.engine.scorer
        if pointers.champion is None:
            log.error("the champion pointer of %s is gone (%s): still serving v%s",
                      self.registry.name, self.registry.store.where, current.version)
            return
        if pointers.champion == current.version:
            return
        scorer = await self._load(pointers.champion, "champion")
        if scorer is None:
            return
        self.engine.scorer = scorer
        _remove(self.metrics, "offline", *_labels(current))
        self.metrics.model_info.labels("offline", *_labels(scorer)).set(1)
        self.metrics.model_swaps.labels("champion").inc()
        log.info("serving %s (was v%s)", scorer.label, current.version,
                 extra={"model": scorer.label, "revision": pointers.revision})

    async def _follow_challenger(self, pointers: Pointers) -> None:
        shadow = self.engine.shadow
        if pointers.challenger is None or pointers.share <= 0:
            if shadow is not None:
                self.engine.shadow = None
                _remove(self.metrics, "challenger", *_labels(shadow.scorer))
                log.info("shadow scoring of %s stopped", shadow.scorer.label)
            return
        if shadow is not None and shadow.scorer.version == pointers.challenger:
            if shadow.share != pointers.share:
                self.engine.shadow = Shadow(shadow.scorer, pointers.share)
            return
        scorer = await self._load(pointers.challenger, "challenger")
        if scorer is None:
            return
        self.engine.shadow = Shadow(scorer, pointers.share)
        if shadow is not None:
            _remove(self.metrics, "challenger", *_labels(shadow.scorer))
        self.metrics.model_info.labels("challenger", *_labels(scorer)).set(1)
        self.metrics.model_swaps.labels("challenger").inc()
        log.info("shadow scoring %s on %.0f%% of decisions", scorer.label,
                 100 * pointers.share, extra={"model": scorer.label})

    async def _load(self, version: str, role: str) -> OnnxScorer | None:
        try:
            return await asyncio.to_thread(self._load_and_warm, version)
        except ModelError as exc:
            self.metrics.model_load_failures.labels(role).inc()
            log.error("cannot load %s v%s as %s, still serving v%s: %s", self.registry.name,
                      version, role, self.engine.scorer.version, exc.message)
            return None

    def _load_and_warm(self, version: str) -> OnnxScorer:
        scorer = self.registry.load(version)
        try:
            scorer.logits(np.zeros((WARMUP_ROWS, len(self.registry.columns)), dtype=np.float32))
        except Exception as exc:  # onnxruntime raises its own untyped errors
            raise ModelError(f"{scorer.label} fails its warm-up run: {exc}") from exc
        return scorer


def _remove(metrics: Metrics, role: str, *labels: str) -> None:
    with contextlib.suppress(KeyError):
        metrics.model_info.remove(role, *labels)


def _labels(scorer: OnnxScorer) -> tuple[str, str, str]:
    return scorer.manifest.name, scorer.version, scorer.manifest.sha256[:16]
