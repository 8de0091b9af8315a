"""Generate the reference parts of the docs from the code, so they cannot drift.

    python docs/generate.py           rewrite the generated sections in docs/*.md
    python docs/generate.py --check   exit 1 (and say which page) if one is out of date

A page holds hand-written text around marked sections:

    <!-- generated: settings -->
    ...replaced by this script...
    <!-- end generated -->

`settings` is rendered from the fields of `service.settings.Settings` (type, default,
bounds, description), `metrics` from the collectors a `service.metrics.Metrics` registers
(name, type, labels, help), `cli` from `nextbest ... --help`, `recording_rules` and
`alerts` from the chart's `helm/nextbest/files/rules.yaml` (the file the PrometheusRule
and promtool load), `export_decisions` and `export_feedback` from the Parquet schemas of
`training/export.py`, `interactions` from the columns `nextbest dataset` writes
(`training/logged_dataset.py`), `retrain_exit_codes` from `training.retrain.EXIT_CODES`.
tests/docs/test_generate.py runs the check.
"""

from __future__ import annotations

import argparse
import re
import sys
import types
import typing
from collections.abc import Callable, Iterable
from pathlib import Path

import annotated_types
from pydantic import SecretStr
from pydantic.fields import FieldInfo

DOCS = Path(__file__).resolve().parent
if str(DOCS.parent) not in sys.path:
    sys.path.insert(0, str(DOCS.parent))

SECTION = re.compile(
    r"(<!-- generated: (?P<name>[a-z_]+) -->\n)(?P<body>.*?)(<!-- end generated -->)", re.DOTALL
)


def _cell(text: str) -> str:
    return " ".join(text.split()).replace("|", "\\|")


def _type_name(annotation: object) -> str:
    origin = typing.get_origin(annotation)
    if origin is typing.Literal:
        return " \\| ".join(f"`{a}`" for a in typing.get_args(annotation))
    if origin in (typing.Union, types.UnionType):
        names = [_type_name(a) for a in typing.get_args(annotation) if a is not type(None)]
        return " \\| ".join(names)
    if annotation is SecretStr:
        return "secret"
    if isinstance(annotation, type):
        return {"str": "string", "Path": "path", "bool": "boolean"}.get(annotation.__name__,
                                                                         annotation.__name__)
    return str(annotation)


def _default(field: FieldInfo) -> str:
    value = field.get_default(call_default_factory=True)
    if value is None:
        return "unset"
    if isinstance(value, bool):
        return f"`{str(value).lower()}`"
    if isinstance(value, float) and value.is_integer():
        value = int(value)
    return f"`{value}`"


def _bounds(field: FieldInfo) -> str:
    parts = []
    for item in field.metadata:
        for attr, sign in (("gt", ">"), ("ge", ">="), ("lt", "<"), ("le", "<=")):
            if isinstance(item, getattr(annotated_types, attr.capitalize())):
                parts.append(f"{sign} {getattr(item, attr)}")
    return ", ".join(parts)


def settings_table() -> str:
    from service.settings import Settings

    prefix = Settings.model_config.get("env_prefix", "")
    rows = ["| variable | type | default | bounds | meaning |", "|---|---|---|---|---|"]
    for name, field in Settings.model_fields.items():
        if not field.description:
            raise ValueError(f"Settings.{name} has no description: every setting is documented")
        rows.append(
            f"| `{prefix}{name.upper()}` | {_type_name(field.annotation)} | {_default(field)} "
            f"| {_bounds(field)} | {_cell(field.description)} |"
        )
    return "\n".join(rows) + "\n"


def _labels(collector: object, family_samples: Iterable[typing.Any]) -> list[str]:
    names = getattr(collector, "_labelnames", None) or getattr(collector, "labelnames", None)
    if names:
        return list(names)
    seen: list[str] = []
    for sample in family_samples:
        seen.extend(k for k in sample.labels if k != "le" and k not in seen)
    return seen


def metrics_table() -> str:
    from prometheus_client import CollectorRegistry

    from service.metrics import Metrics

    metrics = Metrics(CollectorRegistry())
    rows = ["| metric | type | labels | meaning |", "|---|---|---|---|"]
    for collector in vars(metrics).values():
        if collector is metrics.registry or not hasattr(collector, "collect"):
            continue
        for family in collector.collect():
            suffix = "_total" if family.type == "counter" else ""
            labels = ", ".join(f"`{label}`" for label in _labels(collector, family.samples))
            rows.append(f"| `{family.name}{suffix}` | {family.type} | {labels} "
                        f"| {_cell(family.documentation)} |")
    return "\n".join(rows) + "\n"


def _rules() -> list[dict[str, typing.Any]]:
    import yaml

    document = yaml.safe_load((DOCS.parent / "helm/nextbest/files/rules.yaml").read_text())
    return [rule for group in document["groups"] for rule in group["rules"]]


def recording_rules_table() -> str:
    rows = ["| recording rule | expression |", "|---|---|"]
    for rule in _rules():
        if "record" in rule:
            rows.append(f"| `{rule['record']}` | `{_cell(rule['expr'])}` |")
    return "\n".join(rows) + "\n"


def alerts_table() -> str:
    rows = ["| alert | severity | for | fires when |", "|---|---|---|---|"]
    for rule in _rules():
        if "alert" in rule:
            rows.append(f"| `{rule['alert']}` | {rule['labels']['severity']} | {rule.get('for', '')} "
                        f"| {_cell(rule['annotations']['summary'])} |")
    return "\n".join(rows) + "\n"


def _schema_table(stream: str) -> str:
    from training.export import SCHEMAS

    rows = ["| column | type | meaning |", "|---|---|---|"]
    for f in SCHEMAS[stream]:
        doc = (f.metadata or {}).get(b"doc", b"").decode()
        if not doc:
            raise ValueError(f"export column {stream}.{f.name} has no doc: every column is documented")
        rows.append(f"| `{f.name}` | `{str(f.type).replace('item: ', '')}` | {_cell(doc)} |")
    return "\n".join(rows) + "\n"


def export_decisions_table() -> str:
    return _schema_table("decisions")


def export_feedback_table() -> str:
    return _schema_table("feedback")


def interactions_table() -> str:
    from training.logged_dataset import INTERACTION_COLUMNS

    rows = ["| column | type | meaning |", "|---|---|---|"]
    names = list(INTERACTION_COLUMNS)
    context_at = names.index("placement") + 1
    for name in names[:context_at]:
        kind, doc = INTERACTION_COLUMNS[name]
        rows.append(f"| `{name}` | `{kind}` | {_cell(doc)} |")
    rows.append("| *one per context field* | as declared | the request context's field of that name "
                "(an id list comma-joined; absent: the field's default) |")
    for name in names[context_at:]:
        kind, doc = INTERACTION_COLUMNS[name]
        rows.append(f"| `{name}` | `{kind}` | {_cell(doc)} |")
    return "\n".join(rows) + "\n"


def retrain_exit_codes_table() -> str:
    from training.retrain import EXIT_CODES

    rows = ["| code | meaning |", "|---|---|"]
    rows += [f"| {code} | {_cell(meaning)} |" for code, meaning in sorted(EXIT_CODES.items())]
    return "\n".join(rows) + "\n"


CLI_COMMANDS = ("demo", "serve", "load", "train", "materialize", "export", "dataset", "retrain", "models",
                "models list", "models promote", "models shadow", "models rollback",
                "models shadow-report", "bench", "simulate", "evaluate", "gate")


def cli_help() -> str:
    """`nextbest --help` and each command's, as the installed CLI prints them."""
    import os
    import subprocess

    env = {**os.environ, "COLUMNS": "92", "PYTHONPATH": str(DOCS.parent)}
    blocks = []
    for command in ("", *CLI_COMMANDS):
        argv = [sys.executable, "-m", "service.cli", *command.split(), "--help"]
        done = subprocess.run(argv, capture_output=True, text=True, env=env, cwd=DOCS.parent,
                              timeout=120, check=False)
        if done.returncode != 0:
            raise RuntimeError(f"`nextbest {command} --help` failed: {done.stderr.strip()}")
        title = f"nextbest {command}".strip()
        blocks.append(f"### `{title}`\n\n```text\n{done.stdout.rstrip()}\n```\n")
    return "\n".join(blocks)


GENERATORS: dict[str, Callable[[], str]] = {
    "cli": cli_help,
    "settings": settings_table,
    "metrics": metrics_table,
    "recording_rules": recording_rules_table,
    "alerts": alerts_table,
    "export_decisions": export_decisions_table,
    "export_feedback": export_feedback_table,
    "interactions": interactions_table,
    "retrain_exit_codes": retrain_exit_codes_table,
}


def render(text: str) -> str:
    def replace(match: re.Match[str]) -> str:
        name = match["name"]
        if name not in GENERATORS:
            raise ValueError(f"unknown generated section {name!r} (known: {sorted(GENERATORS)})")
        return match.group(1) + GENERATORS[name]() + match.group(4)

    return SECTION.sub(replace, text)


def stale_pages(docs: Path = DOCS, write: bool = False) -> list[Path]:
    """The pages whose generated sections differ from the code (rewritten if `write`)."""
    stale = []
    for page in sorted(docs.rglob("*.md")):
        text = page.read_text()
        fresh = render(text)
        if fresh != text:
            stale.append(page)
            if write:
                page.write_text(fresh)
    return stale


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true", help="fail if a page is out of date")
    args = parser.parse_args(argv)
    stale = stale_pages(write=not args.check)
    for page in stale:
        verb = "out of date" if args.check else "rewritten"
        print(f"{page.relative_to(DOCS.parent)}: {verb}", file=sys.stderr if args.check else sys.stdout)
    if args.check and stale:
        print("run: python docs/generate.py", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
