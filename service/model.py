"""The offline model: an ONNX Runtime session loaded only through its manifest.

Loading checks the sha256 recorded in the manifest, the input name, width and dtype,
that the manifest's columns are exactly the columns the service's encoder produces, and
that they were encoded as the service encodes them (the encoding fingerprint: the same
column names over another vocabulary, default or clip mean other inputs); any mismatch
refuses the model with a message that says what is wrong. A manifest from before the
fingerprint is served when its columns match, with a warning.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
import onnxruntime as ort

from service.errors import ModelError
from service.manifest import (
    MODEL_FILE,
    ModelManifest,
    encoding_differences,
    encoding_fingerprint,
    read_manifest,
    sha256_file,
    versions,
)

log = logging.getLogger(__name__)

_EPS = 1e-6
_MAX_LOGIT = float(np.log((1.0 - _EPS) / _EPS))


def resolve_model_dir(models_dir: Path, name: str, version: str | None) -> Path:
    """The directory of the pinned version, or of the newest registered one."""
    if version is None:
        found = versions(models_dir, name)
        if not found:
            raise ModelError(
                f"no model '{name}' registered under {models_dir}: run `nextbest train` "
                "(or `nextbest demo`) first"
            )
        version = str(found[-1])
    directory = models_dir / name / version
    if not directory.is_dir():
        raise ModelError(f"model {name} version {version} not found under {models_dir}")
    return directory


class OnnxScorer:
    """Propensity of acceptance for a float32 matrix [n_candidates x n_columns]."""

    def __init__(self, directory: Path, expected_columns: list[str],
                 encoding: Mapping[str, Any] | None = None) -> None:
        """`encoding`: what the service encodes its columns from (`Encoder.encoding`);
        a model trained on another encoding is refused (None: not checked)."""
        try:
            manifest = read_manifest(directory)
        except (OSError, ValueError) as exc:
            raise ModelError(f"cannot read the manifest in {directory}: {exc}") from exc
        path = directory / MODEL_FILE
        if not path.is_file():
            raise ModelError(f"{path} is missing")
        digest = sha256_file(path)
        if digest != manifest.sha256:
            raise ModelError(
                f"{path} has sha256 {digest} but its manifest records {manifest.sha256}: "
                "the file was changed or corrupted"
            )
        if manifest.columns != expected_columns:
            raise ModelError(
                f"model {manifest.name} v{manifest.version} was trained on other input "
                f"columns than this service encodes: {column_differences(manifest.columns, expected_columns)}"
            )
        if encoding is not None:
            _check_encoding(manifest, encoding)
        options = ort.SessionOptions()
        options.intra_op_num_threads = 1
        options.inter_op_num_threads = 1
        options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
        try:
            session = ort.InferenceSession(
                str(path), options, providers=["CPUExecutionProvider"]
            )
        except Exception as exc:  # onnxruntime raises its own untyped errors
            raise ModelError(f"onnxruntime cannot load {path}: {exc}") from exc
        inputs = {i.name: i for i in session.get_inputs()}
        spec = inputs.get(manifest.input_name)
        if spec is None or len(inputs) != 1:
            raise ModelError(
                f"model inputs are {sorted(inputs)}, manifest names '{manifest.input_name}'"
            )
        if spec.type != "tensor(float)" or spec.shape[-1] != len(expected_columns):
            raise ModelError(
                f"model input is {spec.type} {spec.shape}, expected float32 "
                f"[n, {len(expected_columns)}]"
            )
        outputs = [o.name for o in session.get_outputs()]
        for name in (manifest.output_name, manifest.logit_name):
            if name is not None and name not in outputs:
                raise ModelError(f"model outputs are {outputs}, manifest names '{name}'")
        self.manifest: ModelManifest = manifest
        #: `name:version`, as responses and decision records name the model
        self.label = f"{manifest.name}:{manifest.version}"
        self._session = session
        # The C session itself: the Python wrapper checks the input names (and graph
        # capture) on every call, which a small model feels; a run that fails is run
        # again through the wrapper, so the error is the wrapper's (`_run`).
        self._direct = getattr(session, "_sess", session).run
        self._input = manifest.input_name
        self._outputs = [manifest.output_name]
        self._logit = [manifest.logit_name] if manifest.logit_name else None

    @property
    def version(self) -> str:
        return self.manifest.version

    def predict(self, x: np.ndarray) -> np.ndarray:
        """P(accept) per row, float64, clipped away from 0 and 1."""
        probs = self._run(self._outputs, x)
        p = probs[:, 1] if probs.ndim == 2 else probs
        return np.clip(p.astype(np.float64), _EPS, 1.0 - _EPS)

    def logits(self, x: np.ndarray) -> np.ndarray:
        """logit(P(accept)) per row, float64, within the range `predict` is clipped to.

        Read straight from the model's logit output when it has one (no sigmoid and back);
        otherwise the logit of `predict`.
        """
        if self._logit is None:
            return logit(self.predict(x))
        z = self._run(self._logit, x)[:, 0].astype(np.float64)
        # np.minimum/np.maximum in place: np.clip's Python wrapper costs more than the work
        return np.minimum(np.maximum(z, -_MAX_LOGIT, out=z), _MAX_LOGIT, out=z)

    def _run(self, outputs: list[str], x: np.ndarray) -> np.ndarray:
        """The first of `outputs` for input `x`."""
        feed = {self._input: x}
        try:
            return self._direct(outputs, feed, None)[0]  # type: ignore[no-any-return]
        except Exception:  # onnxruntime's untyped errors: the wrapper raises (or answers)
            return self._session.run(outputs, feed)[0]  # type: ignore[no-any-return]


def column_differences(trained: list[str], served: list[str]) -> str:
    """`missing [...]; extra [...]; reordered [...]`: what the service encodes and the model
    lacks, what the model has and the service does not encode, and the shared columns at
    another position."""
    missing = [c for c in served if c not in trained]
    extra = [c for c in trained if c not in served]
    shared_trained = [c for c in trained if c in served]
    shared_served = [c for c in served if c in trained]
    reordered = [c for c, d in zip(shared_trained, shared_served, strict=True) if c != d]
    parts = [f"{name} {columns}" for name, columns in
             (("missing", missing), ("extra", extra), ("reordered", reordered)) if columns]
    return "; ".join(parts)


def _check_encoding(manifest: ModelManifest, encoding: Mapping[str, Any]) -> None:
    label = f"model {manifest.name} v{manifest.version}"
    if manifest.encoding_fingerprint is None:
        log.warning("%s records no encoding fingerprint (trained before manifests had one); "
                    "its columns match this service's, so it is served: retrain to be sure "
                    "it was encoded as the service encodes", label)
        return
    if manifest.encoding_fingerprint == encoding_fingerprint(encoding):
        return
    if manifest.encoding is None:
        detail = "the manifest does not record the encodings themselves"
    else:
        detail = "differing: " + ", ".join(encoding_differences(manifest.encoding, encoding))
    raise ModelError(
        f"{label} was trained on other encodings than this service's world declares, for the "
        f"same columns ({detail}): retrain it (`nextbest train`) on this world"
    )


def logit(p: np.ndarray) -> np.ndarray:
    return np.log(p) - np.log1p(-p)


def sigmoid(z: np.ndarray) -> np.ndarray:
    return 1.0 / (1.0 + np.exp(-z))
