"""Building the service's collaborators from settings, and tearing them down.

The app's lifespan calls `Runtime.start()`; tests may build a Runtime themselves with
their own settings and a Redis on a private port.
"""

from __future__ import annotations

import asyncio
import gc
import logging
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from features.config import World, configured_world, interactions_path
from features.encoding import Encoder
from features.online import (
    EntityLayout,
    OnlineFeatureReader,
    RedisFeatureReader,
    SqliteFeatureReader,
)
from service.action_features import ActionFeatureCache
from service.candidates import CandidateSelection, co_purchase_of
from service.catalog import Catalog
from service.catalog_admin import CatalogAdmin, build, import_file
from service.catalog_store import CatalogStore, catalog_store
from service.catalog_watch import CatalogWatcher
from service.contacts import ContactLedger
from service.control import ControlGroup
from service.customer_features import CustomerFeatureService
from service.decision_log import DecisionLog
from service.eligibility import Eligibility
from service.engine import DecisionEngine
from service.export_status import ExportStatus
from service.feedback import FeedbackService
from service.feedback_loop import FeedbackLoop
from service.health import RedisStoreProbe, StateProbe, StoreHealth, StoreProbe
from service.insights import CountStore, Insights, Labels, MemoryCounts, RedisCounts
from service.learner import EXPOSURE_PRIOR, OnlineLearner, learner_tables
from service.limits import Limiter
from service.loop_lag import watch as watch_loop_lag
from service.metrics import Metrics
from service.model_watch import ModelWatcher, starting_models
from service.rate_limit import MemoryRateLimiter, RateLimiter, RedisRateLimiter
from service.registry import registry_for
from service.schemas import RequestModels, request_models
from service.settings import Settings
from service.shutdown import close_within, stop_tasks
from service.snapshots import Snapshots, SnapshotStore
from service.state import Record, StateStore, stream_position
from service.state.cluster_resp import ClusterRespConnections
from service.state.counters import CounterStore, MemoryCounters, RedisCounters
from service.state.memory import MemoryState
from service.state.redis_store import RedisState
from service.state.resp import RespConnection

log = logging.getLogger(__name__)

#: seconds between progress lines while a starting replica replays the feedback stream
REPLAY_REPORT_SECONDS = 5.0


def redis_client(settings: Settings, timeout: float = 5.0, decision_path: bool = False,
                 single_connection: bool = False) -> Any:
    """An asyncio Redis (or Redis Cluster) client for the configured URL.

    No health-check PING before commands: redis-py retries a command once its connection
    turns out broken, and the PING cost a round trip's worth of CPU on busy connections.
    `decision_path=True` (customer features): no retries either, so `timeout` bounds a
    read, and the caller serves defaults instead of waiting for reconnects and backoff.
    `single_connection=True`: commands take turns on one connection instead of taking one
    from a pool, which spares redis-py the pool's locking, bookkeeping and a liveness read
    per checkout on every command; concurrent commands wait for the one before them (a
    whole round trip each), so never use it for blocking commands.
    Cluster clients keep their per-node pools.
    """
    import redis.asyncio as aioredis
    from redis.asyncio.retry import Retry
    from redis.backoff import NoBackoff

    assert settings.redis_url
    options: dict[str, Any] = {"socket_timeout": timeout, "socket_connect_timeout": timeout}
    if decision_path:
        options["retry"] = Retry(NoBackoff(), 0)
    if settings.redis_cluster:
        return aioredis.RedisCluster.from_url(settings.redis_url, **options)
    return aioredis.from_url(settings.redis_url, health_check_interval=0,
                             single_connection_client=single_connection, **options)


def stream_reader(settings: Settings, client: Any) -> Any:
    """The client the learner's blocking feedback stream reads go through.

    On a single node with a plain redis:// URL a lean connection of its own
    (`service/state/resp.py`): the learner sends a read per event at low rates, and
    redis-py's layers cost several times its client CPU per read; its timeout, redis-py's
    socket timeout, stays well above the read's own block. Its own, because a blocking
    read holds up every command behind it on a connection. Elsewhere `client` (a pool).
    """
    url = settings.redis_url or ""
    if settings.redis_cluster or not url.startswith("redis://") or "?" in url:
        return client
    return RespConnection(url, timeout=5.0, retry_on_disconnect=True)


def hot_path_clients(settings: Settings) -> tuple[Any, Any]:
    """(customer reads, state writes): the connections most requests send a command on.

    On a single node, lean pipelined connections (`service/state/resp.py`: less client
    CPU per command than redis-py, measured by `load_tests/resp_bench.py`); the reads get
    no retry, so the decision path's timeout bounds them and a failed read serves
    defaults. On a Redis Cluster the reads (with caps, budgets and rate limits) get one
    such connection per master (`service/state/cluster_resp.py`), the writes redis-py's
    cluster client (pipelines across masters). URLs other than redis:// and URLs with
    query options (which only redis-py reads) keep redis-py's clients.
    """
    url = settings.redis_url or ""
    lean = url.startswith("redis://") and "?" not in url
    if settings.redis_cluster:
        fast = (ClusterRespConnections(url, settings.redis_timeout_seconds) if lean else
                redis_client(settings, settings.redis_timeout_seconds, decision_path=True))
        return fast, redis_client(settings, single_connection=True)
    if lean:
        return (RespConnection(url, settings.redis_timeout_seconds),
                RespConnection(url, retry_on_disconnect=True))
    return (redis_client(settings, settings.redis_timeout_seconds, decision_path=True,
                         single_connection=True),
            redis_client(settings, single_connection=True))


def starting_catalog(store: CatalogStore, settings: Settings, world: World) -> Catalog:
    """The catalog a starting replica serves: the store's current version, after the
    catalog file was imported if its content is new (`service/catalog_admin.py`)."""
    stored = import_file(store, settings.catalog_file, world)
    try:
        return build(stored, world)
    except ValueError as exc:
        raise ValueError(f"catalog version {stored.version} in {store.where} does not fit "
                         f"the world: {exc}") from None


@dataclass
class _AsyncCloser:
    client: Any

    async def close(self) -> None:
        await self.client.aclose()


@dataclass
class Runtime:
    settings: Settings
    metrics: Metrics
    state: StateStore
    engine: DecisionEngine
    feedback: FeedbackService
    feedback_loop: FeedbackLoop
    decision_log: DecisionLog
    action_cache: ActionFeatureCache
    world: World
    requests: RequestModels
    health: StoreHealth
    snapshots: Snapshots | None = None
    export_status: ExportStatus | None = None
    #: follows the registry's pointers (None: a pinned version, not watched)
    model_watcher: ModelWatcher | None = None
    rate_limiter: RateLimiter = field(default_factory=MemoryRateLimiter)
    #: the catalog's versions and audit trail, what the admin API changes
    catalog_admin: CatalogAdmin | None = None
    #: follows the catalog store's current version
    catalog_watcher: CatalogWatcher | None = None
    #: the counts behind the uplift report and the touchpoint insights
    insights: Insights | None = None
    closers: list[Any] = field(default_factory=list)
    tasks: list[asyncio.Task[None]] = field(default_factory=list)
    ready: bool = False
    started_at: float = field(default_factory=time.time)

    @classmethod
    def build(cls, settings: Settings, metrics: Metrics, world: World | None = None,
              requests: RequestModels | None = None) -> Runtime:
        """Everything the service runs on, from `settings` (and the world they name, or
        `world` when the caller already loaded it, with its `requests` models)."""
        world = world if world is not None else configured_world(settings.config)
        requests = requests if requests is not None else request_models(world)
        store = catalog_store(settings.redis_url, settings.redis_cluster, settings.catalog_file)
        try:
            catalog = starting_catalog(store, settings, world)
        except BaseException:
            store.close()
            raise
        encoder = Encoder(world)
        registry = registry_for(settings, world, encoder)
        try:
            scorer, shadow, revision = starting_models(registry, settings.model_version)
        except BaseException:
            registry.store.close()
            store.close()
            raise
        # A world without a customer entity reads no customer features at all.
        customers = (EntityLayout.of(world, world.customer_entity)
                     if world.customer_entity is not None else None)
        actions = EntityLayout.of(world, world.action_entity)
        closers: list[Any] = [registry.store, store]
        customer_reader: OnlineFeatureReader | None = None
        action_reader: OnlineFeatureReader
        state: StateStore
        export_source: Any  # what the export gauges read: Redis, or the embedded streams
        counters: CounterStore
        rate_limiter: RateLimiter = MemoryRateLimiter()
        insight_counts: CountStore
        if settings.redis_url:
            # Customer reads get their own connection with the decision path's tight
            # timeout; state writes a patient one; blocking stream reads another (a
            # patient pool's on a cluster), and the action refresh a patient pool.
            client = redis_client(settings)
            fast, writer = hot_path_clients(settings)
            reader = stream_reader(settings, client)
            state = RedisState(writer, settings.decision_ttl_seconds, settings.feedback_stream_maxlen,
                               scripted=not settings.redis_cluster, reader=reader)
            if customers is not None:
                customer_reader = RedisFeatureReader(fast, customers)
            # caps and budgets: the decision path's tight timeout (refused on a timeout)
            counters = RedisCounters(fast, scripted=not settings.redis_cluster)
            if settings.rate_limits_in_redis:
                # The customer reads' connection: pipelined, and its timeout bounds a check.
                rate_limiter = RedisRateLimiter(fast, on_fallback=metrics.rate_limit_fallbacks.inc)
            action_reader = RedisFeatureReader(client, actions)
            insight_counts = RedisCounts(client)
            closers += [state, _AsyncCloser(fast)]
            if reader is not client:  # the state closes its writer and its reader only
                closers.append(_AsyncCloser(client))
            export_source = client
        else:
            online_db = settings.data_dir / "feast" / "online.db"
            sqlite_actions = SqliteFeatureReader(online_db, actions)
            action_reader = sqlite_actions
            memory = MemoryState(settings.decision_ttl_seconds,
                                 max_decisions=settings.memory_decision_log_max,
                                 max_feedback=settings.feedback_stream_maxlen)
            state, export_source = memory, memory.streams
            counters = MemoryCounters()
            insight_counts = MemoryCounts()
            closers += [sqlite_actions, state]
            if customers is not None:
                sqlite_customers = SqliteFeatureReader(online_db, customers)
                customer_reader = sqlite_customers
                closers.append(sqlite_customers)
        # Offline-only serving means no online correction at all, fatigue prior included.
        # Actions of one `learner.group_by` value (retail: the catalog category) share a
        # learned weight (see service/learner.py).
        group_by = world.learner.group_by
        learner = OnlineLearner(
            catalog.ids, learner_tables(world), learning_rate=settings.learning_rate,
            exposure_prior=EXPOSURE_PRIOR if settings.online_learning else 0.0,
            groups=catalog.groups(group_by) if group_by is not None else None,
            exposure_cap=world.learner.exposure_cap,
        )
        contacts = ContactLedger(
            catalog.ids, settings.contact_window_seconds, settings.contact_suppress_seconds,
            settings.contact_cooldown_seconds, settings.contact_max_customers,
        ) if settings.contact_policy else None
        if contacts is not None:
            contacts.policies(catalog.limits.dismiss_seconds, catalog.limits.accept_seconds)
        limiter = Limiter(counters)
        snapshots = None
        export_status = ExportStatus(export_source, metrics)
        if settings.redis_url and settings.snapshot_seconds > 0 and settings.folds_feedback:
            snapshots = Snapshots(
                SnapshotStore(client), settings.snapshot_seconds, metrics,
                learner if settings.online_learning else None, contacts,
            )
            metrics.snapshot_interval.set(settings.snapshot_seconds)
        decision_log = DecisionLog(
            state, linger_seconds=settings.decision_log_linger_seconds,
            recent=settings.recent_decisions, ttl_seconds=settings.decision_ttl_seconds,
            max_queue=settings.spool_max_records, metrics=metrics,
        )
        action_cache = ActionFeatureCache(action_reader, catalog, encoder,
                                          settings.action_refresh_seconds, metrics)
        probe: StoreProbe = StateProbe(state)
        if settings.redis_url:
            # its own connections, the check's own timeout, no retries: a check never
            # waits behind the service's traffic, nor for longer than it allows
            health_client = redis_client(settings, settings.health_timeout_seconds,
                                         decision_path=True)
            layouts = {e: EntityLayout.of(world, e) for e in (world.customer_entity,
                                                              world.action_entity) if e}
            probe = RedisStoreProbe(health_client, world.project, layouts, world.action_entity,
                                    catalog.ids)
            closers.append(_AsyncCloser(health_client))
        health = StoreHealth(probe, metrics, settings.health_interval_seconds,
                             settings.health_timeout_seconds, action_cache)
        customer_features = CustomerFeatureService(
            customer_reader, encoder, settings.customer_max_age_seconds, settings.customer_cache_seconds,
            settings.customer_cache_size, stale_seconds=settings.customer_cache_stale_seconds,
            lookups=metrics.customer_cache,
        )
        metrics.customer_cache_entries.set_function(lambda: len(customer_features))
        closers.insert(0, customer_features)  # its background reads stop before the clients close
        engine = DecisionEngine(
            catalog=catalog,
            actions=action_cache,
            customers=customer_features,
            scorer=scorer,
            learner=learner,
            eligibility=Eligibility(catalog),
            log=decision_log,
            metrics=metrics,
            encoder=encoder,
            epsilon=settings.epsilon,
            explore_top=settings.explore_top,
            rng=np.random.default_rng(settings.seed),
            contacts=contacts,
            shadow=shadow,
            limiter=limiter,
            control=(ControlGroup(settings.control_share, settings.control_policy, settings.control_salt)
                     if settings.control_share > 0 else None),
            health=health,
            selection=cls._selection(settings, world, encoder, requests),
        )

        def kind_of(action_id: str) -> str | None:
            c = engine.catalog  # the catalog serving now
            row = c.index.get(action_id)
            return c.kind[row] if row is not None else None

        insights = Insights(insight_counts, metrics, Labels.of(world, catalog.kind), kind_of,
                            settings.insights_flush_seconds, settings.insights_retention_hours)
        decision_log.on_written = insights.decided

        async def spend(events: Sequence[Record]) -> None:
            c = engine.catalog  # the catalog serving now
            if c.limits.active:
                await limiter.spend(c.limits, c.index, events)

        metrics.model_info.labels(
            "offline", scorer.manifest.name, scorer.version, scorer.manifest.sha256[:16]
        ).set(1)
        if shadow is not None:
            metrics.model_info.labels("challenger", shadow.scorer.manifest.name,
                                      shadow.scorer.version, shadow.scorer.manifest.sha256[:16]).set(1)
        watcher = (ModelWatcher(registry, engine, metrics, settings.model_watch_seconds, revision)
                   if settings.model_version is None else None)
        metrics.catalog_version.set(int(catalog.version))
        return cls(
            settings=settings, metrics=metrics, state=state, engine=engine,
            feedback=FeedbackService(state, decision_log, metrics,
                                     max_spooled=settings.spool_max_records,
                                     write_timeout=settings.feedback_write_timeout_seconds,
                                     max_skew=settings.feedback_max_skew_seconds, spend=spend,
                                     observe=insights.observed),
            feedback_loop=FeedbackLoop(state, learner, metrics, contacts=contacts,
                                       learn=settings.online_learning,
                                       read_interval=settings.learner_read_interval_seconds,
                                       snapshots=snapshots),
            world=world, requests=requests, health=health, snapshots=snapshots,
            export_status=export_status,
            decision_log=decision_log, action_cache=action_cache, closers=closers,
            model_watcher=watcher, rate_limiter=rate_limiter,
            catalog_admin=CatalogAdmin(store, world),
            catalog_watcher=CatalogWatcher(store, engine, world, metrics,
                                           settings.catalog_watch_seconds, int(catalog.version)),
            insights=insights,
        )

    @staticmethod
    def _selection(settings: Settings, world: World, encoder: Encoder,
                   requests: RequestModels) -> CandidateSelection | None:
        """The candidate selection step (None: MAX_SCORED 0, every action scored)."""
        if settings.max_scored == 0:
            return None
        log_path = interactions_path(settings.data_dir)
        action_key = world.join_key(world.action_entity)
        return CandidateSelection(
            settings.max_scored, encoder, requests.decision.placements_by_channel,
            requests.warmup().context, settings.candidate_refresh_seconds,
            lambda: co_purchase_of(log_path, encoder.basket, action_key))

    async def start(self) -> None:
        """Connect, load action features, start background work, warm up, turn ready."""
        await self.state.ping()
        await self.action_cache.load()
        await self.health.check()
        self.tasks = [
            asyncio.create_task(self.health.run(), name="health"),
            asyncio.create_task(self.decision_log.run(), name="decision-log"),
            asyncio.create_task(self.feedback.run(), name="feedback-spool"),
            asyncio.create_task(self.action_cache.run(), name="action-features"),
            asyncio.create_task(self._report_cache_age(), name="cache-age"),
        ]
        if self.export_status is not None:
            self.tasks.append(asyncio.create_task(self.export_status.run(), name="export-status"))
        if self.insights is not None:
            self.tasks.append(asyncio.create_task(self.insights.run(), name="insights"))
        if self.model_watcher is not None:
            self.tasks.append(asyncio.create_task(self.model_watcher.run(), name="model-watch"))
        if self.catalog_watcher is not None:
            self.tasks.append(asyncio.create_task(self.catalog_watcher.run(), name="catalog-watch"))
        if self.settings.loop_lag_interval_seconds > 0:
            self.tasks.append(asyncio.create_task(
                watch_loop_lag(self.metrics.loop_lag.observe,
                               self.settings.loop_lag_interval_seconds), name="loop-lag"))
        replayed = 0
        if self.settings.folds_feedback:
            replayed = await self._replay_feedback()
            self.tasks.append(asyncio.create_task(self.feedback_loop.run(), name="feedback-loop"))
        selection = self.engine.selection
        if selection is not None:  # rankings before the first decision, then kept fresh
            await selection.refresh_if_stale(self.engine)
            self.tasks.append(asyncio.create_task(selection.run(self.engine), name="candidates"))
        await self.engine.decide(self.requests.warmup(), record=False)
        # Everything loaded so far lives as long as the process: move it out of the
        # collector's way, so full collections do not pause decisions for tens of ms.
        gc.collect()
        gc.freeze()
        self.ready = True
        self.metrics.ready.set(1)
        log.info("ready", extra={"startup_seconds": round(time.time() - self.started_at, 3),
                                 "state": self.state.backend, "replayed_events": replayed,
                                 "model": self.engine.model_versions["offline"]})

    async def _replay_feedback(self) -> int:
        """Fold in the feedback stream as it stands before turning ready.

        Until then this replica's learner and contact ledger miss what the others know:
        it would offer again what a customer dismissed on another channel minutes ago.
        """
        started = last_report = time.monotonic()
        restored = await self.snapshots.restore() if self.snapshots is not None else None
        if restored is not None:
            self.feedback_loop.position = restored
        bounds = await self.state.feedback_bounds()
        if bounds is None:
            return 0
        oldest, end = bounds
        if restored is not None and stream_position(oldest) > stream_position(restored):
            log.warning("the snapshot is older than the feedback stream's oldest event: events "
                        "after it may have been trimmed, and are then lost to this replica",
                        extra={"snapshot_position": restored, "oldest": oldest})

        def progress(events: int, position: str) -> None:
            nonlocal last_report
            if time.monotonic() - last_report >= REPLAY_REPORT_SECONDS:
                last_report = time.monotonic()
                log.info("replaying the feedback stream", extra={
                    "replayed_events": events, "position": position, "end": end})

        replayed = await self.feedback_loop.catch_up(end, progress)
        self.metrics.replayed_events.set(replayed)
        seconds = time.monotonic() - started
        log.info("feedback stream replayed", extra={
            "replayed_events": replayed, "seconds": round(seconds, 3),
            "events_per_second": round(replayed / seconds) if seconds > 0 else None})
        return replayed

    def readiness(self) -> dict[str, object]:
        """What `/readyz` answers (200) once ready: read from the last health check, no
        call to the state backend (`service/health.py`)."""
        h = self.health
        return {"status": "ready", "state": self.state.backend,
                "state_backend": "up" if h.backend_up else "down",
                "online_store": "empty" if h.store_empty else "ok",
                "degraded": list(h.degraded),
                "checked_seconds_ago": round(time.time() - h.checked_at, 3),
                "models": self.engine.model_versions}

    async def _report_cache_age(self) -> None:
        while True:
            self.metrics.action_features_age.set(time.time() - self.action_cache.loaded_at)
            await asyncio.sleep(5.0)

    async def stop(self) -> None:
        """Stop background work, write what is queued, close the clients, each bounded.

        The background tasks stop before any client closes (`service/shutdown.py`: one
        cancel may be lost on Python 3.11); each flush and each close gets the shutdown
        timeout, so a store that stopped answering cannot hold up the process' exit.
        """
        self.ready = False
        self.metrics.ready.set(0)
        timeout = self.settings.shutdown_timeout_seconds
        for t in await stop_tasks(self.tasks, timeout):
            log.error("background task %s did not stop within %.1f s", t.get_name(), timeout)
        # the decision log and the feedback spool count what their flush could not write
        await self.decision_log.flush(timeout)
        await self.feedback.flush(timeout)
        steps: list[Callable[[], Any]] = [c.close for c in self.closers]
        if self.insights is not None:
            steps.insert(0, self.insights.flush)
        for step in steps:
            name = getattr(step, "__qualname__", repr(step))
            try:
                if not await close_within(step, timeout):
                    log.error("%s did not finish within %.1f s at shutdown", name, timeout)
            except Exception:  # shutting down: the next step still runs
                log.debug("%s failed at shutdown", name, exc_info=True)
