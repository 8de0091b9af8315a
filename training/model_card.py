"""The model card: what a registered version is, in a page a reviewer reads before promoting.

`model_card.md` next to the manifest says what the manifest records (data window, parent
version, inputs, sha256, encoding fingerprint) and the holdout metrics with the
reliability table; `reliability.png` draws that table when matplotlib (the `bench`
extra) is installed. The card is written after the manifest, so it never decides what a
version is: the manifest does, and the service reads only the manifest.
"""

from __future__ import annotations

import importlib.util
import logging
from pathlib import Path
from typing import Any

from service.manifest import ModelManifest

log = logging.getLogger(__name__)

CARD_FILE = "model_card.md"
RELIABILITY_PLOT = "reliability.png"

#: metric -> what it means, in the order the card lists them
METRICS = {
    "auc": "ROC AUC on the holdout (ranking quality; 0.5 is chance)",
    "log_loss": "log loss on the holdout (lower is better)",
    "brier": "Brier score on the holdout (lower is better)",
    "ece": "expected calibration error over the reliability table's bins",
    "base_rate": "share of positive labels in the holdout",
    "mean_prediction": "mean predicted probability on the holdout",
    "n_train": "training rows",
    "n_holdout": "holdout rows (the latest in time)",
}


def write_model_card(directory: Path, manifest: ModelManifest) -> Path:
    """Write `model_card.md` (and `reliability.png` when it can be drawn) into `directory`."""
    table: list[dict[str, float]] = list(manifest.training.get("calibration") or [])
    plot = _reliability_plot(directory / RELIABILITY_PLOT, table, manifest)
    path = directory / CARD_FILE
    path.write_text(render(manifest, table, plot))
    return path


def render(manifest: ModelManifest, table: list[dict[str, float]], plot: Path | None) -> str:
    window = manifest.data_window or {}
    lines = [
        f"# {manifest.name} v{manifest.version}",
        "",
        f"Registered {manifest.created_at}; algorithm `{manifest.algorithm}`; "
        f"parent version: {('v' + manifest.parent_version) if manifest.parent_version else 'none'}. "
        "Registering does not serve it: `nextbest models promote "
        f"{manifest.version}` does.",
        "",
        "| | |",
        "|---|---|",
        f"| training data | {window.get('start', '?')} to {window.get('end', '?')} |",
        f"| holdout from | {window.get('holdout_start', '?')} |",
        f"| feature service | `{manifest.feature_service}` |",
        f"| input columns | {len(manifest.columns)} (`{manifest.input_name}`, float32) |",
        f"| encoding fingerprint | `{manifest.encoding_fingerprint or 'none recorded'}` |",
        f"| model.onnx sha256 | `{manifest.sha256}` |",
        "",
        "## Holdout metrics",
        "",
        "| metric | value | meaning |",
        "|---|---|---|",
    ]
    known = [k for k in METRICS if k in manifest.metrics]
    for key in [*known, *sorted(set(manifest.metrics) - set(known))]:
        lines.append(f"| `{key}` | {_number(manifest.metrics[key])} | {METRICS.get(key, '')} |")
    lines += ["", "## Calibration", ""]
    if not table:
        lines.append("No reliability table was recorded.")
    else:
        lines += ["Equal-count bins of the holdout, by predicted probability.", "",
                  "| bin | rows | mean predicted | observed rate |", "|---|---|---|---|"]
        lines += [f"| {i} | {int(b['n'])} | {b['predicted']:.4f} | {b['observed']:.4f} |"
                  for i, b in enumerate(table, 1)]
        lines.append("")
        lines.append(f"![reliability]({plot.name})" if plot is not None else
                     "(No plot: matplotlib, of the `bench` extra, is not installed.)")
    lines += ["", "## Inputs", "", "<details><summary>the model's input columns, in order</summary>",
              "", *(f"{i}. `{c}`" for i, c in enumerate(manifest.columns)), "", "</details>", ""]
    return "\n".join(lines)


def _number(value: Any) -> str:
    number = float(value)
    return f"{int(number)}" if number.is_integer() and abs(number) >= 1 else f"{number:.4f}"


def _reliability_plot(path: Path, table: list[dict[str, float]],
                      manifest: ModelManifest) -> Path | None:
    if not table or importlib.util.find_spec("matplotlib") is None:
        return None
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(4.5, 4.5))
    predicted = [b["predicted"] for b in table]
    observed = [b["observed"] for b in table]
    top = max([*predicted, *observed, 1e-3]) * 1.05
    ax.plot([0, top], [0, top], linestyle="--", color="grey", linewidth=1, label="perfect")
    ax.plot(predicted, observed, marker="o", label=f"v{manifest.version}")
    ax.set(xlim=(0, top), ylim=(0, top), xlabel="mean predicted", ylabel="observed rate",
           title=f"{manifest.name} v{manifest.version}: reliability (holdout)")
    ax.legend(loc="upper left")
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path
