"""The generated sections of the docs match the code they are generated from."""

from __future__ import annotations

import importlib.util
import shutil
import sys
from pathlib import Path
from types import ModuleType

import pytest

ROOT = Path(__file__).resolve().parents[2]


def _load_generator() -> ModuleType:
    spec = importlib.util.spec_from_file_location("docs_generate", ROOT / "docs" / "generate.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


generate = _load_generator()


def test_committed_pages_are_up_to_date() -> None:
    stale = generate.stale_pages()
    assert not stale, f"out of date: {[str(p) for p in stale]}; run `python docs/generate.py`"


def test_every_section_is_generated_somewhere() -> None:
    text = "".join(p.read_text() for p in (ROOT / "docs").rglob("*.md"))
    for name in generate.GENERATORS:
        assert f"<!-- generated: {name} -->" in text, f"no page shows the {name} section"


def test_a_hand_edit_of_a_generated_section_is_caught(tmp_path: Path) -> None:
    docs = tmp_path / "docs"
    shutil.copytree(ROOT / "docs", docs)
    page = docs / "configuration.md"
    page.write_text(page.read_text().replace("`NEXTBEST_EPSILON`", "`NEXTBEST_EPSILON_TYPO`"))
    assert generate.stale_pages(docs) == [page]
    generate.stale_pages(docs, write=True)
    assert generate.stale_pages(docs) == []
    assert "`NEXTBEST_EPSILON`" in page.read_text()


def test_settings_table_names_every_setting_with_its_default() -> None:
    from service.settings import Settings

    table = generate.settings_table()
    for name in Settings.model_fields:
        assert f"| `NEXTBEST_{name.upper()}` |" in table
    assert "| `NEXTBEST_EPSILON` | float | `0.02` | >= 0.0, <= 1.0 |" in table


def test_metrics_table_names_every_registered_series() -> None:
    from prometheus_client import CollectorRegistry, generate_latest

    from service.metrics import Metrics

    registry = CollectorRegistry()
    Metrics(registry)
    # prometheus_client adds a `<counter>_created` gauge family per counter: not ours
    exposed = {line.split()[2] for line in generate_latest(registry).decode().splitlines()
               if line.startswith("# TYPE") and not line.split()[2].endswith("_created")}
    assert len(exposed) >= 20
    table = generate.metrics_table()
    for name in exposed:
        assert f"| `{name}" in table, f"{name} is exported but not documented"
    assert "| `nextbest_decisions_total` | counter | `channel` |" in table


def test_an_unknown_section_is_an_error() -> None:
    with pytest.raises(ValueError, match="unknown generated section 'nope'"):
        generate.render("<!-- generated: nope -->\nx\n<!-- end generated -->")
