"""The relevance decision: calibration, threshold rules, JSON round trip, input checks."""

from __future__ import annotations

import json
import warnings

import numpy as np
import pytest
from sklearn.isotonic import IsotonicRegression

from querylife.relevance import RelevanceCalibrator, expected_calibration_error


def toy(n: int = 400, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Overlapping score distributions: positives around 0.6, negatives around 0.3 (cosine-like)."""
    rng = np.random.default_rng(seed)
    y = rng.random(n) < 0.3
    s = np.where(y, rng.normal(0.6, 0.12, n), rng.normal(0.3, 0.12, n))
    return s, y


def prf(pred: np.ndarray, y: np.ndarray) -> tuple[float, float, float]:
    tp = float((pred & y).sum())
    p = tp / pred.sum() if pred.sum() else 0.0
    r = tp / y.sum()
    return p, r, (2 * p * r / (p + r) if p + r else 0.0)


@pytest.mark.parametrize("method", ["logistic", "isotonic"])
def test_probabilities_monotone_in_score(method):
    s, y = toy()
    cal = RelevanceCalibrator(method=method).fit(s, y)
    grid = np.linspace(s.min() - 1, s.max() + 1, 500)
    p = cal.predict_proba(grid)
    assert np.all(np.diff(p) >= 0)
    assert p.min() >= 0 and p.max() <= 1
    if method == "logistic":
        assert np.all(np.diff(p) > 0)  # Platt scaling is strictly increasing
    assert 0 < cal.threshold < 1


@pytest.mark.parametrize("method", ["logistic", "isotonic"])
def test_max_f1_threshold_matches_brute_force(method):
    s, y = toy(200, seed=1)
    cal = RelevanceCalibrator(method=method).fit(s, y)
    prob = cal.predict_proba(s)
    best = max(prf(prob >= t, y)[2] for t in np.unique(prob))
    assert prf(cal.predict(s), y)[2] == pytest.approx(best)
    assert cal.dev_stats["f1"] == pytest.approx(best)


def test_max_f1_hand_example():
    # Scores in rank order; labels 1 0 1 1 0 0 from the top. Best F1 keeps the top 4: P 3/4, R 1 -> 6/7.
    s = np.array([0.9, 0.8, 0.7, 0.6, 0.5, 0.4])
    y = np.array([1, 0, 1, 1, 0, 0], dtype=bool)
    cal = RelevanceCalibrator().fit(s, y)
    assert cal.predict(s).tolist() == [True, True, True, True, False, False]
    assert cal.dev_stats["f1"] == pytest.approx(6 / 7)


@pytest.mark.parametrize("method", ["logistic", "isotonic"])
def test_target_precision_reached_on_dev_with_most_recall(method):
    s, y = toy(300, seed=2)
    cal = RelevanceCalibrator(method=method, threshold_rule="target_precision", target_precision=0.9).fit(
        s, y
    )
    p, r, _ = prf(cal.predict(s), y)
    assert p >= 0.9
    prob = cal.predict_proba(s)
    reachable = [prf(prob >= t, y) for t in np.unique(prob)]
    assert r == pytest.approx(max(rr for pp, rr, _ in reachable if pp >= 0.9))
    # A stricter rule never has a lower threshold than max F1 here.
    assert cal.threshold >= RelevanceCalibrator(method=method).fit(s, y).threshold


def test_unreachable_target_precision_falls_back_to_max_f1_with_warning():
    s = np.array([0.1, 0.2, 0.3, 0.4, 0.5, 0.6])
    y = np.array([0, 0, 1, 1, 1, 0], dtype=bool)  # the top score is a negative: precision 1.0 is unreachable
    with pytest.warns(RuntimeWarning, match="falling back"):
        cal = RelevanceCalibrator(threshold_rule="target_precision", target_precision=1.0).fit(s, y)
    assert cal.threshold == RelevanceCalibrator().fit(s, y).threshold
    assert cal.predict(s).tolist() == [False, False, True, True, True, True]


def test_anti_correlated_score_gets_flat_probability_with_warning():
    s = np.array([0.1, 0.2, 0.3, 0.4, 0.5, 0.6])
    y = np.array([1, 1, 1, 0, 0, 0], dtype=bool)
    with pytest.warns(RuntimeWarning, match="not positively related"):
        cal = RelevanceCalibrator().fit(s, y)
    np.testing.assert_allclose(cal.predict_proba(s), 0.5)


@pytest.mark.parametrize("method", ["logistic", "isotonic"])
def test_json_round_trip_gives_identical_predictions(method):
    s, y = toy(seed=3)
    cal = RelevanceCalibrator(method=method, threshold_rule="target_precision", target_precision=0.8).fit(
        s, y
    )
    back = RelevanceCalibrator.from_dict(json.loads(json.dumps(cal.to_dict())))
    grid = np.linspace(-1, 2, 1001)
    assert np.array_equal(back.predict_proba(grid), cal.predict_proba(grid))
    assert np.array_equal(back.predict(grid), cal.predict(grid))
    assert (back.method, back.threshold_rule, back.threshold) == (method, "target_precision", cal.threshold)
    assert back.dev_stats == pytest.approx(cal.dev_stats)


def test_isotonic_matches_sklearn_and_calibrates():
    s, y = toy(seed=4)
    cal = RelevanceCalibrator(method="isotonic").fit(s, y)
    ref = IsotonicRegression(y_min=0, y_max=1, out_of_bounds="clip").fit(s, y.astype(float))
    grid = np.linspace(s.min() - 0.5, s.max() + 0.5, 300)
    np.testing.assert_allclose(cal.predict_proba(grid), ref.predict(grid), atol=1e-12)
    # Isotonic regression is calibrated on its own training data by construction (pool-adjacent-violators).
    assert expected_calibration_error(cal.predict_proba(s), y, n_bins=10) < 0.02


def test_logistic_works_on_any_score_scale_and_separable_data():
    s = np.array([1.0, 2.0, 3.0, 20.0, 21.0, 22.0])  # BM25-like scale, perfectly separable
    y = np.array([0, 0, 0, 1, 1, 1])
    cal = RelevanceCalibrator().fit(s, y)
    assert np.isfinite(cal.coef) and cal.coef > 0
    assert cal.predict(s).tolist() == [False] * 3 + [True] * 3


@pytest.mark.parametrize(
    ("scores", "positive", "match"),
    [
        ([], [], "empty"),
        ([0.1, 0.2, 0.3], [1, 1, 1], "single class"),
        ([0.1, 0.2, 0.3], [0, 0, 0], "single class"),
        ([0.1, np.nan, 0.3], [0, 1, 1], "NaN"),
        ([0.1, np.inf, 0.3], [0, 1, 1], "NaN or infinite"),
        ([0.1, 0.2, 0.3], [0, 1], "differ in length"),
        ([0.1, 0.2, 0.3], [0, 2, 1], "boolean or 0/1"),
    ],
)
def test_bad_fit_input_raises(scores, positive, match):
    with pytest.raises(ValueError, match=match):
        RelevanceCalibrator().fit(np.asarray(scores, dtype=float), np.asarray(positive))


def test_bad_configuration_and_use_raise():
    with pytest.raises(ValueError, match="method"):
        RelevanceCalibrator(method="svm")
    with pytest.raises(ValueError, match="threshold_rule"):
        RelevanceCalibrator(threshold_rule="youden")
    with pytest.raises(ValueError, match="target_precision"):
        RelevanceCalibrator(target_precision=1.5)
    with pytest.raises(RuntimeError, match="not fitted"):
        RelevanceCalibrator().predict(np.array([0.1]))
    cal = RelevanceCalibrator().fit(*toy(50))
    with pytest.raises(ValueError, match="NaN"):
        cal.predict(np.array([0.1, np.nan]))
    d = cal.to_dict()
    del d["coef"]
    with pytest.raises(ValueError, match="coef"):
        RelevanceCalibrator.from_dict(d)


def test_expected_calibration_error():
    # Bins 0.2 and 0.8, each with observed rate 0 / 1: |0 - 0.2| and |1 - 0.8|, equally weighted.
    assert expected_calibration_error(
        np.array([0.2, 0.2, 0.8, 0.8]), np.array([0, 0, 1, 1])
    ) == pytest.approx(0.2)
    # Perfect calibration within bins gives 0; probability 1.0 falls in the last bin, not outside.
    assert expected_calibration_error(np.array([0.5, 0.5, 1.0]), np.array([1, 0, 1])) == pytest.approx(0.0)
    with pytest.raises(ValueError, match="differ in length"):
        expected_calibration_error(np.array([0.5]), np.array([1, 0]))
    with pytest.raises(ValueError, match=r"\[0, 1\]"):
        expected_calibration_error(np.array([1.5]), np.array([1]))


def test_fit_emits_no_sklearn_warnings():
    s, y = toy(100)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        RelevanceCalibrator().fit(s, y)
        RelevanceCalibrator(method="isotonic").fit(s, y)
