"""The offline model: an ONNX Runtime session loaded only through its manifest.

Loading checks the sha256 recorded in the manifest, the input name, width and dtype,
and that the manifest's columns are exactly the columns the service's encoder produces;
any mismatch refuses the model with a message that says what is wrong.
"""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import onnxruntime as ort

from service.errors import ModelError
from service.manifest import MODEL_FILE, ModelManifest, read_manifest, sha256_file, versions

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

    def __init__(self, directory: Path, expected_columns: list[str]) -> None:
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
            missing = [c for c in expected_columns if c not in manifest.columns]
            extra = [c for c in manifest.columns if c not in expected_columns]
            raise ModelError(
                f"model {manifest.name} v{manifest.version} was trained on other input "
                f"columns than this service encodes (missing {missing}, unexpected {extra}, "
                "or a different order)"
            )
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
        self._session = session
        self._input = manifest.input_name
        self._outputs = [manifest.output_name]
        self._logit = [manifest.logit_name] if manifest.logit_name else None

    @property
    def version(self) -> str:
        return self.manifest.version

    def predict(self, x: np.ndarray) -> np.ndarray:
        """P(accept) per row, float64, clipped away from 0 and 1."""
        probs = self._session.run(self._outputs, {self._input: x})[0]
        p = probs[:, 1] if probs.ndim == 2 else probs
        return np.clip(p.astype(np.float64), _EPS, 1.0 - _EPS)

    def logits(self, x: np.ndarray) -> np.ndarray:
        """logit(P(accept)) per row, float64, within the range `predict` is clipped to.

        Read straight from the model's logit output when it has one (no sigmoid and back);
        otherwise the logit of `predict`.
        """
        if self._logit is None:
            return logit(self.predict(x))
        z = self._session.run(self._logit, {self._input: x})[0][:, 0].astype(np.float64)
        # np.minimum/np.maximum in place: np.clip's Python wrapper costs more than the work
        return np.minimum(np.maximum(z, -_MAX_LOGIT, out=z), _MAX_LOGIT, out=z)


def logit(p: np.ndarray) -> np.ndarray:
    return np.log(p) - np.log1p(-p)


def sigmoid(z: np.ndarray) -> np.ndarray:
    return 1.0 / (1.0 + np.exp(-z))
