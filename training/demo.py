"""Prepare an example world: data, online store, a champion model, where missing.

What `nextbest demo [--example retail|telco]` does before it serves, and what
`nextbest simulate --start` does before it starts a service: both need the same world,
so it is prepared in one place, below the command line that calls it.

`retail` is the default and uses the configured directories as they are (today's demo);
another example keeps its data and models apart, in `<data_dir>/<example>` and
`<models_dir>/<example>`, and serves its shipped world (`features/worlds/<example>.yaml`),
so both can be prepared side by side (and, with a Redis, share it: their Feast projects
differ).
"""

from __future__ import annotations

import json
import logging
import time
from pathlib import Path

from features.config import DEFAULT_WORLD, WORLDS_DIR, configured_world, interactions_path
from features.encoding import Encoder
from features.store import apply_and_materialize
from service.manifest import MANIFEST_FILE, ModelManifest, encoding_fingerprint, read_manifest, versions
from service.registry import registry_for
from service.settings import Settings
from training.demo_data import generate
from training.train import train
from training.world import DEFAULT_ACTIONS
from training.worlds import EXAMPLES, WORLD_FILE

log = logging.getLogger("nextbest")


class ExampleRefused(ValueError):
    """An example that cannot run as configured; the message is one line saying why."""


def example_settings(settings: Settings, example: str = DEFAULT_WORLD) -> Settings:
    """The settings the example `example` runs with.

    The default example is the configured service as it is. Another one names its
    shipped world file and keeps its data and models in `<data_dir>/<example>` and
    `<models_dir>/<example>`; a `NEXTBEST_CONFIG` naming any other file is refused.
    """
    if example not in EXAMPLES:
        raise ExampleRefused(f"no example world {example!r}; choose one of {', '.join(EXAMPLES)}")
    if example == DEFAULT_WORLD:
        return settings
    shipped = WORLDS_DIR / f"{example}.yaml"
    if settings.config is not None and Path(settings.config).resolve() != shipped.resolve():
        raise ExampleRefused(
            f"the {example} example serves its own world ({shipped}); NEXTBEST_CONFIG names "
            f"{settings.config}: unset it or point it at that file")
    return settings.model_copy(update={
        "config": shipped, "data_dir": settings.data_dir / example,
        "models_dir": settings.models_dir / example, "catalog_path": None,
    })


def prepare_demo(settings: Settings, force: bool = False, example: str = DEFAULT_WORLD,
                 n_actions: int | None = None) -> None:
    """Generate the example's data, load the online store, train a model and promote it to
    champion, where missing (a champion trained on other input columns or encodings than
    the configured world's counts as missing; one from before manifests recorded the
    encoding does not, when its columns match). `settings` are the example's
    (`example_settings`). Registering never promotes elsewhere: the demo promotes the
    model it trains, and the newest one when nothing was ever promoted. `n_actions`: a
    scaled catalog (retail only); data generated for another size is generated anew, with
    its online store and model."""
    data_dir = settings.data_dir
    world = configured_world(settings.config)
    if n_actions is not None and _generated_actions(data_dir) not in (None, n_actions):
        log.info("the data in %s has another catalog size: generating it anew", data_dir)
        force = True
    if force or not (settings.catalog_file.is_file() and interactions_path(data_dir).is_file()):
        log.info("generating %s demo data in %s", example, data_dir)
        generate(data_dir, example=example, n_actions=n_actions)
    online_db = data_dir / "feast" / "online.db"
    if force or settings.redis_url or not online_db.is_file():
        target = "Redis" if settings.redis_url else "SQLite"
        log.info("feast apply + materialize into the %s online store", target)
        t = time.perf_counter()
        apply_and_materialize(world, data_dir, settings.redis_url, settings.redis_cluster)
        log.info("materialized in %.1f s", time.perf_counter() - t)
    encoder = Encoder(world)
    with registry_for(settings, world, encoder) as registry:
        champion = registry.pointers().champion
        found = versions(settings.models_dir, settings.model_name)
        # the champion, or (models registered before the registry had pointers) the newest
        serving = champion if champion is not None else (str(found[-1]) if found else None)
        directory = settings.models_dir / settings.model_name / serving if serving else None
        stale = directory is not None and (not (directory / MANIFEST_FILE).is_file()
                                           or _stale(read_manifest(directory), encoder))
        if stale:
            log.info("model v%s was trained on other input columns or encodings: training a "
                     "new version", serving)
        if force or stale or serving is None:
            log.info("training the demo model into %s", settings.models_dir)
            _, manifest = train(data_dir, settings.models_dir, settings.model_name,
                                redis_url=settings.redis_url, world=world)
            serving = manifest.version
        if serving != champion:
            assert serving is not None
            registry.promote(serving)
            log.info("the demo promoted %s v%s to champion", settings.model_name, serving)


def _generated_actions(data_dir: Path) -> int | None:
    """How many actions the data in `data_dir` was generated with (None: no data)."""
    saved = data_dir / WORLD_FILE
    if not saved.is_file():
        return None
    return int(json.loads(saved.read_text()).get("n_actions", DEFAULT_ACTIONS))


def _stale(manifest: ModelManifest, encoder: Encoder) -> bool:
    if manifest.columns != encoder.columns:
        return True
    trained = manifest.encoding_fingerprint
    return trained is not None and trained != encoding_fingerprint(encoder.encoding)
