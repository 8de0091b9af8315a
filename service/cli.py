"""The `nextbest` command line: demo, serve, load, train, materialize, export, dataset, retrain,
models, decide-batch, report, bench, simulate, evaluate, gate.

The top of the project: it imports the rest, nothing imports it. Heavy imports (Feast,
scikit-learn) happen inside the commands that need them, so `nextbest serve` does not
pay for what only training uses. Before any of them, a command checks that the extras
it needs are installed (`NEEDS`): the base install is the HTTP client alone, and a
missing extra should be one line naming it, not a traceback at the end of a long run.
"""

from __future__ import annotations

import argparse
import importlib.util
import logging
import os
import sys
from collections.abc import Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from features.config import World
    from service.registry import Registry
    from service.settings import Settings

#: command -> extra -> modules the command imports from that extra (representative ones,
#: looked up without importing them); the base install is httpx and pydantic. `serve`
#: never imports Feast; `simulate` draws its plots with matplotlib as the very last step
#: of a run and needs scikit-learn for its fidelity section; `bench` draws bench.png;
#: `evaluate` is numpy and scipy (its exact intervals) unless it scores a model; `export`
#: reads Redis and writes Parquet.
NEEDS: dict[str, dict[str, tuple[str, ...]]] = {
    "demo": {"server": ("pydantic_settings", "fastapi", "uvicorn", "onnxruntime", "river", "feast", "sklearn")},
    "serve": {"server": ("pydantic_settings", "fastapi", "uvicorn", "onnxruntime", "river", "redis")},
    "train": {"server": ("pydantic_settings", "feast", "sklearn", "skl2onnx", "onnxruntime")},
    "materialize": {"server": ("pydantic_settings", "feast")},
    "export": {"server": ("pydantic_settings", "redis", "orjson", "pyarrow", "tqdm")},
    "load": {"server": ("pydantic_settings", "pandas", "pyarrow")},
    "dataset": {"server": ("pydantic_settings", "pandas", "pyarrow", "tqdm")},
    "models": {"server": ("pydantic_settings", "onnxruntime", "redis", "pyarrow", "sklearn")},
    "simulate": {"server": ("numpy", "pandas", "onnxruntime", "sklearn"), "bench": ("matplotlib",)},
    "bench": {"server": ("fastapi", "uvicorn", "feast", "onnxruntime", "river", "sklearn"), "bench": ("matplotlib",)},
    "evaluate": {"server": ("numpy", "scipy")},
    "decide-batch": {"server": ("pydantic_settings", "pandas", "pyarrow", "tqdm")},
    "report": {"server": ("pydantic_settings", "prometheus_client")},
    "gate": {"server": ("numpy", "scipy", "pandas", "feast", "onnxruntime", "sklearn")},
    "retrain": {"server": ("pydantic_settings", "redis", "orjson", "pyarrow", "tqdm", "scipy", "feast",
                           "sklearn", "skl2onnx", "onnxruntime")},
}


def _installed(module: str) -> bool:
    try:
        return importlib.util.find_spec(module) is not None
    except (ImportError, ValueError):  # a finder refusing it, or a module without a spec
        return False


def missing_extras(command: str) -> str | None:
    """The one line that says what `command` lacks and how to install it, or None."""
    missing = {extra: [m for m in modules if not _installed(m)]
               for extra, modules in NEEDS.get(command, {}).items()}
    extras = [extra for extra, modules in missing.items() if modules]
    if not extras:
        return None
    modules = ", ".join(m for extra in extras for m in missing[extra])
    named = (f"the '{extras[0]}' extra" if len(extras) == 1
             else "the " + " and ".join(f"'{e}'" for e in extras) + " extras")
    return f"nextbest {command} needs {modules} ({named}): pip install 'nextbest[{','.join(extras)}]'"


def _refuse_without_extras(command: str) -> int:
    """2 after saying on stderr what `command` lacks, 0 when it has what it needs."""
    lacking = missing_extras(command)
    if lacking is None:
        return 0
    print(lacking, file=sys.stderr)
    return 2


def _export(settings: Settings, args: argparse.Namespace) -> int:
    """Run the export, from Redis or (`--url`) from a running service's embedded store;
    2 (after one line on stderr) when it cannot run as configured."""
    from training.export import STREAMS, ExportRefused, export
    from training.service_streams import ServiceStreams, ServiceStreamsError

    client: Any
    if args.url is not None:
        logging.getLogger("httpx").setLevel(logging.WARNING)  # not one line per request
        client = ServiceStreams(args.url, api_key=os.environ.get("NEXTBEST_API_KEY"))
    elif settings.redis_url:
        import redis

        client = (redis.RedisCluster.from_url(settings.redis_url) if settings.redis_cluster
                  else redis.Redis.from_url(settings.redis_url))
    else:
        print("nextbest export: without NEXTBEST_REDIS_URL the streams live in the serving "
              "process: pass --url of the running service (e.g. --url http://127.0.0.1:8000)",
              file=sys.stderr)
        return 2
    out_dir = args.out if args.out is not None else settings.data_dir / "export"
    streams = tuple(STREAMS) if args.stream == "all" else (args.stream,)
    try:
        results = export(client, out_dir, streams, chunk=args.chunk, progress=not args.no_progress)
    except ExportRefused as exc:
        print(f"nextbest export: {exc}", file=sys.stderr)
        return 2
    except ServiceStreamsError as exc:  # refused (4xx): as configured; otherwise: try again
        print(f"nextbest export: {exc}", file=sys.stderr)
        return 2 if exc.status is not None and exc.status < 500 else 1
    finally:
        client.close()
    for result in results:
        print(result.summary())
        for warning in result.warnings():
            print(f"warning: {warning}", file=sys.stderr)
    print(f"exported {sum(r.rows for r in results)} rows to {out_dir}")
    return 0


def _decide_batch(settings: Settings, world: World, args: argparse.Namespace) -> int:
    """Decide for a file of customers against a running service; 2 on a bad file, 1 when
    the service refused or could not be reached."""
    from service.client import NextbestClientError, SyncNextbestClient
    from service.outbound import OutboundError, decide, read_customers, write

    try:
        requests = read_customers(args.customers, world, args.channel, args.placement, args.limit)
        if args.out.suffix.lower() not in (".csv", ".parquet", ".jsonl"):
            raise OutboundError(f"--out {args.out}: expected a .csv, .parquet, .jsonl file")
    except OutboundError as exc:
        print(f"nextbest decide-batch: {exc}", file=sys.stderr)
        return 2
    key = args.api_key or os.environ.get("NEXTBEST_API_KEY")
    logging.getLogger("httpx").setLevel(logging.WARNING)  # not one line per request
    try:
        with SyncNextbestClient(args.url, api_key=key, timeout=args.timeout) as client:
            results, outcome = decide(client, requests, args.batch_size, not args.no_progress)
    except NextbestClientError as exc:
        print(f"nextbest decide-batch: {exc}", file=sys.stderr)
        return 1
    written = write(args.out, requests, results)
    print(f"decided {outcome.decided} of {outcome.customers} customers in {outcome.seconds:.2f} s "
          f"({outcome.per_second:.0f} decisions/s), {outcome.failed} failed; {written} rows "
          f"written to {args.out}")
    return 0


def _load(settings: Settings, world: World, args: argparse.Namespace) -> int:
    """Run `nextbest load`; 2 (after the error on stderr) when a file does not fit the world."""
    from training.load import LoadError, load

    files = {entity: path for entity, path in ((world.customer_entity, args.customers),
                                               (world.action_entity, args.actions))
             if path is not None and entity is not None}
    if args.customers is not None and world.customer_entity is None:
        print(f"nextbest load: the {world.world} world has no customer entity: drop --customers",
              file=sys.stderr)
        return 2
    if not files and args.interactions is None and args.catalog is None:
        print("nextbest load: give at least one of --customers, --actions, --interactions, "
              "--catalog", file=sys.stderr)
        return 2
    try:
        result = load(world, settings.data_dir, files=files, interactions=args.interactions,
                      catalog=args.catalog, as_of=args.as_of, catalog_file=settings.catalog_file)
    except LoadError as exc:
        print(f"nextbest load: {exc}", file=sys.stderr)
        return 2
    for line in result.summary():
        print(line)
    for warning in result.warnings:
        print(f"warning: {warning}", file=sys.stderr)
    return 0


def _dataset(settings: Settings, world: World, args: argparse.Namespace) -> int:
    """Build the interactions (and the OPE log) from an export; 2 when it cannot."""
    from service.catalog import load_catalog
    from training.logged_dataset import (
        DatasetError,
        build,
        parse_duration,
        write_decision_log,
        write_interactions,
    )

    try:
        window = parse_duration(args.attribution_window)
    except ValueError as exc:
        print(f"nextbest dataset: --attribution-window: {exc}", file=sys.stderr)
        return 2
    export_dir = args.export if args.export is not None else settings.data_dir / "export"
    out = args.out if args.out is not None else settings.data_dir / "dataset" / "interactions.parquet"
    log_path = args.log if args.log is not None else out.with_name("decisions.jsonl")
    catalog_file = settings.data_dir / "catalog.json"
    values = ({a.action_id: a.value for a in load_catalog(catalog_file, world).actions}
              if catalog_file.is_file() else {})
    outcomes = tuple(o.strip() for o in args.label_outcomes.split(",") if o.strip())
    try:
        result = build(export_dir, world, window, outcomes, args.shown, values,
                       progress=not args.no_progress)
    except DatasetError as exc:
        print(f"nextbest dataset: {exc}", file=sys.stderr)
        return 2
    write_interactions(result.interactions, out)
    write_decision_log(result.decisions, log_path)
    print(result.summary())
    print(f"wrote {out} and {log_path}")
    if not len(result.interactions):
        print("warning: the dataset is empty: no decision's attribution window has closed yet",
              file=sys.stderr)
    return 0


def _retrain(settings: Settings, world: World, args: argparse.Namespace) -> int:
    """`nextbest retrain`: the pipeline's exit code (training/retrain.py's EXIT_CODES)."""
    from training.logged_dataset import parse_duration
    from training.retrain import BAD_INPUT, RetrainOptions, retrain

    try:
        window = parse_duration(args.attribution_window)
    except ValueError as exc:
        print(f"nextbest retrain: --attribution-window: {exc}", file=sys.stderr)
        return BAD_INPUT
    if args.candidate is not None and not args.candidate.is_dir():
        print(f"nextbest retrain: --candidate: {args.candidate} is not a directory", file=sys.stderr)
        return BAD_INPUT
    dataset_dir = args.dataset if args.dataset is not None else settings.data_dir / "dataset"
    options = RetrainOptions(
        export_dir=args.export if args.export is not None else settings.data_dir / "export",
        dataset_dir=dataset_dir, attribution_window=window,
        label_outcomes=tuple(o.strip() for o in args.label_outcomes.split(",") if o.strip()),
        shown=args.shown, algorithm=args.algorithm, candidate=args.candidate,
        estimator=args.estimator, policy=args.policy, margin=args.margin,
        log_loss_margin=args.log_loss_margin, promote=args.promote, force=args.force,
        progress=not args.no_progress, **({} if args.min_ess is None else {"min_ess": args.min_ess}))
    return retrain(settings, world, options, say=lambda line: print(line, flush=True))


def _models(settings: Settings, world: World, args: argparse.Namespace) -> int:
    """`nextbest models ...`: 0 when done, 2 (after one line on stderr) when refused."""
    from service.errors import RegistryRefused
    from service.registry import registry_for

    if args.action == "shadow-report":
        from training.shadow_report import NoShadowData, shadow_report

        try:
            report = shadow_report(args.export or settings.data_dir / "export", args.challenger)
        except NoShadowData as exc:
            print(f"nextbest models shadow-report: {exc}", file=sys.stderr)
            return 2
        print(report.text())
        return 0
    with registry_for(settings, world) as registry:
        try:
            if args.action == "list":
                print(_models_table(registry))
                return 0
            if args.action == "promote":
                pointers = registry.promote(args.version)
            elif args.action == "rollback":
                pointers = registry.rollback()
            elif args.stop:
                pointers = registry.stop_shadow()
            elif args.version is None:
                print("nextbest models shadow: give a VERSION (or --stop)", file=sys.stderr)
                return 2
            else:
                pointers = registry.shadow(args.version, args.share)
        except RegistryRefused as exc:
            print(f"nextbest models {args.action}: {exc.message}", file=sys.stderr)
            return 2
    shadow = (f"v{pointers.challenger} in shadow on {pointers.share:.0%} of decisions"
              if pointers.challenger else "no challenger")
    print(f"{settings.model_name}: champion v{pointers.champion}, {shadow} "
          f"(revision {pointers.revision}, {registry.store.where}); every replica follows "
          f"within NEXTBEST_MODEL_WATCH_SECONDS ({settings.model_watch_seconds:g} s) plus the load")
    return 0


def _models_table(registry: Registry) -> str:
    pointers = registry.pointers()
    rows = [("version", "role", "created", "algorithm", "auc", "log_loss", "parent")]
    for entry in registry.registered():
        m = entry.manifest
        role = ("champion" if m.version == pointers.champion else
                f"challenger ({pointers.share:.0%})" if m.version == pointers.challenger else
                "previous" if m.version in pointers.history else "")
        rows.append((m.version, role, m.created_at, m.algorithm,
                     f"{m.metrics.get('auc', float('nan')):.4f}",
                     f"{m.metrics.get('log_loss', float('nan')):.4f}", m.parent_version or ""))
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    lines = ["  ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)).rstrip() for r in rows]
    if len(rows) == 1:
        lines.append(f"(no version registered under {registry.models_dir / registry.name})")
    lines.append(f"pointers: {registry.store.where} (revision {pointers.revision})")
    return "\n".join(lines)


def _report(args: argparse.Namespace) -> int:
    """`nextbest report uplift|touchpoints`: a running service's report, over HTTP."""
    import os

    import httpx

    from service import touchpoints, uplift

    path = "/v1/reports/uplift" if args.kind == "uplift" else "/v1/insights/touchpoints"
    params: dict[str, str] = {}
    if args.since is not None:
        params["since"] = args.since.isoformat()
    if args.kind == "uplift":
        params["level"] = str(args.level)
    key = os.environ.get("NEXTBEST_API_KEY")
    try:
        response = httpx.get(args.url.rstrip("/") + path, params=params, timeout=30.0,
                             headers={"x-api-key": key} if key else {})
    except httpx.HTTPError as exc:
        print(f"nextbest report: {args.url} cannot be reached: {exc}", file=sys.stderr)
        return 2
    if response.status_code != 200:
        print(f"nextbest report: {response.status_code} from {path}: {response.text}", file=sys.stderr)
        return 2
    if args.json:
        print(response.text)
    elif args.kind == "uplift":
        print(uplift.table(uplift.UpliftReport.model_validate_json(response.content)))
    else:
        print(touchpoints.table(touchpoints.TouchpointReport.model_validate_json(response.content)))
    return 0


def _serve(settings: Settings, host: str, port: int) -> None:
    import uvicorn

    from service.access import AccessConfigError
    from service.app import create_app

    try:
        app = create_app(settings)
    except AccessConfigError as exc:
        print(f"nextbest: invalid API keys: {exc}", file=sys.stderr)
        raise SystemExit(2) from None
    print(f"nextbest: serving on http://{host}:{port}  (OpenAPI docs: http://{host}:{port}/docs)",
          flush=True)
    uvicorn.run(
        app, host=host, port=port, loop="uvloop", http="httptools",
        workers=1, access_log=False, log_config=None, lifespan="on",
    )


def _timestamp(text: str) -> datetime:
    try:
        value = datetime.fromisoformat(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not an ISO time: {text!r}") from None
    return value if value.tzinfo is not None else value.replace(tzinfo=UTC)


def _positive(text: str) -> int:
    value = int(text)
    if value <= 0:
        raise argparse.ArgumentTypeError(f"must be positive, got {value}")
    return value


#: The example worlds `nextbest demo --example` prepares (training/worlds.py names their truths).
DEMO_EXAMPLES = ("retail", "telco")

# Commands with their own argument parsers, imported only when called.
PASS_THROUGH = {
    "bench": "benchmark nextbest against a bare endpoint and a naive Feast baseline",
    "simulate": "closed-loop customer-journey simulation against a running service",
    "evaluate": "off-policy evaluation of a policy, or a registered model's, on a decision log",
    "gate": "judge a candidate model against the champion on logged decisions (exit 0 pass, "
            "1 fail, 3 refused)",
}


def _pass_through(command: str, argv: list[str]) -> int:
    if command == "bench":
        from load_tests.bench import main as run
    elif command == "simulate":
        from training.simulator import main as run
    elif command == "gate":
        from training.gate import main as run
    else:
        from training.evaluate import main as run
    return run(argv)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="nextbest",
        description="nextbest, the next-best-action service: serve it, prepare and train its "
        "model, benchmark, simulate and evaluate it. Settings come from NEXTBEST_* environment "
        "variables (docs/configuration.md).",
    )
    sub = parser.add_subparsers(dest="command", required=True)
    for name, help_text in (
        ("demo", "prepare demo data and model if missing, then serve"),
        ("serve", "serve what is configured (NEXTBEST_* environment)"),
    ):
        p = sub.add_parser(name, help=help_text)
        p.add_argument("--host", default="127.0.0.1")
        p.add_argument("--port", type=int, default=8000)
        if name == "demo":
            p.add_argument("--force", action="store_true", help="regenerate everything")
            p.add_argument("--example", choices=DEMO_EXAMPLES, default="retail",
                           help="the example world: retail (the configured directories) or telco "
                                "(its shipped world, data in <data_dir>/telco, models in "
                                "<models_dir>/telco)")
            p.add_argument("--n-actions", type=_positive, default=None, metavar="N",
                           help="retail only: generate the world with a catalog of N actions "
                                "(more products; default: its 60); data of another size is "
                                "generated anew")
    p = sub.add_parser("load", help="check your own customer, action and interaction files "
                       "(CSV or Parquet) against the world and write them into the data dir")
    p.add_argument("--customers", type=Path, help="the customer entity's feature rows")
    p.add_argument("--actions", type=Path, help="the action entity's feature rows (and, without "
                   "--catalog, the catalog's columns)")
    p.add_argument("--interactions", type=Path, help="the logged decisions to train on")
    p.add_argument("--catalog", type=Path, help="a catalog JSON file (default: derived from --actions)")
    p.add_argument("--as-of", type=_timestamp, default=None,
                   help="ISO time stamping entity rows that have no event_timestamp column")
    p = sub.add_parser("train", help="train a model on the data dir and register it")
    p.add_argument("--algorithm", choices=("pairwise", "hgb", "logreg"), default="pairwise")
    p.add_argument("--interactions", type=Path, default=None,
                   help="interaction log to train on (default: <NEXTBEST_DATA_DIR>/sources/"
                   "interactions.parquet; `nextbest dataset` writes one from the service's logs)")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p = sub.add_parser("materialize", help="feast apply + materialize into the online store")
    p.add_argument("--incremental", action="store_true")
    p = sub.add_parser("export", help="decision and feedback streams (Redis, or a running "
                       "service's embedded store) into Parquet by day, from the stored watermark")
    p.add_argument("--out", type=Path, default=None,
                   help="output directory (default: <NEXTBEST_DATA_DIR>/export)")
    p.add_argument("--stream", choices=("decisions", "feedback", "all"), default="all")
    p.add_argument("--chunk", type=_positive, default=10_000, help="entries read and written at a time")
    p.add_argument("--url", default=None,
                   help="a running service without Redis: export its embedded store over its admin "
                   "API (NEXTBEST_API_KEY: a key with the admin scope; default: read Redis)")
    p.add_argument("--no-progress", action="store_true", help="no progress bars")
    p = sub.add_parser("dataset", help="exported decision and feedback logs into the interactions "
                       "training reads, and the decision log evaluation reads")
    p.add_argument("--export", type=Path, default=None,
                   help="the export directory (default: <NEXTBEST_DATA_DIR>/export)")
    p.add_argument("--out", type=Path, default=None,
                   help="interactions Parquet file (default: <NEXTBEST_DATA_DIR>/dataset/interactions.parquet)")
    p.add_argument("--log", type=Path, default=None,
                   help="decision log for `nextbest evaluate`, JSON Lines (default: decisions.jsonl "
                   "next to --out)")
    p.add_argument("--attribution-window", default="24h",
                   help="an outcome counts when it comes at most this long after the decision "
                   "(s, m, h, d: 30m, 24h, 7d)")
    p.add_argument("--label-outcomes", default="accept,purchase",
                   help="comma-separated outcomes that label an interaction 1")
    p.add_argument("--shown", choices=("events", "rank1", "all"), default="events",
                   help="which actions of a decision count as shown: those with a feedback event "
                   "(rank 1 when none has one), rank 1 only, or every returned action")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p = sub.add_parser("retrain", help="export -> dataset -> train -> gate against the champion "
                       "-> register (-> promote): exit 0 registered or nothing new, 1 gate failed, "
                       "2 bad input, 3 not enough data, 4 export failed, 5 training failed, "
                       "6 promotion refused")
    p.add_argument("--export", type=Path, default=None,
                   help="the export directory (default: <NEXTBEST_DATA_DIR>/export)")
    p.add_argument("--dataset", type=Path, default=None,
                   help="where the dataset's interactions.parquet and decisions.jsonl go "
                   "(default: <NEXTBEST_DATA_DIR>/dataset)")
    p.add_argument("--attribution-window", default="24h",
                   help="an outcome counts when it comes at most this long after the decision")
    p.add_argument("--label-outcomes", default="accept,purchase",
                   help="comma-separated outcomes that label an interaction 1")
    p.add_argument("--shown", choices=("events", "rank1", "all"), default="events",
                   help="which actions of a decision count as shown (as `nextbest dataset`)")
    p.add_argument("--algorithm", choices=("pairwise", "hgb", "logreg"), default="pairwise",
                   help="the candidate's learner (as `nextbest train`)")
    p.add_argument("--candidate", type=Path, default=None, metavar="DIR",
                   help="judge this model directory (trained elsewhere) instead of training one")
    p.add_argument("--estimator", choices=("snips", "dr", "ips"), default="snips",
                   help="the gate's off-policy estimator")
    p.add_argument("--policy", choices=("greedy", "epsilon-greedy"), default="greedy",
                   help="the models' policy the gate compares")
    p.add_argument("--margin", type=float, default=0.0,
                   help="the candidate passes when the lower bound of (candidate - champion) "
                   "off-policy value is above -margin (reward units)")
    p.add_argument("--log-loss-margin", type=float, default=0.0,
                   help="the candidate's holdout log loss may exceed the champion's by this much")
    p.add_argument("--min-ess", type=float, default=None,
                   help="below this effective sample size of either policy, refuse to decide "
                   "(exit 3; default: the gate's, 100)")
    p.add_argument("--promote", action="store_true",
                   help="make a registered candidate the champion (every replica serves it)")
    p.add_argument("--force", action="store_true",
                   help="train and judge again even if this dataset was registered or judged")
    p.add_argument("--no-progress", action="store_true", help="no progress bars")
    p = sub.add_parser("models", help="the registry: list versions, promote, shadow, roll back "
                       "(every replica follows without a restart)")
    actions = p.add_subparsers(dest="action", required=True)
    actions.add_parser("list", help="registered versions and which one is champion, challenger")
    a = actions.add_parser("promote", help="make VERSION the champion: every replica serves it "
                           "(refused when it does not fit the configured world)")
    a.add_argument("version", metavar="VERSION")
    a = actions.add_parser("shadow", help="make VERSION the challenger, scored next to the "
                           "champion on a share of decisions and logged, never served")
    a.add_argument("version", metavar="VERSION", nargs="?")
    a.add_argument("--share", type=float, default=0.1,
                   help="share of decisions the challenger scores (0 < share <= 1)")
    a.add_argument("--stop", action="store_true", help="stop shadow scoring")
    actions.add_parser("rollback", help="back to the champion before the current one")
    a = actions.add_parser("shadow-report", help="the challenger against the champion on the "
                           "decisions it scored in shadow (from `nextbest export`'s files)")
    a.add_argument("--export", type=Path, default=None,
                   help="what `nextbest export` wrote (default: <NEXTBEST_DATA_DIR>/export)")
    a.add_argument("--challenger", default=None, metavar="NAME:VERSION",
                   help="the challenger to report on (default: the latest one logged)")
    p = sub.add_parser("decide-batch", help="the next best action for every customer of a file "
                       "(outbound: email, ...), from a running service's POST /v1/decisions/batch")
    p.add_argument("--customers", type=Path, required=True,
                   help="CSV or Parquet: customer_id, and optionally one column per context field")
    p.add_argument("--channel", required=True, help="the outbound channel, e.g. email")
    p.add_argument("--placement", default=None, help="the slot, e.g. inbox (default: the service's)")
    p.add_argument("--out", type=Path, required=True,
                   help="where the decisions go: .csv or .parquet (one row per shown action), "
                   ".jsonl (one line per customer)")
    p.add_argument("--url", default="http://127.0.0.1:8000", help="the running service")
    p.add_argument("--api-key", default=None,
                   help="the service's X-API-Key (default: the NEXTBEST_API_KEY environment variable)")
    p.add_argument("--limit", type=_positive, default=1, help="actions per customer")
    p.add_argument("--batch-size", type=_positive, default=500,
                   help="customers per request (at most the service's NEXTBEST_BATCH_MAX_REQUESTS)")
    p.add_argument("--timeout", type=float, default=60.0, help="seconds per request")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p = sub.add_parser("report", help="a running nextbest's uplift report (nextbest against the "
                       "control group) or touchpoint insights, over HTTP (NEXTBEST_API_KEY: its key)")
    p.add_argument("kind", choices=("uplift", "touchpoints"))
    p.add_argument("--url", default="http://127.0.0.1:8000", help="the service (any replica: the "
                   "reports are cluster-wide with Redis)")
    p.add_argument("--since", type=_timestamp, default=None,
                   help="ISO time: count the decisions from its hour on (default: all retained)")
    p.add_argument("--level", type=float, default=0.95, help="confidence level of the intervals")
    p.add_argument("--json", action="store_true", help="print the JSON the service returned")
    for name, help_text in PASS_THROUGH.items():
        sub.add_parser(name, help=f"{help_text} (see `nextbest {name} --help`)", add_help=False)
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv[:1] and argv[0] in PASS_THROUGH:
        # a command's --help should not ask for what only its run needs (simulate's plots)
        wants_help = bool({"-h", "--help"} & set(argv[1:]))
        if not wants_help and _refuse_without_extras(argv[0]):
            return 2
        try:
            return _pass_through(argv[0], argv[1:])
        except ModuleNotFoundError:
            if _refuse_without_extras(argv[0]):
                return 2
            raise
    args = parser.parse_args(argv)
    if _refuse_without_extras(args.command):
        return 2

    if args.command == "report":  # a client of a running service: no settings of its own
        return _report(args)
    from service.settings import Settings

    try:
        settings = Settings()
    except ValueError as exc:
        print(f"nextbest: invalid settings: {exc}", file=sys.stderr)
        return 2
    if args.command == "demo":
        from training.demo import ExampleRefused, example_settings

        try:
            settings = example_settings(settings, args.example)
        except ExampleRefused as exc:
            print(f"nextbest demo: {exc}", file=sys.stderr)
            return 2
    from features.config import WorldConfigError, configured_world

    try:
        world = configured_world(settings.config)
    except WorldConfigError as exc:
        print(f"nextbest: invalid world configuration (NEXTBEST_CONFIG):\n{exc}", file=sys.stderr)
        return 2
    from service.logs import configure

    configure(settings.log_level, customer_ids=settings.log_customer_ids,
              salt=settings.log_customer_salt.get_secret_value()
              if settings.log_customer_salt is not None else None)

    if args.command == "demo":
        from training.demo import prepare_demo

        if args.n_actions is not None and args.example != "retail":
            print("nextbest demo: --n-actions scales the retail world only", file=sys.stderr)
            return 2
        prepare_demo(settings, force=args.force, example=args.example, n_actions=args.n_actions)
        _serve(settings, args.host, args.port)
    elif args.command == "serve":
        _serve(settings, args.host, args.port)
    elif args.command == "train":
        from service.registry import registry_for
        from training.train import train

        if args.interactions is not None and not args.interactions.is_file():
            print(f"nextbest train: --interactions: {args.interactions} does not exist", file=sys.stderr)
            return 2
        with registry_for(settings, world) as registry:
            parent = registry.pointers().champion
        directory, manifest = train(
            settings.data_dir, settings.models_dir, settings.model_name,
            redis_url=settings.redis_url, algorithm=args.algorithm,
            world=world, interactions=args.interactions, progress=not args.no_progress,
            parent_version=parent,
        )
        print(f"registered {manifest.name} v{manifest.version} in {directory}: {manifest.metrics}")
        print(f"not serving yet (champion: {'v' + parent if parent else 'none'}): review "
              f"{directory / 'model_card.md'}, then `nextbest models promote {manifest.version}`")
    elif args.command == "materialize":
        from features.store import apply_and_materialize

        apply_and_materialize(
            world, settings.data_dir, settings.redis_url, settings.redis_cluster,
            incremental=args.incremental,
        )
        print("materialized")
    elif args.command == "load":
        return _load(settings, world, args)
    elif args.command == "export":
        return _export(settings, args)
    elif args.command == "dataset":
        return _dataset(settings, world, args)
    elif args.command == "retrain":
        return _retrain(settings, world, args)
    elif args.command == "models":
        return _models(settings, world, args)
    elif args.command == "decide-batch":
        return _decide_batch(settings, world, args)
    return 0


if __name__ == "__main__":
    sys.exit(main())
