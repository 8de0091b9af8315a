"""Model manifests: the only way a model enters the service.

Layout of the registry on disk (`models/` by default):

    models/<name>/<version>/model.onnx
    models/<name>/<version>/manifest.json

Versions are positive integers; the newest is served unless one is pinned. The manifest
records the input columns in order, the FeatureService the model was trained on, the
training metrics and the sha256 of the ONNX file, which the service checks at load.
"""

from __future__ import annotations

import hashlib
import json
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
    sha256: str
    metrics: dict[str, float] = Field(default_factory=dict)
    training: dict[str, Any] = Field(default_factory=dict)


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
