"""Every Prometheus metric nextbest exports, in one place.

Names follow the Prometheus conventions (`_seconds`, `_total`); buckets are explicit and
tuned for the decision path's latencies (its goals and measurements: docs/benchmarks.md).
Metrics live in a `Metrics` object bound to a registry so tests (and several apps in one
process) do not collide on the global registry. `Metrics.stages()` times the steps of one
decision (one clock read per step, observed together at the end) and counts a failed
step. The stage histogram is our own collector (`StageHistogram`): prometheus_client's
`Histogram.observe` takes a lock per call, which the decision path would pay once per
stage (measured by `nextbest bench --breakdown`). For the same reason the counters the
decision path bumps on every decision are `LoopCounter`s: plain dicts, updated only from
the event loop's thread, exposed exactly like prometheus_client's counters.

The exported series (name, type, labels, help) are listed in docs/metrics.md, generated
from this module; the chart's dashboards, recording rules and alerts are built on them.
"""

from __future__ import annotations

import logging
import time
from bisect import bisect_left
from collections.abc import Iterator, Sequence
from types import TracebackType

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, values
from prometheus_client.core import CounterMetricFamily, HistogramMetricFamily
from prometheus_client.registry import Collector
from prometheus_client.utils import floatToGoString

log = logging.getLogger(__name__)

LATENCY_BUCKETS = (
    0.0005, 0.001, 0.002, 0.003, 0.005, 0.0075, 0.01, 0.015, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0,
)
STAGE_BUCKETS = (
    0.00002, 0.00005, 0.0001, 0.0002, 0.0005, 0.001, 0.002, 0.005, 0.01, 0.025, 0.1,
)
LAG_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)

STAGES = (
    "candidates", "customer", "eligibility", "contacts", "features", "offline", "online",
    "arbitration", "exploration", "limits", "response", "log",
)


class Metrics:
    """The service's metrics, registered on one registry."""

    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self.registry = registry if registry is not None else CollectorRegistry()
        if getattr(values.ValueClass, "_multiprocess", False):
            log.warning(
                "prometheus_client runs in multiprocess mode (PROMETHEUS_MULTIPROC_DIR is set, "
                "perhaps by `import feast`): metrics cost more and are shared between registries"
            )
        r = self.registry
        self.http_latency = Histogram(
            "nextbest_http_request_duration_seconds",
            "HTTP request latency by endpoint and channel.",
            ["endpoint", "method", "status", "channel"], buckets=LATENCY_BUCKETS, registry=r,
        )
        self.stage_latency = StageHistogram(
            "nextbest_stage_duration_seconds",
            "Latency of one step of the decision path.",
            STAGES, STAGE_BUCKETS,
        )
        r.register(self.stage_latency)
        self.stage_failures = Counter(
            "nextbest_stage_failures_total", "Failures inside one step of the decision path.",
            ["stage"], registry=r,
        )
        self.decisions = LoopCounter(
            "nextbest_decisions_total", "Decisions served.", ["channel"], registry=r,
        )
        self.degraded = LoopCounter(
            "nextbest_degraded_decisions_total",
            "Decisions served with a degradation (unknown customer, stale features, ...).",
            ["channel", "reason"], registry=r,
        )
        self.degraded_responses = LoopCounter(
            "nextbest_degraded_responses_total",
            "Decisions served degraded for a reason other than an anonymous caller "
            "(each decision counts once, whatever the number of reasons).",
            ["channel"], registry=r,
        )
        self.customer_cache = LoopCounter(
            "nextbest_customer_cache_lookups_total",
            "Customer feature lookups of known customers by the in-process cache's answer: "
            "hit, stale (an expired entry served while it is read again) or miss (a store "
            "read on the decision path).", ["result"], registry=r,
        )
        self.customer_cache_entries = Gauge(
            "nextbest_customer_cache_entries",
            "Customers in the in-process feature cache (at most NEXTBEST_CUSTOMER_CACHE_SIZE).",
            registry=r,
        )
        self.exploration = LoopCounter(
            "nextbest_exploration_picks_total", "Actions shown by exploration, not by rank.",
            ["channel"], registry=r,
        )
        self.contact_suppressed = LoopCounter(
            "nextbest_contact_suppressed_candidates_total",
            "Candidates dropped by the contact policy (dismissed on some channel, cool-down).",
            ["channel"], registry=r,
        )
        self.feedback = Counter(
            "nextbest_feedback_events_total", "Feedback events accepted.",
            ["outcome", "channel", "journey_stage"], registry=r,
        )
        self.group_decisions = LoopCounter(
            "nextbest_group_decisions_total",
            "Decisions logged, by group (`treatment`, or `control`: the baseline policy) and "
            "channel; counted by the replica that wrote the record.",
            ["group", "channel"], registry=r,
        )
        self.group_outcomes = LoopCounter(
            "nextbest_group_outcomes_total",
            "Feedback events applied, by group, channel and outcome (each event once, by the "
            "replica that accepted it).", ["group", "channel", "outcome"], registry=r,
        )
        self.group_value = LoopCounter(
            "nextbest_group_value_total", "Value carried by applied feedback events, by group "
            "and channel.", ["group", "channel"], registry=r,
        )
        self.touchpoint_events = LoopCounter(
            "nextbest_touchpoint_events_total",
            "Feedback events applied, by touchpoint: channel, journey stage and action kind "
            "(values outside the world's vocabularies: `other`), and outcome.",
            ["channel", "journey_stage", "kind", "outcome"], registry=r,
        )
        self.touchpoint_value = LoopCounter(
            "nextbest_touchpoint_value_total",
            "Value carried by applied feedback events, by channel, journey stage and action kind.",
            ["channel", "journey_stage", "kind"], registry=r,
        )
        self.feedback_rejected = Counter(
            "nextbest_feedback_rejected_total",
            "Feedback events refused (unknown decision, action not shown).",
            ["reason"], registry=r,
        )
        self.feedback_duplicates = Counter(
            "nextbest_feedback_duplicates_total",
            "Feedback events accepted but not applied again: their key was applied before "
            "(a retry, a resend, a repeat in a batch).", registry=r,
        )
        self.spooled = Counter(
            "nextbest_spooled_total",
            "Decision records and feedback events held back in the process because the state "
            "store did not take them (Redis away or stalled); written when it returns.",
            ["kind"], registry=r,
        )
        self.spool_written = Counter(
            "nextbest_spool_written_total",
            "Spooled decision records and feedback events written once the store took them.",
            ["kind"], registry=r,
        )
        self.spool_dropped = Counter(
            "nextbest_spool_dropped_total",
            "Decision records not kept (the spool was full, or the process stopped before "
            "the store returned) and feedback events refused with 503 (the spool was full).",
            ["kind"], registry=r,
        )
        self.spool_depth = Gauge(
            "nextbest_spool_depth",
            "Decision records and feedback events waiting in the process to be written.",
            ["kind"], registry=r,
        )
        self.errors = Counter(
            "nextbest_errors_total", "Error responses by endpoint and status.",
            ["endpoint", "status"], registry=r,
        )
        self.api_keys = Gauge(
            "nextbest_api_keys", "API keys in force (0: requests need no key).", registry=r,
        )
        self.api_key_reloads = Counter(
            "nextbest_api_key_reloads_total",
            "Reloads of the API key file after it changed: `ok`, or `failed` (the keys in "
            "force stay; the log says why).", ["result"], registry=r,
        )
        self.rate_limited = Counter(
            "nextbest_rate_limited_total", "Requests refused with 429 by their key's rate limit.",
            ["key"], registry=r,
        )
        self.rate_limit_fallbacks = Counter(
            "nextbest_rate_limit_fallbacks_total",
            "Rate-limit checks made in-process because Redis did not answer in time.",
            registry=r,
        )
        self.model_info = Gauge(
            "nextbest_model_info", "Models in use (value is always 1): the champion served "
            "(`offline`) and the challenger scored in shadow, if any.",
            ["role", "name", "version", "sha256"], registry=r,
        )
        self.model_swaps = Counter(
            "nextbest_model_swaps_total",
            "Models this replica swapped in while serving, following the registry's pointers.",
            ["role"], registry=r,
        )
        self.model_load_failures = Counter(
            "nextbest_model_load_failures_total",
            "Promoted models this replica could not load (it kept serving the one before).",
            ["role"], registry=r,
        )
        self.model_pointer_errors = Counter(
            "nextbest_model_pointer_errors_total",
            "Failed reads of the registry's champion and challenger pointers.", registry=r,
        )
        self.catalog_version = Gauge(
            "nextbest_catalog_version", "The catalog version this replica serves.", registry=r,
        )
        self.catalog_swaps = Counter(
            "nextbest_catalog_swaps_total",
            "Catalog versions this replica swapped in while serving.", registry=r,
        )
        self.catalog_load_failures = Counter(
            "nextbest_catalog_load_failures_total",
            "Catalog versions this replica could not build (it kept serving the one before).",
            registry=r,
        )
        self.catalog_read_errors = Counter(
            "nextbest_catalog_read_errors_total",
            "Failed reads of the catalog store's current version.", registry=r,
        )
        self.learner_updates = Counter(
            "nextbest_learner_updates_total", "Feedback events learned by the online learner.",
            registry=r,
        )
        self.learner_lag = Histogram(
            "nextbest_learner_lag_seconds",
            "Time from feedback accepted to learned by this replica's learner.",
            buckets=LAG_BUCKETS, registry=r,
        )
        self.feedback_backlog = Gauge(
            "nextbest_feedback_backlog",
            "Feedback events accepted but not yet learned by this replica.", registry=r,
        )
        self.replayed_events = Gauge(
            "nextbest_replayed_events",
            "Feedback events this replica replayed at start-up, after the snapshot it "
            "restored (if any).", registry=r,
        )
        self.snapshots_written = Counter(
            "nextbest_snapshots_written_total",
            "Learner and contact-ledger snapshots this replica wrote.", registry=r,
        )
        self.snapshot_bytes = Gauge(
            "nextbest_snapshot_bytes",
            "Size of the last snapshot this replica wrote or restored.", registry=r,
        )
        self.snapshot_interval = Gauge(
            "nextbest_snapshot_interval_seconds",
            "How often one replica writes a snapshot (0: this replica takes no part).",
            registry=r,
        )
        self.action_features_age = Gauge(
            "nextbest_action_features_age_seconds",
            "Seconds since the in-process action feature cache was refreshed.", registry=r,
        )
        self.loop_lag = Histogram(
            "nextbest_event_loop_lag_seconds",
            "How late the event loop ran a due timer: what a request arriving meanwhile "
            "waited before the server read it (the request latency's buckets, to compare).",
            buckets=LATENCY_BUCKETS, registry=r,
        )
        self.export_lag = Gauge(
            "nextbest_export_lag_seconds",
            "Stream time between the newest entry of a stream and the last one `nextbest "
            "export` wrote to Parquet (0: caught up; no series: never exported).",
            ["stream"], registry=r,
        )
        self.export_lost = Gauge(
            "nextbest_export_lost_events",
            "Stream entries trimmed before `nextbest export` wrote them, since the first "
            "export (a running total kept in Redis by the export).",
            ["stream"], registry=r,
        )
        self.action_refresh_kept = Counter(
            "nextbest_action_refresh_kept_total",
            "Action feature refreshes that found no feature of any action in the online "
            "store (emptied) and kept the cached features instead.", registry=r,
        )
        self.state_backend_up = Gauge(
            "nextbest_state_backend_up",
            "1 while the last background health check reached the state backend (Redis) "
            "in time; at 0 decisions are still served, degraded.", registry=r,
        )
        self.online_store_empty = Gauge(
            "nextbest_online_store_empty",
            "1 while the online store looks emptied (materialization mark or most sampled "
            "entities gone, no feature for any action): decisions are flagged "
            "`online_store_empty`.", registry=r,
        )
        self.ready = Gauge(
            "nextbest_ready",
            "1 while /readyz answers 200 (started, model loaded, warmed up; not stopping).",
            registry=r,
        )

    def stages(self) -> StageClock:
        """Time the steps of one decision; count the step that raises as failed."""
        return StageClock(self.stage_latency, self.stage_failures)


class LoopCounter(Collector):
    """A labelled counter without locks, for the event loop's thread only.

    `counter.inc("web")` adds 1 to the series of label values ("web",); scrapes see
    the same `<name>_total` series a prometheus_client Counter exposes (without
    `_created`).
    """

    def __init__(self, name: str, documentation: str, labelnames: Sequence[str],
                 registry: CollectorRegistry) -> None:
        self.name = name.removesuffix("_total")
        self.documentation = documentation
        self.labelnames = list(labelnames)
        self._values: dict[tuple[str, ...], float] = {}
        registry.register(self)

    def inc(self, *labels: str, amount: float = 1.0) -> None:
        if len(labels) != len(self.labelnames):
            raise ValueError(f"{self.name} takes labels {self.labelnames}, got {labels}")
        self._values[labels] = self._values.get(labels, 0.0) + amount

    def value(self, *labels: str) -> float:
        return self._values.get(labels, 0.0)

    def collect(self) -> Iterator[CounterMetricFamily]:
        family = CounterMetricFamily(self.name, self.documentation, labels=self.labelnames)
        for labels, value in self._values.items():
            family.add_metric(list(labels), value)
        yield family


class StageHistogram(Collector):
    """A histogram per stage, observed without locks, exposed like prometheus_client's.

    Observations and scrapes both run on the service's event loop thread, so plain
    lists suffice; `collect` turns them into the usual cumulative `_bucket`, `_sum` and
    `_count` series.
    """

    def __init__(self, name: str, documentation: str, stages: Sequence[str],
                 buckets: Sequence[float]) -> None:
        self.name = name
        self.documentation = documentation
        self._bounds = [*buckets, float("inf")]
        self._counts = {s: [0] * len(self._bounds) for s in stages}
        self._sums = dict.fromkeys(stages, 0.0)

    def observe(self, stage: str, seconds: float) -> None:
        self._counts[stage][bisect_left(self._bounds, seconds)] += 1
        self._sums[stage] += seconds

    def observe_laps(self, start: float, laps: Sequence[tuple[str, float]]) -> None:
        """`observe` each step of `laps` ((stage, clock when it was done), in order), the
        first timed from `start`: one call per decision."""
        bounds, counts, sums = self._bounds, self._counts, self._sums
        last = start
        for stage, t in laps:
            seconds = t - last
            counts[stage][bisect_left(bounds, seconds)] += 1
            sums[stage] += seconds
            last = t

    def collect(self) -> Iterator[HistogramMetricFamily]:
        family = HistogramMetricFamily(self.name, self.documentation, labels=["stage"])
        for stage, counts in self._counts.items():
            cumulative, buckets = 0, []
            for bound, n in zip(self._bounds, counts, strict=True):
                cumulative += n
                buckets.append((floatToGoString(bound), cumulative))
            family.add_metric([stage], buckets, self._sums[stage])
        yield family


_clock = time.perf_counter  # bound once: `done` runs a dozen times per decision


class StageClock:
    """`with metrics.stages() as stage: ...; stage.done("features"); ...`

    Each `done(name)` reads the clock once: the step took the time since the previous
    `done` (or since entering). The steps are observed together on leaving. If the block
    raises, the step after the last one done (in `STAGES` order) is counted as failed.
    """

    __slots__ = ("_histogram", "_failures", "_start", "_laps")

    def __init__(self, histogram: StageHistogram, failures: Counter) -> None:
        self._histogram = histogram
        self._failures = failures
        self._start = 0.0
        self._laps: list[tuple[str, float]] = []

    def __enter__(self) -> StageClock:
        self._start = time.perf_counter()
        return self

    def done(self, stage: str) -> None:
        self._laps.append((stage, _clock()))

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self._histogram.observe_laps(self._start, self._laps)
        if exc_type is not None and issubclass(exc_type, Exception):
            failed = STAGES.index(self._laps[-1][0]) + 1 if self._laps else 0
            self._failures.labels(STAGES[min(failed, len(STAGES) - 1)]).inc()
