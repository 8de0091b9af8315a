"""`nextbest retrain`: export -> dataset -> train -> gate -> register (-> promote), in order.

The pipeline the train CronJob runs (docs/retraining.md). Each step is the command of
the same name, called in-process, and prints one summary line:

    export    the decision and feedback streams into Parquet (`training/export.py`)
    dataset   the export into interactions and the OPE decision log (`training/logged_dataset.py`)
    train     a candidate, into a staging folder outside the registry (`training/train.py`)
    gate      the candidate against the registry's champion on the dataset (`training/gate.py`)
    register  only on a pass: the staged version becomes the next registered version
    promote   only with `--promote`: the registry's champion pointer moves to it

Registering only on a pass is why training stages: `train()` registers into the models
folder it is given, so the pipeline gives it `<data_dir>/retrain/staging`, and copies the
candidate into the registry (`service.manifest.write_model`, a new version number,
the gate's report and lines in its model card) once the gate passed. A failed or
refused candidate stays in the staging folder until the next run, the gate's report
(`gate.json`, `reliability.png`) in `<data_dir>/retrain/gate/`; the registry never lists it.

Idempotent: the dataset's files are hashed (with the algorithm, or the candidate model's
sha256 with `--candidate`); a registered version records that key in its manifest
(`training.retrain.key`), and the last judgement is kept in `<data_dir>/retrain/last.json`.
A run whose key is already registered does nothing and exits 0 (it does not promote: a
version the operator rolled back stays rolled back); a run whose key failed or was
refused against the same champion repeats that verdict and its exit code without
training again. `--force` trains and judges again.

Exit codes (`EXIT_CODES`): 0 registered (promoted when asked) or nothing new; 1 the gate
failed; 2 bad input or configuration; 3 not enough data to decide; 4 the export failed
or another run holds the lock; 5 training failed; 6 registered but the promotion was
refused.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import json
import shutil
import sys
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from features.config import World
from service.errors import RegistryRefused
from service.manifest import MODEL_FILE, ModelManifest, read_manifest, sha256_file, write_model
from service.registry import Registry, registry_for
from service.settings import Settings
from training.model_card import CARD_FILE, write_model_card
from training.ope import DEFAULT_MIN_ESS

OK, FAIL, BAD_INPUT, NOT_ENOUGH_DATA, EXPORT_FAILED, TRAIN_FAILED, PROMOTE_REFUSED = range(7)
EXIT_CODES = {
    OK: "registered (and promoted with --promote), or nothing new to do",
    FAIL: "the gate failed: the candidate is worse than the champion (not registered)",
    BAD_INPUT: "bad input or configuration (settings, options, no Redis to export from)",
    NOT_ENOUGH_DATA: "not enough data to decide: too few labelled interactions, or the gate "
                     "refused (effective sample size); nothing registered",
    EXPORT_FAILED: "the export failed (e.g. Redis unreachable) or another run holds the lock; "
                   "the next run resumes",
    TRAIN_FAILED: "training failed (the line says why); nothing registered",
    PROMOTE_REFUSED: "registered, but the promotion was refused (the line says why)",
}
RETRAIN_DIR = "retrain"
LAST_FILE = "last.json"
#: fewer labelled interactions than this (or a single class) is not enough to train on
MIN_INTERACTIONS = 20

Say = Callable[[str], None]


@dataclass(frozen=True)
class RetrainOptions:
    export_dir: Path
    dataset_dir: Path
    attribution_window: timedelta
    label_outcomes: tuple[str, ...] = ("accept", "purchase")
    shown: str = "events"
    algorithm: str = "pairwise"
    #: a model directory trained elsewhere to judge instead of training one
    candidate: Path | None = None
    estimator: str = "snips"
    policy: str = "greedy"
    margin: float = 0.0
    log_loss_margin: float = 0.0
    min_ess: float = DEFAULT_MIN_ESS
    promote: bool = False
    force: bool = False
    progress: bool = True


class StepFailed(Exception):
    """A step cannot go on; `code` is the run's exit code, the message its last line."""

    def __init__(self, code: int, message: str) -> None:
        super().__init__(message)
        self.code = code


def retrain(settings: Settings, world: World, options: RetrainOptions, say: Say = print) -> int:
    """Run the pipeline; the exit code (`EXIT_CODES`), after one line per step."""
    work = settings.data_dir / RETRAIN_DIR
    try:
        with _locked(work):
            code, summary = _run(settings, world, options, work, say)
    except StepFailed as exc:
        code, summary = exc.code, str(exc)
    say(f"retrain: {summary} (exit {code})")
    return code


def _run(settings: Settings, world: World, options: RetrainOptions, work: Path,
         say: Say) -> tuple[int, str]:
    _export(settings, options, say)
    interactions, log = _dataset(settings, world, options, say)
    with registry_for(settings, world) as registry:
        return _judge_and_register(settings, world, options, work, registry, interactions, log, say)


def _judge_and_register(settings: Settings, world: World, options: RetrainOptions, work: Path,
                        registry: Registry, interactions: Path, log: Path,
                        say: Say) -> tuple[int, str]:
    champion = registry.pointers().champion
    key = dataset_key(interactions, log, options)
    done = _registered_with(registry, key)
    if done is not None and not options.force:
        say(f"train: skipped: this dataset (key {key[:12]}) is registered as v{done} already")
        return OK, f"nothing new: v{done} was registered from this dataset (--force to train again)"
    last = _read_last(work)
    if (not options.force and last.get("key") == key and last.get("champion") == champion
            and last.get("code") in (FAIL, NOT_ENOUGH_DATA)):
        say(f"train: skipped: this dataset (key {key[:12]}) was judged against champion "
            f"v{champion} at {last.get('at')}: {last.get('verdict')}")
        for reason in last.get("reasons", []):
            say(f"gate: {reason}")
        return int(last["code"]), (f"nothing new: the same verdict as last time ({last.get('verdict')}; "
                                   "--force to train again)")

    candidate = _candidate(settings, world, options, work, interactions, champion, say)
    if champion is None:
        say("gate: skipped: there is no champion to judge against")
        version = register(registry, candidate, key, champion, None, say)
        return OK, (f"registered v{version} unjudged and not promoted: review its model card, "
                    f"then `nextbest models promote {version}`")
    code, verdict, reasons = _gate(registry, candidate, champion, interactions, log, options, work, say)
    _write_last(work, {"key": key, "champion": champion, "code": code, "verdict": verdict,
                       "reasons": reasons, "candidate": str(candidate),
                       "at": datetime.now(UTC).isoformat(timespec="seconds")})
    if code != OK:
        word = "failed" if code == FAIL else "refused to decide"
        return code, (f"the gate {word} against champion v{champion}: nothing registered "
                      f"(the candidate stays in {candidate}, the gate's report in {work / 'gate'})")
    version = register(registry, candidate, key, champion, work / "gate", say)
    if not options.promote:
        say(f"promote: skipped: v{version} waits for `nextbest models promote {version}` "
            "(or --promote)")
        return OK, f"registered v{version}; champion still v{champion}"
    try:
        pointers = registry.promote(version)
    except RegistryRefused as exc:
        say(f"promote: refused: {exc.message}")
        return PROMOTE_REFUSED, f"registered v{version}, not promoted"
    say(f"promote: v{pointers.champion} is the champion (was v{champion}; revision "
        f"{pointers.revision}, {registry.store.where}); every replica follows within "
        f"NEXTBEST_MODEL_WATCH_SECONDS ({settings.model_watch_seconds:g} s) plus the load")
    return OK, f"registered and promoted v{version}"


# --- the steps -----------------------------------------------------------------------------

def _export(settings: Settings, options: RetrainOptions, say: Say) -> None:
    if not settings.redis_url:
        raise StepFailed(BAD_INPUT, "export needs NEXTBEST_REDIS_URL: the embedded store lives in "
                         "the serving process, where no other process can read it")
    import redis

    from training.export import STREAMS, ExportRefused, export

    client = (redis.RedisCluster.from_url(settings.redis_url) if settings.redis_cluster
              else redis.Redis.from_url(settings.redis_url))
    try:
        results = export(client, options.export_dir, tuple(STREAMS), progress=options.progress)
    except ExportRefused as exc:
        raise StepFailed(BAD_INPUT, f"export refused: {exc}") from exc
    except (redis.RedisError, OSError) as exc:
        raise StepFailed(EXPORT_FAILED, f"export failed: {exc}") from exc
    finally:
        client.close()
    for result in results:
        for warning in result.warnings():
            print(f"warning: {warning}", file=sys.stderr)
    say("export: " + "; ".join(r.summary() for r in results) + f" -> {options.export_dir}")


def _dataset(settings: Settings, world: World, options: RetrainOptions, say: Say) -> tuple[Path, Path]:
    from service.catalog import load_catalog
    from training.logged_dataset import DatasetError, build, write_decision_log, write_interactions

    if not any((options.export_dir / "decisions").glob("day=*/part-*.parquet")):
        raise StepFailed(NOT_ENOUGH_DATA, f"not enough data to train on: no decision exported "
                         f"into {options.export_dir} yet")
    catalog_file = settings.data_dir / "catalog.json"
    values = ({a.action_id: a.value for a in load_catalog(catalog_file, world).actions}
              if catalog_file.is_file() else {})
    try:
        result = build(options.export_dir, world, options.attribution_window, options.label_outcomes,
                       options.shown, values, progress=options.progress)
    except DatasetError as exc:
        raise StepFailed(BAD_INPUT, f"dataset: {exc}") from exc
    interactions = options.dataset_dir / "interactions.parquet"
    log = options.dataset_dir / "decisions.jsonl"
    write_interactions(result.interactions, interactions)
    write_decision_log(result.decisions, log)
    say(f"dataset: {result.summary()} -> {options.dataset_dir}")
    labels = result.interactions["label"] if len(result.interactions) else None
    positives = int(labels.sum()) if labels is not None else 0
    if len(result.interactions) < MIN_INTERACTIONS or not 0 < positives < len(result.interactions):
        raise StepFailed(NOT_ENOUGH_DATA, f"not enough data to train on: {len(result.interactions)} "
                         f"interactions, {positives} labelled 1 (at least {MIN_INTERACTIONS}, both labels)")
    return interactions, log


def _candidate(settings: Settings, world: World, options: RetrainOptions, work: Path,
               interactions: Path, champion: str | None, say: Say) -> Path:
    """The candidate's model directory: `--candidate`, or a model trained into staging."""
    if options.candidate is not None:
        manifest = _manifest(options.candidate)
        say(f"train: skipped: judging {manifest.name} v{manifest.version} from {options.candidate}")
        return options.candidate
    from training.train import train

    staging = work / "staging"
    shutil.rmtree(staging / settings.model_name, ignore_errors=True)
    try:
        directory, manifest = train(
            settings.data_dir, staging, settings.model_name, redis_url=settings.redis_url,
            algorithm=options.algorithm, world=world, interactions=interactions,
            progress=options.progress, parent_version=champion)
    except Exception as exc:  # the run's last line says what failed; the trace is in the log
        raise StepFailed(TRAIN_FAILED, f"training failed: {type(exc).__name__}: {exc}") from exc
    m = manifest.metrics
    say(f"train: {options.algorithm} candidate on {int(m['n_train'])} rows, holdout "
        f"{int(m['n_holdout'])}: AUC {m['auc']:.4f}, log loss {m['log_loss']:.4f} -> {directory}")
    return directory


def _gate(registry: Registry, candidate: Path, champion: str, interactions: Path, log: Path,
          options: RetrainOptions, work: Path, say: Say) -> tuple[int, str, list[str]]:
    from training import gate
    from training.evaluate import write_json, write_plot
    from training.ope_log import LogFormatError

    out = work / "gate"
    shutil.rmtree(out, ignore_errors=True)
    args = gate.parse_args([
        "--candidate", str(candidate), "--champion", str(registry.models_dir / registry.name / champion),
        "--log", str(log), "--interactions", str(interactions), "--estimator", options.estimator,
        "--policy", options.policy, "--margin", repr(options.margin),
        "--log-loss-margin", repr(options.log_loss_margin), "--min-ess", repr(options.min_ess)])
    try:
        verdict, report = gate.run(args)
    except (LogFormatError, OSError, ValueError) as exc:
        raise StepFailed(BAD_INPUT, f"gate: {exc}") from exc
    write_json(out / "gate.json", report)
    write_plot(out / "reliability.png", {
        f"candidate {report['candidate']['model']}": report["candidate"]["holdout"]["calibration"],
        f"champion {report['champion']['model']}": report["champion"]["holdout"]["calibration"]})
    ess = (report["candidate"]["estimate"]["effective_sample_size"],
           report["champion"]["estimate"]["effective_sample_size"])
    for reason in verdict.reasons:
        say(f"gate: {reason}")
    say(f"gate: {verdict.word} against champion v{champion} on {report['decisions']} decisions "
        f"(effective sample size: candidate {ess[0]:.0f}, champion {ess[1]:.0f})")
    code = {gate.PASS: OK, gate.FAIL: FAIL, gate.REFUSED: NOT_ENOUGH_DATA}[verdict.code]
    return code, verdict.word, verdict.reasons


def register(registry: Registry, candidate: Path, key: str, champion: str | None,
              gate_dir: Path | None, say: Say) -> str:
    """The candidate as the registry's next version (or the version it already is)."""
    staged = _manifest(candidate)
    inside = candidate.resolve().parent == (registry.models_dir / registry.name).resolve()
    if inside:
        say(f"register: skipped: {staged.name} v{staged.version} is registered already")
        return staged.version
    gate_report = (json.loads((gate_dir / "gate.json").read_text())
                   if gate_dir is not None and (gate_dir / "gate.json").is_file() else None)
    fields = staged.model_dump(exclude={"name", "version", "sha256"})
    fields["parent_version"] = champion
    fields["training"] = {**staged.training, "retrain": {
        "key": key, "staged_from": str(candidate),
        "gate": None if gate_report is None else {
            "verdict": gate_report["verdict"], "champion": champion,
            "reasons": gate_report["reasons"], "decisions": gate_report["decisions"]}}}
    directory, manifest = write_model(registry.models_dir, registry.name,
                                      (candidate / MODEL_FILE).read_bytes(), **fields)
    write_model_card(directory, manifest)
    if gate_dir is not None:
        for name, target in (("gate.json", "gate.json"), ("reliability.png", "gate_reliability.png")):
            if (gate_dir / name).is_file():
                shutil.copy2(gate_dir / name, directory / target)
        _card_gate_section(directory, manifest, gate_report)
    say(f"register: {manifest.name} v{manifest.version} in {directory} (sha256 "
        f"{manifest.sha256[:12]}, parent {'v' + champion if champion else 'none'})")
    return manifest.version


def _card_gate_section(directory: Path, manifest: ModelManifest, report: dict[str, Any] | None) -> None:
    if report is None:
        return
    lines = ["", "## Gate", "",
             f"Judged against the champion v{manifest.parent_version} on {report['decisions']} "
             f"logged decisions ({report['estimator']}, policy `{report['policy']}`, margin "
             f"{report['margin']:g}, log loss margin {report['log_loss_margin']:g}, minimum "
             f"effective sample size {report['min_ess']:g}): **{report['verdict']}**.", "",
             *(f"- {reason}" for reason in report["reasons"]), ""]
    if (directory / "gate_reliability.png").is_file():
        lines += ["![the two models' reliability](gate_reliability.png)", ""]
    with (directory / CARD_FILE).open("a") as card:
        card.write("\n".join(lines))


# --- idempotence ---------------------------------------------------------------------------

def dataset_key(interactions: Path, log: Path, options: RetrainOptions) -> str:
    """What a run would register: the dataset's bytes with the algorithm, or with the
    candidate model's sha256 under `--candidate`."""
    digest = hashlib.sha256()
    for path in (interactions, log):
        digest.update(sha256_file(path).encode())
    what = (f"candidate:{_manifest(options.candidate).sha256}" if options.candidate is not None
            else f"algorithm:{options.algorithm}")
    digest.update(what.encode())
    return digest.hexdigest()


def _registered_with(registry: Registry, key: str) -> str | None:
    for entry in reversed(registry.registered()):
        if (entry.manifest.training.get("retrain") or {}).get("key") == key:
            return entry.manifest.version
    return None


def _read_last(work: Path) -> dict[str, Any]:
    try:
        last: dict[str, Any] = json.loads((work / LAST_FILE).read_text())
    except (FileNotFoundError, json.JSONDecodeError):
        return {}
    return last


def _write_last(work: Path, record: dict[str, Any]) -> None:
    tmp = work / f".{LAST_FILE}.tmp"
    tmp.write_text(json.dumps(record, indent=2) + "\n")
    tmp.replace(work / LAST_FILE)


def _manifest(directory: Path) -> ModelManifest:
    try:
        return read_manifest(directory)
    except (OSError, ValueError) as exc:
        raise StepFailed(BAD_INPUT, f"--candidate: {directory} is not a model directory: {exc}") from exc


@contextlib.contextmanager
def _locked(work: Path) -> Iterator[None]:
    """One run at a time per data dir: a second export would write the streams' rows twice."""
    work.mkdir(parents=True, exist_ok=True)
    with (work / ".lock").open("a") as lock:
        try:
            fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise StepFailed(EXPORT_FAILED, f"another nextbest retrain holds {work / '.lock'}") from None
        try:
            yield
        finally:
            fcntl.flock(lock, fcntl.LOCK_UN)
