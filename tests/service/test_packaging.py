"""The install claim: `pip install nextbest` is the Python client, with httpx and pydantic.

Two checks. The wheel built from this tree asks for httpx and pydantic unconditionally
and for everything else only under an extra, and its `server` extra covers every
third-party module the service, training and the benchmark import. And in a child
process whose meta-path finder refuses every module that neither the standard library
nor httpx and pydantic (with what they require, as installed) provide, `import
service.client` works and both clients get a typed decision from the real service.
"""

from __future__ import annotations

import ast
import importlib.metadata
import importlib.util
import json
import os
import shutil
import subprocess
import sys
import tomllib
import zipfile
from collections.abc import Iterator
from email.message import Message
from email.parser import Parser
from pathlib import Path

import pytest
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

from load_tests.processes import free_port
from service.app import create_app
from tests.demo_fixtures import DemoDirs, serve_in_thread
from tests.service.conftest import make_settings

ROOT = Path(__file__).resolve().parents[2]
PACKAGES = ("service", "features", "training", "load_tests")
CLIENT = {"httpx", "pydantic"}
#: What the client must do without: all installed here, so refusing them means something.
SERVICE_ONLY = ("fastapi", "starlette", "uvicorn", "numpy", "pandas", "feast", "onnxruntime",
                "river", "redis", "pydantic_settings", "sklearn", "prometheus_client", "orjson")
KEY = "packaging-test-key"
#: Imported by the code but left to the framework that requires it: module -> framework.
BROUGHT_BY = {"starlette": "fastapi"}


@pytest.fixture(scope="module")
def metadata(tmp_path_factory: pytest.TempPathFactory) -> Message:
    """METADATA of the wheel built from a copy of this tree (the tree stays clean).

    Built without build isolation where the installed setuptools is one the project's
    build-system accepts (`.ci/setup` installs one), else the way `pip install` would.
    """
    src = tmp_path_factory.mktemp("src")
    for name in ("pyproject.toml", "README.md", "LICENSE"):
        if (ROOT / name).exists():
            shutil.copy2(ROOT / name, src / name)
    for package in PACKAGES:
        shutil.copytree(ROOT / package, src / package, ignore=shutil.ignore_patterns("__pycache__"))
    out = tmp_path_factory.mktemp("wheel")
    isolation = ["--no-build-isolation"] if _setuptools_accepted() else []
    done = subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--quiet",
                           "--disable-pip-version-check", *isolation, "-w", str(out), str(src)],
                          capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    (wheel,) = out.glob("nextbest-*.whl")
    with zipfile.ZipFile(wheel) as archive:
        (name,) = [n for n in archive.namelist() if n.endswith(".dist-info/METADATA")]
        return Parser().parsestr(archive.read(name).decode())


def _setuptools_accepted() -> bool:
    """Whether the installed setuptools satisfies pyproject.toml's `build-system.requires`."""
    wanted = [Requirement(r) for r in tomllib.loads((ROOT / "pyproject.toml").read_text())
              ["build-system"]["requires"]]
    try:
        installed = importlib.metadata.version("setuptools")
    except importlib.metadata.PackageNotFoundError:
        return False
    return all(r.specifier.contains(installed) for r in wanted if r.name == "setuptools")


def test_the_base_install_is_httpx_and_pydantic(metadata: Message) -> None:
    requires = [Requirement(r) for r in metadata.get_all("Requires-Dist", [])]
    unconditional = {canonicalize_name(r.name) for r in requires if r.marker is None}
    assert unconditional == CLIENT
    for r in requires:
        if r.marker is not None:  # every other requirement only comes with an extra
            assert not r.marker.evaluate({"extra": ""}), str(r)
    assert set(metadata.get_all("Provides-Extra", [])) == {"server", "test", "bench"}
    assert metadata["License-Expression"] == "Apache-2.0"


def test_the_server_extra_covers_what_the_code_imports(metadata: Message) -> None:
    requires = [Requirement(r) for r in metadata.get_all("Requires-Dist", [])]

    def extra(name: str) -> set[str]:
        return {canonicalize_name(r.name) for r in requires
                if r.marker is not None and r.marker.evaluate({"extra": name})}

    server, bench = extra("server"), extra("bench")
    assert not server & CLIENT and {"fastapi", "feast", "onnxruntime", "river"} <= server
    for module, owner in BROUGHT_BY.items():
        assert module in {canonicalize_name(Requirement(r).name) for r in importlib.metadata.requires(owner) or []}
    provided = CLIENT | server | bench | set(BROUGHT_BY)
    distributions = importlib.metadata.packages_distributions()
    undeclared = {m: distributions.get(m) for m in _third_party_imports()
                  if not {canonicalize_name(d) for d in distributions.get(m, [])} & provided}
    assert undeclared == {}


def _third_party_imports() -> set[str]:
    found: set[str] = set()
    for package in PACKAGES:
        for path in (ROOT / package).rglob("*.py"):
            for node in ast.walk(ast.parse(path.read_text())):
                if isinstance(node, ast.Import):
                    found |= {a.name.partition(".")[0] for a in node.names}
                elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                    found.add(node.module.partition(".")[0])
    return found - set(sys.stdlib_module_names) - set(PACKAGES)


# --- the client with nothing but httpx and pydantic ---------------------------------------
_CLIENT_ONLY = """
import asyncio, importlib.machinery, json, os, sys, sysconfig

allowed, url, key, service_only = sys.argv[1].split(","), sys.argv[2], sys.argv[3], sys.argv[4]
library = [sysconfig.get_path("stdlib"), os.path.join(sysconfig.get_path("platstdlib"), "lib-dynload")]
before = set(sys.modules)


def python_itself(top):
    return (top in sys.stdlib_module_names
            or importlib.machinery.PathFinder.find_spec(top, library) is not None)


class ClientInstall:
    '''Refuses, as a missing module, whatever the client install would not have.'''

    @staticmethod
    def find_spec(name, path=None, target=None):
        top = name.partition(".")[0]
        if top in allowed or python_itself(top):
            return None
        raise ModuleNotFoundError(f"No module named {name!r}", name=name)


sys.meta_path.insert(0, ClientInstall)
import service.client
from service.client import NextbestClient, SyncNextbestClient
from service.schemas import DecisionResponse

with SyncNextbestClient(url, api_key=key) as nb:
    blocking = nb.decide(channel="pos", placement="checkout", context={"store_id": "s12"})


async def decide():
    async with NextbestClient(url, api_key=key) as nb:
        return await nb.decide(channel="web")

awaited = asyncio.run(decide())
assert isinstance(blocking, DecisionResponse) and isinstance(awaited, DecisionResponse)
loaded = sorted(t for t in {m.partition(".")[0] for m in set(sys.modules) - before} if not python_itself(t))
for name in service_only.split(","):
    try:
        __import__(name)
    except ModuleNotFoundError:
        continue
    raise SystemExit(f"{name} was not refused")
print(json.dumps({"file": service.client.__file__, "loaded": loaded,
                  "actions": [len(blocking.actions), len(awaited.actions)]}))
"""


def client_install_modules() -> set[str]:
    """Top-level modules of httpx, pydantic and all they require here, and of the project
    modules the client is made of."""
    distributions: dict[str, set[str]] = {}
    for module, names in importlib.metadata.packages_distributions().items():
        for name in names:
            distributions.setdefault(canonicalize_name(name), set()).add(module)
    wanted, seen = list(CLIENT), set()
    while wanted:
        name = canonicalize_name(wanted.pop())
        if name in seen:
            continue
        seen.add(name)
        for text in importlib.metadata.requires(name) or []:
            r = Requirement(text)
            if r.marker is None or r.marker.evaluate({"extra": ""}):
                wanted.append(r.name)
    return {m for name in seen for m in distributions.get(name, set())} | {"service", "features"}


@pytest.fixture(scope="module")
def service_url(demo: DemoDirs) -> Iterator[str]:
    with serve_in_thread(create_app(make_settings(demo, api_keys=KEY)), free_port()) as url:
        yield url


def test_the_client_imports_and_decides_with_httpx_and_pydantic_alone(service_url: str) -> None:
    allowed = client_install_modules()
    assert {"httpx", "httpcore", "h11", "anyio", "idna", "certifi", "pydantic", "pydantic_core",
            "typing_extensions", "annotated_types"} <= allowed
    assert not allowed & set(SERVICE_ONLY)
    assert all(importlib.util.find_spec(m) is not None for m in SERVICE_ONLY)  # refusing means something
    done = subprocess.run(
        [sys.executable, "-c", _CLIENT_ONLY, ",".join(sorted(allowed)), service_url, KEY,
         ",".join(SERVICE_ONLY)],
        cwd=ROOT, env={**os.environ, "PYTHONPATH": str(ROOT)}, capture_output=True, text=True,
        timeout=60)
    assert done.returncode == 0, done.stderr
    report = json.loads(done.stdout)
    assert Path(report["file"]).resolve() == ROOT / "service" / "client.py"
    assert set(report["loaded"]) <= allowed and {"service", "httpx"} <= set(report["loaded"])
    assert report["actions"] == [3, 3]



def test_the_package_version_is_the_one_version_source(metadata: Message) -> None:
    import service

    assert metadata["Version"] == service.__version__
