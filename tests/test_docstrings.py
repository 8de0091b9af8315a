"""No measured figures in docstrings, comments or settings descriptions.

A timing, size, rate or ratio written into prose rots: the code and the machine change
and the figure stays. Prose says why, and points at the benchmark that measures it
(`nextbest bench` and its parts under load_tests/, docs/benchmarks.md). This reads the
docstrings (ast), the comments (tokenize) and the `description=` texts (pydantic Fields,
rendered into docs/configuration.md) of the project's packages, and fails on anything
that looks measured, naming file:line and the text.

What looks measured (`FIGURE`): a number with a unit of time (`us`, `ms`; `s` or
`seconds` after a decimal number), of size (`KB`, `MB`, `GB`; `bytes` after a decimal
number), a rate (`req/s`, `events/s`), a ratio (a number and `x`) and an approximation
(`~` and a number). Integers with `s` or `bytes` are left alone: those are nearly always
settings or formats ("one warning per 10 s", "4 little-endian bytes").
"""

from __future__ import annotations

import ast
import io
import re
import tokenize
from collections.abc import Iterator
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("service", "features", "training", "load_tests", "tests")

_INT = r"\d(?:[\d,]*\d)?"
_NUM = rf"(?<![\w.]){_INT}(?:\.\d+)?"
_DECIMAL = rf"(?<![\w.]){_INT}\.\d+"
FIGURE = re.compile(
    rf"""
      {_NUM}\s?(?:us|µs|μs|ms)\b                                # a time: 45 us, 0.12 ms
    | {_DECIMAL}\s?(?:s|seconds)\b                             # 1.7 s
    | {_NUM}\s?(?:[kKMG]i?B)\b                                 # a size: 0.6 KB, 3 GB
    | {_DECIMAL}\s?bytes\b
    | {_NUM}\s?k?\s?(?:req|requests|events|decisions)/s\b      # a rate: 1,000 req/s
    | {_NUM}x\b                                                # a ratio: 3x, 0.76x
    | (?<!\w)~\s?{_INT}(?:\.\d+)?                              # about: ~10% (not HEAD~3)
    """,
    re.VERBOSE,
)

#: (file, figure) -> why it is not a measurement. Keep this very small: prefer naming the
#: setting or constant over repeating its value.
ALLOWED: dict[tuple[str, str], str] = {
    ("load_tests/bench.py", "50 req/s"):
        "the configured rate of the --smoke runs, in `nextbest bench --help` (docs/cli.md)",
}


def prose(source: str) -> Iterator[tuple[int, str]]:
    """(first line, text) of every docstring, comment and `description=` string."""
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Module | ast.ClassDef | ast.FunctionDef | ast.AsyncFunctionDef):
            first = node.body[0] if node.body else None
            if (isinstance(first, ast.Expr) and isinstance(first.value, ast.Constant)
                    and isinstance(first.value.value, str)):
                yield first.value.lineno, first.value.value
        elif isinstance(node, ast.Call):
            for keyword in node.keywords:
                if (keyword.arg == "description" and isinstance(keyword.value, ast.Constant)
                        and isinstance(keyword.value.value, str)):
                    yield keyword.value.lineno, keyword.value.value
    for token in tokenize.generate_tokens(io.StringIO(source).readline):
        if token.type == tokenize.COMMENT:
            yield token.start[0], token.string


def flagged(path: str, line: int, text: str) -> list[str]:
    """`path:line: figure: the line it is on` for each figure in `text` not allowed there."""
    found = []
    for match in FIGURE.finditer(text):
        figure = " ".join(match.group().split())
        if (path, figure) in ALLOWED:
            continue
        start = text.rfind("\n", 0, match.start()) + 1
        end = text.find("\n", match.end())
        context = text[start:end if end >= 0 else len(text)].strip()
        found.append(f"{path}:{line + text.count(chr(10), 0, match.start())}: {figure!r}: {context}")
    return found


def _sources() -> Iterator[tuple[str, str]]:
    for package in PACKAGES:
        for file in sorted((ROOT / package).rglob("*.py")):
            yield file.relative_to(ROOT).as_posix(), file.read_text(encoding="utf-8")


def test_no_measured_figures_in_prose() -> None:
    found = [f for path, source in _sources() for line, text in prose(source)
             for f in flagged(path, line, text)]
    assert not found, ("measured figures rot: say why, and point at the benchmark that measures "
                       "it (docs/benchmarks.md)\n" + "\n".join(found))


def test_every_allowed_figure_is_still_there() -> None:
    for path, figure in ALLOWED:
        texts = [text for _, text in prose((ROOT / path).read_text(encoding="utf-8"))]
        assert any(figure in " ".join(t.split()) for t in texts), f"{path}: {figure!r} is gone"


@pytest.mark.parametrize(("text", "figure"), [
    ("a lookup costs ~45 us on a slow machine", "~45"),
    ("the copy took 1.5 ms for the bench's customers", "1.5 ms"),
    ("ready in 1.7\ns from a snapshot", "1.7\ns"),
    ("about 3 GB peak for `nextbest train`", "3 GB"),
    ("0.6 KB each with 5 contacts", "0.6 KB"),
    ("1,596 features, 6.4 bytes a row", "6.4 bytes"),
    ("at 1,000 req/s it keeps a fifth of the machine busy", "1,000 req/s"),
    ("25,000-29,000 events/s", "29,000 events/s"),
    ("0.50-0.76x redis-py's client CPU", "0.76x"),
    ("an oracle earns over 2x what random picks earn", "2x"),
])
def test_the_detector_flags_a_figure(text: str, figure: str) -> None:
    match = FIGURE.search(text)
    assert match is not None and match.group() == figure
    assert len(flagged("service/example.py", 1, text)) == 1


@pytest.mark.parametrize("text", [
    "`git worktree add /tmp/before HEAD~3`",
    "5 bytes per catalog action each, at most",
    "murmur3-32 of the name as 4 little-endian bytes",
    "one warning per 10 s; the last 30 s of scrapes",
    "`window_seconds`, `_seconds` and `_total` names, p99, int32, float64, uuid4",
    "Feast 0.67 stores it; on 3.11 wait_for can swallow a cancel",
    "bursts of 20 decisions, at most 2,000 in all; 0x1f; n x m",
])
def test_the_detector_passes_what_is_not_a_figure(text: str) -> None:
    assert flagged("service/example.py", 1, text) == []


def test_an_allowed_figure_passes_only_in_its_file() -> None:
    text = "`--smoke` (CI): nextbest only, 50 req/s of the same mix"
    assert flagged("load_tests/bench.py", 1, text) == []
    assert flagged("service/api.py", 7, text) == [
        "service/api.py:7: '50 req/s': `--smoke` (CI): nextbest only, 50 req/s of the same mix"
    ]


def test_a_figure_is_found_in_docstrings_comments_and_descriptions() -> None:
    source = '''"""Module: ready in
1.7 s."""
x = Field(0, description="about " "3 GB")  # ~40 us
def f() -> None:
    """Costs 0.1 ms."""
'''
    found = [f for line, text in prose(source) for f in flagged("m.py", line, text)]
    assert sorted(f.split(": ")[0] for f in found) == ["m.py:2", "m.py:3", "m.py:3", "m.py:5"]
