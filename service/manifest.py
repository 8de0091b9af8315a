"""Model manifests: the only way a model enters the service.

Layout of the registry on disk (`models/` by default):

    models/<name>/<version>/model.onnx
    models/<name>/<version>/manifest.json

Versions are positive integers. Registering one does not serve it: the registry's
champion pointer (`service/registry.py`, set by `nextbest models promote`) says which
version every replica serves. The manifest
records the input columns in order, what they were encoded from (the world's encodings,
the vocabularies and defaults they read) with its fingerprint, the FeatureService the
model was trained on, the training metrics and the sha256 of the ONNX file, which the
service checks at load.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from pydantic import BaseModel, Field

MANIFEST_FILE = "manifest.json"
MODEL_FILE = "model.onnx"


class ModelManifest(BaseModel):
    name: str
    version: str
    created_at: str
    algorithm: str
    feature_service: str
    columns: list[str] = Field(description="Model input columns, in input order.")
    input_name: str = "input"
    output_name: str = "probabilities"
    logit_name: str | None = Field(
        None, description="Output with the raw logit [n, 1], when the model has one "
        "(pairwise and tree models); the service then reads it instead of the probabilities."
    )
    encoding_fingerprint: str | None = Field(
        None, description="sha256 of `encoding` (`encoding_fingerprint`); None: a model "
        "trained before manifests recorded it")
    encoding: dict[str, Any] | None = Field(
        None, description="What the input columns were encoded from (`Encoder.encoding`).")
    sha256: str
    metrics: dict[str, float] = Field(default_factory=dict)
    training: dict[str, Any] = Field(default_factory=dict)
    data_window: dict[str, str] | None = Field(
        None, description="The event times the model was trained on: `start` and `end` "
        "(ISO 8601) of its training rows, `holdout_start` of its holdout.")
    parent_version: str | None = Field(
        None, description="The champion when this version was trained (None: there was none).")


def encoding_fingerprint(encoding: Mapping[str, Any]) -> str:
    """sha256 of the canonical JSON (sorted keys, no spaces) of an encoding description."""
    canonical = json.dumps(encoding, sort_keys=True, separators=(",", ":"), ensure_ascii=True)
    return hashlib.sha256(canonical.encode()).hexdigest()


def encoding_differences(trained: Mapping[str, Any], served: Mapping[str, Any]) -> list[str]:
    """The keys (`customer.3`, `vocabularies.segments`, `defaults.customer.recency_days`)
    whose value differs between two encoding descriptions."""
    out: list[str] = []

    def walk(a: Any, b: Any, key: str) -> None:
        if isinstance(a, Mapping) and isinstance(b, Mapping):
            for k in [*a, *(k for k in b if k not in a)]:
                walk(a.get(k), b.get(k), f"{key}.{k}" if key else str(k))
        elif isinstance(a, list) and isinstance(b, list) and key.count(".") < 1:
            for i in range(max(len(a), len(b))):
                walk(a[i] if i < len(a) else None, b[i] if i < len(b) else None, f"{key}.{i}")
        elif a != b:
            out.append(key)

    walk(trained, served, "")
    return out


def sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def versions(models_dir: Path, name: str) -> list[int]:
    """Registered versions of a model, ascending."""
    root = models_dir / name
    if not root.is_dir():
        return []
    return sorted(
        int(p.name) for p in root.iterdir()
        if p.name.isdigit() and (p / MANIFEST_FILE).is_file()
    )


def next_version(models_dir: Path, name: str) -> str:
    found = versions(models_dir, name)
    return str(found[-1] + 1 if found else 1)


def write_model(
    models_dir: Path, name: str, onnx_bytes: bytes, **fields: Any
) -> tuple[Path, ModelManifest]:
    """Register a new version: write model.onnx, hash it, write the manifest last."""
    version = next_version(models_dir, name)
    directory = models_dir / name / version
    directory.mkdir(parents=True, exist_ok=False)
    (directory / MODEL_FILE).write_bytes(onnx_bytes)
    manifest = ModelManifest(
        name=name, version=version, sha256=sha256_file(directory / MODEL_FILE), **fields
    )
    tmp = directory / (MANIFEST_FILE + ".tmp")
    tmp.write_text(json.dumps(manifest.model_dump(), indent=2))
    tmp.rename(directory / MANIFEST_FILE)
    return directory, manifest


def read_manifest(directory: Path) -> ModelManifest:
    return ModelManifest.model_validate_json((directory / MANIFEST_FILE).read_bytes())
