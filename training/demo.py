"""Prepare the demo world: data, online store, model, where missing.

What `nextbest demo` does before it serves, and what `nextbest simulate --start` does
before it starts a service: both need the same world, so it is prepared in one place,
below the command line that calls it.
"""

from __future__ import annotations

import logging
import time

from features.config import configured_world, interactions_path
from features.encoding import Encoder
from features.store import apply_and_materialize
from service.manifest import ModelManifest, encoding_fingerprint, read_manifest, versions
from service.settings import Settings
from training.demo_data import generate
from training.train import train

log = logging.getLogger("nextbest")


def prepare_demo(settings: Settings, force: bool = False) -> None:
    """Generate demo data, load the online store and train a model, where missing (a model
    trained on other input columns or encodings than the configured world's counts as
    missing; one from before manifests recorded the encoding does not, when its columns match)."""
    data_dir = settings.data_dir
    world = configured_world(settings.config)
    if force or not (settings.catalog_file.is_file() and interactions_path(data_dir).is_file()):
        log.info("generating demo data in %s", data_dir)
        generate(data_dir)
    online_db = data_dir / "feast" / "online.db"
    if force or settings.redis_url or not online_db.is_file():
        target = "Redis" if settings.redis_url else "SQLite"
        log.info("feast apply + materialize into the %s online store", target)
        t = time.perf_counter()
        apply_and_materialize(world, data_dir, settings.redis_url, settings.redis_cluster)
        log.info("materialized in %.1f s", time.perf_counter() - t)
    found = versions(settings.models_dir, settings.model_name)
    newest = settings.models_dir / settings.model_name / str(found[-1]) if found else None
    encoder = Encoder(world)
    stale = newest is not None and _stale(read_manifest(newest), encoder)
    if stale:
        log.info("the newest model was trained on other input columns or encodings: "
                 "training a new version")
    if force or stale or not found:
        log.info("training the demo model into %s", settings.models_dir)
        train(data_dir, settings.models_dir, settings.model_name, redis_url=settings.redis_url,
              world=world)


def _stale(manifest: ModelManifest, encoder: Encoder) -> bool:
    if manifest.columns != encoder.columns:
        return True
    trained = manifest.encoding_fingerprint
    return trained is not None and trained != encoding_fingerprint(encoder.encoding)
