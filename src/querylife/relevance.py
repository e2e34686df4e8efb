"""The relevance decision: from a model score to a calibrated probability and a relevant / not-relevant label.

A :class:`RelevanceCalibrator` is fitted on a *dev* split (never on the test split it is evaluated on): it
maps scores to probabilities (Platt scaling or isotonic regression) and picks a probability threshold by a
rule (maximum F1, or the lowest threshold reaching a target precision). It saves to plain JSON, never a
pickle, so a served model can load it from an untrusted place.

Example:
    >>> import numpy as np
    >>> scores = np.array([0.1, 0.2, 0.3, 0.6, 0.7, 0.9])
    >>> positive = np.array([0, 0, 1, 0, 1, 1], dtype=bool)
    >>> cal = RelevanceCalibrator().fit(scores, positive)
    >>> cal.predict(np.array([0.05, 0.95])).tolist()
    [False, True]
"""

from __future__ import annotations

import math
import warnings
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from sklearn.isotonic import IsotonicRegression
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import precision_recall_curve

METHODS: tuple[str, ...] = ("logistic", "isotonic")
THRESHOLD_RULES: tuple[str, ...] = ("max_f1", "target_precision")
_FORMAT_VERSION = 1


def _check_scores(scores: Any, name: str = "scores") -> np.ndarray:
    arr = np.asarray(scores, dtype=float)
    if arr.ndim == 2 and 1 in arr.shape:  # accept column / row vectors, e.g. model outputs of shape (n, 1)
        arr = arr.reshape(-1)
    if arr.ndim != 1:
        raise ValueError(f"{name} must be one-dimensional, got shape {np.shape(scores)}")
    bad = ~np.isfinite(arr)
    if bad.any():
        raise ValueError(
            f"{name} has {int(bad.sum())} NaN or infinite value(s), first at index {int(np.argmax(bad))}"
        )
    return arr


def _check_fit_input(scores: Any, positive: Any) -> tuple[np.ndarray, np.ndarray]:
    s = _check_scores(scores)
    y_raw = np.asarray(positive).reshape(-1)
    if len(s) == 0:
        raise ValueError("cannot fit a relevance calibrator on empty input")
    if len(s) != len(y_raw):
        raise ValueError(f"scores and positive differ in length: {len(s)} vs {len(y_raw)}")
    if y_raw.dtype == bool:
        y = y_raw
    else:
        try:
            y_f = y_raw.astype(float)
        except (TypeError, ValueError) as exc:
            raise ValueError("positive must be boolean or 0/1") from exc
        if not np.isin(y_f, (0.0, 1.0)).all():
            raise ValueError(f"positive must be boolean or 0/1, got values {np.unique(y_f)[:5].tolist()}")
        y = y_f.astype(bool)
    if y.all() or not y.any():
        raise ValueError(
            f"positive holds a single class ({int(y.sum())} positive of {len(y)}): a calibrator needs both "
            "relevant and irrelevant examples"
        )
    return s, y


def _sigmoid(z: np.ndarray) -> np.ndarray:
    # Split by sign so that large |z| neither overflows exp nor loses precision.
    out = np.empty_like(z, dtype=float)
    pos = z >= 0
    out[pos] = 1.0 / (1.0 + np.exp(-z[pos]))
    ez = np.exp(z[~pos])
    out[~pos] = ez / (1.0 + ez)
    return out


def _f1(precision: np.ndarray, recall: np.ndarray) -> np.ndarray:
    with np.errstate(invalid="ignore", divide="ignore"):
        f1 = 2 * precision * recall / (precision + recall)
    return np.nan_to_num(f1, nan=0.0)


@dataclass
class RelevanceCalibrator:
    """Score -> probability -> label, fitted on a dev split.

    ``method``: ``"logistic"`` (Platt scaling: ``p = sigmoid(coef * score + intercept)``, smooth and strictly
    monotone, two parameters, safe on small dev sets) or ``"isotonic"`` (a monotone step function, more
    flexible, needs more data and gives tied probabilities on flat steps).

    ``threshold_rule``: ``"max_f1"`` picks the probability threshold with the best F1 on dev;
    ``"target_precision"`` the lowest threshold whose dev precision reaches ``target_precision`` (maximum
    recall at that precision), falling back to max F1 with a warning when no threshold reaches it.

    A pair is predicted relevant when ``predict_proba(score) >= threshold``.

    Example:
        >>> import numpy as np
        >>> s = np.array([0.1, 0.2, 0.3, 0.6, 0.7, 0.9]); y = np.array([0, 0, 1, 0, 1, 1])
        >>> cal = RelevanceCalibrator(threshold_rule="target_precision", target_precision=1.0).fit(s, y)
        >>> cal.predict(s).tolist()
        [False, False, False, False, True, True]
        >>> RelevanceCalibrator.from_dict(cal.to_dict()).predict(s).tolist()
        [False, False, False, False, True, True]
    """

    method: str = "logistic"
    threshold_rule: str = "max_f1"
    target_precision: float = 0.9
    threshold: float = math.nan
    # Fitted state. Logistic: coef / intercept on the raw score. Isotonic: the step function's knots.
    coef: float = math.nan
    intercept: float = math.nan
    x_thresholds: list[float] = field(default_factory=list, repr=False)
    y_thresholds: list[float] = field(default_factory=list, repr=False)
    # Dev-set diagnostics at the chosen threshold (for model cards and reports).
    dev_stats: dict[str, float] = field(default_factory=dict, repr=False)

    def __post_init__(self) -> None:
        if self.method not in METHODS:
            raise ValueError(f"method must be one of {METHODS}, got {self.method!r}")
        if self.threshold_rule not in THRESHOLD_RULES:
            raise ValueError(f"threshold_rule must be one of {THRESHOLD_RULES}, got {self.threshold_rule!r}")
        if not 0.0 < float(self.target_precision) <= 1.0:
            raise ValueError(f"target_precision must be in (0, 1], got {self.target_precision}")

    # ----------------------------------------------------------------------------------------------------
    @property
    def is_fitted(self) -> bool:
        return not math.isnan(self.threshold)

    def fit(self, scores: np.ndarray, positive: np.ndarray) -> RelevanceCalibrator:
        """Fit the probability map and choose the threshold on dev ``scores`` / ``positive`` labels."""
        s, y = _check_fit_input(scores, positive)
        if self.method == "logistic":
            # Standardise first so that one regularisation strength fits any score scale (cosines in
            # [-1, 1], BM25 in [0, 30]); a large C keeps it close to unregularised Platt scaling while
            # staying finite on separable dev sets. The fit is folded back to the raw score so that
            # prediction needs no scaler.
            mu, sd = float(s.mean()), float(s.std())
            sd = sd if sd > 0 else 1.0
            lr = LogisticRegression(C=1e4, max_iter=1000)
            lr.fit(((s - mu) / sd).reshape(-1, 1), y)
            a, c = float(lr.coef_[0, 0]), float(lr.intercept_[0])
            if a <= 0:
                # A falling probability would invert the model's ranking; the honest calibration of a score
                # that does not separate the classes on dev is the base rate, whatever the score.
                warnings.warn(
                    "the score is not positively related to relevance on the dev set (Platt slope "
                    f"{a / sd:.3g}); using the constant base rate {y.mean():.3f} as the probability",
                    RuntimeWarning,
                    stacklevel=2,
                )
                a, c = 0.0, float(np.log(y.mean() / (1.0 - y.mean())))
            self.coef, self.intercept = a / sd, c - a * mu / sd
            self.x_thresholds, self.y_thresholds = [], []
        else:
            iso = IsotonicRegression(y_min=0.0, y_max=1.0, increasing=True, out_of_bounds="clip")
            iso.fit(s, y.astype(float))
            self.x_thresholds = [float(v) for v in iso.X_thresholds_]
            self.y_thresholds = [float(v) for v in iso.y_thresholds_]
            self.coef, self.intercept = math.nan, math.nan

        prob = self._proba(s)
        precision, recall, thresholds = precision_recall_curve(y, prob)
        # The last PR point (precision 1, recall 0) has no threshold.
        precision, recall = precision[:-1], recall[:-1]
        f1 = _f1(precision, recall)
        best = int(np.argmax(f1))
        if self.threshold_rule == "target_precision":
            reach = np.flatnonzero(precision >= self.target_precision - 1e-12)
            if len(reach):
                # Precision is not monotone in the threshold: take the lowest threshold that reaches the
                # target, which is the one with the highest recall among them.
                best = int(reach[np.argmin(thresholds[reach])])
            else:
                warnings.warn(
                    f"no threshold reaches precision {self.target_precision} on the dev set (best "
                    f"{precision.max():.3f}); falling back to the max-F1 threshold",
                    RuntimeWarning,
                    stacklevel=2,
                )
        self.threshold = float(thresholds[best])
        self.dev_stats = {
            "n": float(len(y)),
            "positive_rate": float(y.mean()),
            "precision": float(precision[best]),
            "recall": float(recall[best]),
            "f1": float(f1[best]),
            "ece": expected_calibration_error(prob, y),
        }
        return self

    def _proba(self, s: np.ndarray) -> np.ndarray:
        if self.method == "logistic":
            return _sigmoid(self.coef * s + self.intercept)
        # np.interp is exactly what a fitted IsotonicRegression with out_of_bounds="clip" computes; using it
        # in both the fitted and the reloaded calibrator makes JSON round trips give identical predictions.
        return np.interp(s, np.asarray(self.x_thresholds), np.asarray(self.y_thresholds))

    def _check_fitted(self) -> None:
        if not self.is_fitted:
            raise RuntimeError("RelevanceCalibrator is not fitted: call fit(dev_scores, dev_positive) first")

    def predict_proba(self, scores: np.ndarray) -> np.ndarray:
        """Calibrated probability that each pair is relevant (monotone non-decreasing in the score)."""
        self._check_fitted()
        return self._proba(_check_scores(scores))

    def predict(self, scores: np.ndarray) -> np.ndarray:
        """Boolean relevance labels: ``predict_proba(scores) >= threshold``."""
        return self.predict_proba(scores) >= self.threshold

    # ----------------------------------------------------------------------------------------------------
    def to_dict(self) -> dict[str, Any]:
        """Plain-JSON form (floats are stored with full precision, so a round trip predicts identically)."""
        self._check_fitted()
        d: dict[str, Any] = {
            "format_version": _FORMAT_VERSION,
            "method": self.method,
            "threshold_rule": self.threshold_rule,
            "target_precision": float(self.target_precision),
            "threshold": float(self.threshold),
            "dev_stats": {k: (None if math.isnan(v) else float(v)) for k, v in self.dev_stats.items()},
        }
        if self.method == "logistic":
            d.update(coef=float(self.coef), intercept=float(self.intercept))
        else:
            d.update(x_thresholds=list(self.x_thresholds), y_thresholds=list(self.y_thresholds))
        return d

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> RelevanceCalibrator:
        """Rebuild a fitted calibrator from :meth:`to_dict` output, checking it is complete."""
        if not isinstance(d, dict):
            raise TypeError(f"expected a dict, got {type(d).__name__}")
        version = d.get("format_version", _FORMAT_VERSION)
        if version != _FORMAT_VERSION:
            raise ValueError(
                f"unsupported calibrator format_version {version} (this code reads {_FORMAT_VERSION})"
            )
        try:
            cal = cls(
                method=d["method"],
                threshold_rule=d.get("threshold_rule", "max_f1"),
                target_precision=float(d.get("target_precision", 0.9)),
                threshold=float(d["threshold"]),
            )
            if cal.method == "logistic":
                cal.coef, cal.intercept = float(d["coef"]), float(d["intercept"])
                ok = math.isfinite(cal.coef) and math.isfinite(cal.intercept)
            else:
                cal.x_thresholds = [float(v) for v in d["x_thresholds"]]
                cal.y_thresholds = [float(v) for v in d["y_thresholds"]]
                ok = len(cal.x_thresholds) == len(cal.y_thresholds) > 0
        except KeyError as exc:
            raise ValueError(f"calibrator dict lacks field {exc.args[0]!r}") from exc
        if not ok or not math.isfinite(cal.threshold):
            raise ValueError("calibrator dict has invalid parameters (non-finite or empty)")
        cal.dev_stats = {k: (math.nan if v is None else float(v)) for k, v in d.get("dev_stats", {}).items()}
        return cal


def expected_calibration_error(prob: np.ndarray, positive: np.ndarray, n_bins: int = 10) -> float:
    """Expected calibration error: the share-weighted mean of |observed positive rate - mean probability|
    over ``n_bins`` equal-width probability bins.

    Example:
        >>> round(expected_calibration_error(np.array([0.2, 0.2, 0.8, 0.8]), np.array([0, 0, 1, 1])), 6)
        0.2
    """
    p = _check_scores(prob, "prob")
    y = np.asarray(positive, dtype=float).reshape(-1)
    if len(p) != len(y):
        raise ValueError(f"prob and positive differ in length: {len(p)} vs {len(y)}")
    if len(p) == 0:
        return math.nan
    if n_bins < 1:
        raise ValueError(f"n_bins must be >= 1, got {n_bins}")
    if (p < 0).any() or (p > 1).any():
        raise ValueError("prob must lie in [0, 1]")
    # Probability 1.0 belongs to the last bin, not to an extra one.
    bins = np.minimum((p * n_bins).astype(int), n_bins - 1)
    count = np.bincount(bins, minlength=n_bins)
    sum_p = np.bincount(bins, weights=p, minlength=n_bins)
    sum_y = np.bincount(bins, weights=y, minlength=n_bins)
    used = count > 0
    gap = np.abs(sum_y[used] - sum_p[used])  # = count * |rate - mean prob|
    return float(gap.sum() / len(p))
