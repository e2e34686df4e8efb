"""The relevance decision saved with a checkpoint: ``calibrator.json``, fitted on the dev split.

``querylife eval`` fits a :class:`~querylife.relevance.RelevanceCalibrator` on dev for every method
(:func:`querylife.evaluate.decide`), but a served model needs the same decision without the data: this module
scores a dataset's dev split with a checkpoint, fits the calibrator with the config's ``eval`` settings exactly
as ``eval`` does, and writes it (plain JSON, atomically) into the checkpoint directory, tied to the checkpoint it
was fitted for by its SHA-256 (``store.checkpoint_hash``, as the embedding store names its owner).
``querylife train`` calls it on ``OUT/best``; ``querylife calibrate`` refits it.

Example::

    result = calibrate_checkpoint("runs/exp1/best", dataset, config.eval)
    cal = load_calibrator("runs/exp1/best")          # None when absent or fitted for other weights
    cal.predict_proba(scores), cal.predict(scores)
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from .atomic import atomic_write_text
from .data.prepare import Dataset
from .model import QueryLifeModel
from .relevance import RelevanceCalibrator
from .scoring import FeatureCache, score_pairs
from .store import checkpoint_hash

__all__ = [
    "CALIBRATOR_NAME",
    "CalibrationResult",
    "calibrate_checkpoint",
    "calibrate_model",
    "save_calibrator",
    "decision_settings",
    "load_calibrator",
]

CALIBRATOR_NAME = "calibrator.json"


def decision_settings(eval_config) -> dict[str, Any]:
    """RelevanceCalibrator settings from an :class:`~querylife.config.EvalConfig`, as ``querylife eval`` builds
    them (:class:`querylife.suite.Suite`)."""
    return {
        "method": eval_config.calibration,
        "threshold_rule": eval_config.threshold_rule,
        "target_precision": eval_config.target_precision,
    }


@dataclass
class CalibrationResult:
    """What :func:`calibrate_model` fitted: the calibrator (None when dev cannot fit one) and why not."""

    calibrator: RelevanceCalibrator | None
    path: Path | None  # the calibrator.json written (None when nothing was fitted)
    dev_pairs: int
    reason: str = ""  # why no calibrator, when there is none

    def summary(self) -> str:
        """One line for a terminal."""
        if self.calibrator is None:
            return f"no calibrator: {self.reason}"
        s = self.calibrator.dev_stats
        return (
            f"calibrator ({self.calibrator.method}, {self.calibrator.threshold_rule}) fitted on {self.dev_pairs} dev "
            f"pairs: threshold {self.calibrator.threshold:.4f}, dev precision {s.get('precision', float('nan')):.3f} "
            f"recall {s.get('recall', float('nan')):.3f} F1 {s.get('f1', float('nan')):.3f}; {self.path}"
        )


def calibrate_model(
    model: QueryLifeModel,
    data: Dataset,
    eval_config,
    checkpoint: str | Path,
    *,
    cache: FeatureCache | None = None,
    batch_size: int = 512,
) -> CalibrationResult:
    """Score ``data``'s dev split with ``model`` (the weights saved in ``checkpoint``), fit the decision with
    ``eval_config``'s settings as :func:`querylife.evaluate.decide` does, write ``checkpoint/calibrator.json``.

    When dev has a single class or non-finite scores no calibrator can be fitted (``eval`` then reports ranking
    metrics only): a stale ``calibrator.json`` is removed and the result says why.
    """
    checkpoint = Path(checkpoint)
    dev = data.splits["dev"]
    target = checkpoint / CALIBRATOR_NAME
    scores = score_pairs(model, data, dev, cache or FeatureCache(), batch_size).score if len(dev) else np.zeros(0)
    reason = ""
    if not len(dev):
        reason = "the dev split is empty"
    elif dev["positive"].nunique() != 2:
        reason = "the dev split holds a single class (needs relevant and irrelevant pairs)"
    elif not np.isfinite(scores).all():
        reason = "the model gives non-finite scores on dev"
    if reason:
        target.unlink(missing_ok=True)
        return CalibrationResult(None, None, len(dev), reason)
    cal = RelevanceCalibrator(**decision_settings(eval_config)).fit(scores, dev["positive"].to_numpy())
    return CalibrationResult(cal, save_calibrator(cal, checkpoint, len(dev)), len(dev))


def save_calibrator(calibrator: RelevanceCalibrator, checkpoint: str | Path, dev_pairs: int) -> Path:
    """Write ``checkpoint/calibrator.json`` for a calibrator already fitted on the dev split of that checkpoint's
    scores (as ``querylife eval`` fits one), recording which weights it was fitted for; returns the path.

    Example::

        result, scored, calibrator = evaluate_model(model, data, ...)   # saved in runs/x/best
        save_calibrator(calibrator, "runs/x/best", len(data.splits["dev"]))
    """
    target = Path(checkpoint) / CALIBRATOR_NAME
    payload = calibrator.to_dict()
    payload["fitted_for"] = {"checkpoint_sha256": checkpoint_hash(checkpoint), "dev_pairs": int(dev_pairs)}
    atomic_write_text(target, json.dumps(payload, indent=2) + "\n")
    return target


def calibrate_checkpoint(
    checkpoint: str | Path, data: Dataset, eval_config, *, batch_size: int = 512
) -> CalibrationResult:
    """:func:`calibrate_model` for a checkpoint directory (loaded with ``QueryLifeModel.from_pretrained``)."""
    model = QueryLifeModel.from_pretrained(checkpoint)
    return calibrate_model(model, data, eval_config, checkpoint, batch_size=batch_size)


def load_calibrator(checkpoint: str | Path) -> tuple[RelevanceCalibrator | None, str]:
    """The checkpoint's calibrator and a note: ``(None, why)`` when there is none, it cannot be read, or it was
    fitted for another checkpoint (it was retrained in place after calibrating)."""
    path = Path(checkpoint) / CALIBRATOR_NAME
    if not path.is_file():
        return None, f"{path} is missing: run `querylife calibrate --checkpoint {checkpoint}`"
    try:
        payload = json.loads(path.read_text())
        cal = RelevanceCalibrator.from_dict(payload)
    except (OSError, ValueError, TypeError) as err:
        return None, f"{path}: cannot read the calibrator: {err}"
    fitted = (payload.get("fitted_for") or {}).get("checkpoint_sha256")
    if fitted is not None and fitted != checkpoint_hash(checkpoint):
        return None, f"{path} was fitted for other weights (the checkpoint changed since): recalibrate it"
    return cal, f"{path} ({cal.method}, {cal.threshold_rule}, threshold {cal.threshold:.4f})"
