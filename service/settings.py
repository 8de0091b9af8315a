"""Service settings: environment variables with the `NEXTBEST_` prefix.

Built once by the CLI or the app factory, never at import. Outside `local` mode the
settings refuse defaults that are unsafe in production (no Redis, no API keys). Secrets
(API keys, the log salt) are `SecretStr`: they never show in a repr or a log.
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import Field, SecretStr, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="NEXTBEST_", extra="ignore")

    env: Literal["local", "production"] = Field(
        "local", description="`production` refuses to start without Redis and API keys."
    )
    redis_url: str | None = Field(
        None,
        description="Redis for the Feast online store and all service state, e.g. "
        "redis://127.0.0.1:6379/0. Unset: embedded SQLite online store, in-process state.",
    )
    redis_cluster: bool = Field(False, description="Talk to Redis in cluster mode.")
    redis_timeout_seconds: float = Field(
        0.05, gt=0, description="Per-call Redis timeout on the decision path; on timeout "
        "the decision is served with default features and a `degraded` flag.",
    )
    config: Path | None = Field(
        None, description="The world configuration file (YAML; docs/world.md): channels, "
        "placements, request context, features and the model's inputs. Unset: the shipped "
        "retail world, features/worlds/retail.yaml.",
    )
    data_dir: Path = Field(Path("var"), description="Demo data, Feast registry, SQLite store.")
    models_dir: Path = Field(Path("models"), description="Model registry on disk.")
    model_name: str = Field("nextbest-ranker", description="Model served from models_dir.")
    model_version: str | None = Field(
        None, description="Pin a version: it is served whatever the registry's pointers say, "
        "and they are not watched. Unset: the champion (`nextbest models promote`).")
    model_watch_seconds: float = Field(
        1.0, gt=0, le=60, description="How often a replica reads the registry's champion and "
        "challenger pointers; a promotion serves within this plus the new model's load time.")
    catalog_path: Path | None = Field(
        None, description="Action catalog JSON; default <data_dir>/catalog.json. Imported "
        "into the catalog store (Redis; else a directory next to it, <name>-versions/) at "
        "start-up when its content is not the one imported last; the store's current "
        "version serves (docs/catalog.md)."
    )
    catalog_watch_seconds: float = Field(
        0.5, gt=0, le=60, description="How often a replica reads the catalog store's current "
        "version; a catalog change serves on every replica within this plus the new "
        "catalog's build time (docs/catalog.md).")
    api_keys: SecretStr | None = Field(
        None, description="API keys, comma-separated: each `SECRET` (scopes decide and "
        "feedback) or `NAME:SECRET:SCOPE+SCOPE[:RATE[/BURST]]`. With keys (here or in "
        "API_KEYS_FILE), /v1/* needs `X-API-Key` (docs/operations.md, API keys)."
    )
    api_keys_file: Path | None = Field(
        None, description="A key file (YAML or JSON: `keys: [{name, key or sha256, scopes, "
        "rate_limit}]`), read at start-up and again whenever it changes, without a restart."
    )
    api_keys_reload_seconds: float = Field(
        5.0, ge=0.1, le=300, description="How often the key file is checked for changes: a "
        "key added or removed there is in force at most this long after the file changed."
    )
    protect_read: bool = Field(
        False, description="`/metrics`, `/docs`, `/redoc` and `/openapi.json` need a key with "
        "the `read` scope (off: open to whoever reaches the port)."
    )
    rate_limit_backend: Literal["memory", "redis"] | None = Field(
        None, description="Where per-key rate limits are counted: `redis` (shared by every "
        "replica) or `memory` (per replica). Unset: `redis` when REDIS_URL is set."
    )
    epsilon: float = Field(0.02, ge=0.0, le=1.0, description="Exploration rate per slot.")
    explore_top: int = Field(
        5, ge=0, le=200, description="Exploration draws among this many best remaining "
        "actions (0: among all). Cheaper exploration; off-policy estimates then only "
        "support policies that stay within that window.",
    )
    max_scored: int = Field(
        100, ge=0, description="At most this many actions scored per decision: a slot with "
        "more eligible actions scores the candidates cheap sources propose (the best by the "
        "offline model per channel x placement x segment, basket neighbours, the customer's "
        "strongest categories, under-explored actions, the caller's list; docs/catalog.md, "
        "Large catalogs). 0: every eligible action is scored.",
    )
    candidate_refresh_seconds: float = Field(
        300.0, gt=0, description="How often the candidate sources' rankings are computed "
        "again (in the background; also when the model or the catalog changes), with "
        "MAX_SCORED below the catalog's size.",
    )
    decision_ttl_seconds: int = Field(
        86_400, gt=0, description="How long a decision can still receive feedback."
    )
    decision_log_linger_seconds: float = Field(
        0.01, ge=0, le=1.0, description="How long the decision log writer waits after a "
        "record for others to join its batch (one Redis write per batch)."
    )
    recent_decisions: int = Field(
        20_000, ge=0, description="Decision records kept in-process after they are written, "
        "so feedback to this replica joins them without a Redis read (memory grows with it: "
        "`nextbest bench` reports RSS; 0: off)."
    )
    learner_read_interval_seconds: float = Field(
        0.02, ge=0, le=1.0, description="Shortest time between two reads of the feedback "
        "stream by the learner: events are read in batches, adding at most this much lag."
    )
    snapshot_seconds: float = Field(
        60.0, ge=0, description="With Redis: how often one replica writes a snapshot of the "
        "learner and the contact ledger, so a starting replica replays only the feedback "
        "stream after it (0: no snapshots; a new replica replays the whole stream)."
    )
    loop_lag_interval_seconds: float = Field(
        0.05, ge=0, le=10, description="How often the event loop's lag is sampled for "
        "`nextbest_event_loop_lag_seconds` (0: not at all)."
    )
    shutdown_timeout_seconds: float = Field(
        5.0, gt=0, le=60, description="How long shutdown waits for background tasks to stop."
    )
    customer_max_age_seconds: float = Field(
        14 * 86_400, gt=0, description="Customer features older than this are `stale`."
    )
    customer_cache_seconds: float = Field(
        5.0, ge=0, description="How long a customer's features read from the online store "
        "are reused in-process (0: read the store on every decision). A materialization shows "
        "up this much (plus CACHE_STALE_SECONDS) later on each replica.",
    )
    customer_cache_stale_seconds: float = Field(
        5.0, ge=0, description="How long an expired customer cache entry is still served while "
        "one background read refreshes it (0: the first decision after expiry waits for the "
        "store). A materialization shows up at most CACHE_SECONDS + this much later.",
    )
    customer_cache_size: int = Field(
        20_000, gt=0, description="Customers kept in the in-process feature cache (LRU)."
    )
    action_refresh_seconds: float = Field(
        60.0, gt=0, description="Refresh period of the in-process action feature cache."
    )
    health_interval_seconds: float = Field(
        5.0, gt=0, le=300, description="How often a background check pings the state "
        "backend and looks for an emptied online store (`/readyz` and the decisions read "
        "its last answer; docs/operations.md).")
    health_timeout_seconds: float = Field(
        1.0, gt=0, le=60, description="How long one health check waits for the state "
        "backend before it counts as down.")
    feedback_stream_maxlen: int = Field(
        1_000_000, gt=0, description="Approximate cap of the Redis feedback stream (the "
        "embedded store's: exact)."
    )
    memory_decision_log_max: int = Field(
        200_000, gt=0, description="Decision records the embedded store keeps (without "
        "NEXTBEST_REDIS_URL): the newest ones, to join feedback with and for `nextbest "
        "export --url` (what it drops before an export is counted as lost)."
    )
    learning_rate: float = Field(0.015, gt=0, description="SGD step of the online learner.")
    online_learning: bool = Field(
        True, description="Fold feedback into the online learner (off: offline model only; "
        "feedback is still accepted and stored)."
    )
    contact_policy: bool = Field(
        True, description="Use the cross-channel contact ledger: drop actions the customer "
        "dismissed (on any channel) and let the online learner see prior exposures (fatigue)."
    )
    contact_window_seconds: float = Field(
        30 * 86_400, gt=0, description="Impressions older than this no longer count as exposures."
    )
    contact_suppress_seconds: float = Field(
        7 * 86_400, ge=0, description="An action the customer dismissed is not proposed to "
        "them again, on any channel, for this long (0: never suppress)."
    )
    contact_cooldown_seconds: float = Field(
        0.0, ge=0, description="An action the customer accepted or purchased is not proposed "
        "to them again for this long (0: no cool-down; learned fatigue still lowers it)."
    )
    contact_max_customers: int = Field(
        1_000_000, gt=0, description="Customers held by each replica's in-process contact "
        "ledger (least recently contacted evicted; each one's memory grows with its contacts, "
        "at most 64, and `nextbest bench` reports RSS)."
    )
    spool_max_records: int = Field(
        100_000, gt=0, description="Decision records, and feedback events, each held in the "
        "process at most while the state store is away; beyond it a decision is answered but "
        "not logged (flagged `decision_not_logged`) and feedback gets 503.")
    feedback_write_timeout_seconds: float = Field(
        1.0, gt=0, description="How long feedback waits for the state store before its events "
        "are spooled (answered 202, written when the store returns).")
    feedback_max_skew_seconds: float = Field(
        300.0, ge=0, description="Feedback dated further than this in the future, or this much "
        "before its decision, is refused (422 `invalid_timestamp`).")
    body_timeout_seconds: float = Field(
        10.0, gt=0, description="A `/v1` request whose body has not all arrived within this "
        "long is answered 408.")
    batch_max_requests: int = Field(
        1000, ge=1, le=100_000, description="Most requests in one `POST /v1/decisions/batch` "
        "(413 above it); the body must also fit MAX_BODY_BYTES.")
    max_body_bytes: int = Field(
        1_048_576, gt=0, description="Largest request body on /v1 (413 above it)."
    )
    control_share: float = Field(
        0.0, ge=0.0, lt=1.0, description="Share of customers served by the baseline policy "
        "(the control group), sticky by a salted hash of the customer id; an anonymous "
        "decision is drawn into it with the same share (0: no control group; docs/insights.md).")
    control_policy: Literal["random", "offline"] = Field(
        "random", description="The control group's policy: `random` (uniform among the "
        "eligible actions) or `offline` (the offline model alone: no online correction, no "
        "exploration). Eligibility, rules, caps and budgets hold for both groups.")
    control_salt: str = Field(
        "nextbest-control", min_length=1, description="Salt of the control group's hash: "
        "another salt draws another control group.")
    insights_flush_seconds: float = Field(
        1.0, gt=0, le=60, description="How often a replica adds the counts behind the uplift "
        "report and the touchpoint insights to the shared store (Redis): the reports lag by "
        "at most this much.")
    insights_retention_hours: int = Field(
        24 * 35, ge=1, le=24 * 400, description="How long the hourly counts behind the uplift "
        "report and the touchpoint insights are kept.")
    log_level: str = Field("INFO", description="Python logging level.")
    access_log: Literal["off", "errors", "all"] = Field(
        "off", description="One JSON log line per HTTP request (`errors`: those answered "
        "4xx or 5xx only), with its request id, status, duration and key name."
    )
    log_customer_ids: bool = Field(
        False, description="Log customer ids as they are (off: a salted SHA-256 prefix, "
        "the same for one id within one salt)."
    )
    log_customer_salt: SecretStr | None = Field(
        None, description="Salt of the hashed customer ids in logs; set the same on every "
        "replica to follow one customer across them. Unset: random per process."
    )
    seed: int | None = Field(None, description="Seed exploration (tests, simulations).")

    @property
    def folds_feedback(self) -> bool:
        """Whether this replica reads the feedback stream (to learn, or for the ledger)."""
        return self.online_learning or self.contact_policy

    @property
    def catalog_file(self) -> Path:
        return self.catalog_path or self.data_dir / "catalog.json"

    @property
    def access_configured(self) -> bool:
        """Whether requests need API keys (keys listed, or a key file named)."""
        listed = self.api_keys is not None and self.api_keys.get_secret_value().strip(" ,")
        return bool(listed) or self.api_keys_file is not None

    @property
    def rate_limits_in_redis(self) -> bool:
        if self.rate_limit_backend is None:
            return self.redis_url is not None
        return self.rate_limit_backend == "redis"

    @model_validator(mode="after")
    def _refuse_unsafe_production(self) -> Settings:
        if self.env == "production":
            if not self.redis_url:
                raise ValueError("NEXTBEST_ENV=production needs NEXTBEST_REDIS_URL")
            if not self.access_configured:
                raise ValueError("NEXTBEST_ENV=production needs NEXTBEST_API_KEYS or "
                                 "NEXTBEST_API_KEYS_FILE")
        if self.rate_limit_backend == "redis" and not self.redis_url:
            raise ValueError("NEXTBEST_RATE_LIMIT_BACKEND=redis needs NEXTBEST_REDIS_URL")
        return self
