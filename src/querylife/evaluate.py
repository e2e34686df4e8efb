"""Evaluation of one method on the test split: scores -> the dev-fitted decision -> metrics.

Every method is scored on the same test split, each query ranking only its own labelled candidates. A method's
relevance decision (calibrated probability + threshold) is fitted on dev and applied to test. The test split is
never used for any choice. Running several methods is :class:`querylife.suite.Suite`; writing their report is
:mod:`querylife.report`.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd

from .data.prepare import Dataset
from .metrics import EvalResult, evaluate_scored
from .model import QueryLifeModel
from .relevance import RelevanceCalibrator
from .scoring import FeatureCache, score_pairs


@dataclass
class MethodRun:
    """One method's test result plus what produced it."""

    name: str
    description: str
    result: EvalResult
    seconds: float
    scored: pd.DataFrame  # test pairs with score (and prob / image_weight where available)
    gate_by_type: dict[str, float] = field(default_factory=dict)
    extra: dict[str, Any] = field(default_factory=dict)


def decide(
    dev: pd.DataFrame,
    dev_scores: np.ndarray,
    test: pd.DataFrame,
    test_scores: np.ndarray,
    n_boot: int,
    seed: int,
    decision: dict[str, Any] | None = None,
) -> tuple[EvalResult, pd.DataFrame, RelevanceCalibrator | None]:
    """Fit the relevance decision on dev (``decision``: RelevanceCalibrator settings), evaluate on test.

    Returns the test result, the test pairs with ``score`` (and ``prob`` when a decision was fitted) and the
    calibrator (None when dev has a single class or non-finite scores: ranking metrics only).
    """
    scored = test.assign(score=test_scores)
    calibrator = None
    threshold = None
    if len(dev) and dev["positive"].nunique() == 2 and np.isfinite(dev_scores).all():
        calibrator = RelevanceCalibrator(**(decision or {})).fit(dev_scores, dev["positive"].to_numpy())
        scored = scored.assign(prob=calibrator.predict_proba(test_scores))
        threshold = calibrator.threshold
    result = evaluate_scored(
        scored, threshold=threshold, n_boot=n_boot, seed=seed, **({"prob_col": "prob"} if threshold is not None else {})
    )
    return result, scored, calibrator


def gate_weight_by_type(scored: pd.DataFrame) -> dict[str, float]:
    """Mean image weight per product type over in-type candidates (those the gate must rank)."""
    if "image_weight" not in scored or scored["image_weight"].isna().all():
        return {}
    in_type = scored[scored["product_type"] == scored["query_type"]]
    return {str(k): float(v) for k, v in in_type.groupby("product_type")["image_weight"].mean().items()}


def evaluate_model(
    model: QueryLifeModel,
    data: Dataset,
    *,
    cache: FeatureCache | None = None,
    n_boot: int = 1000,
    seed: int = 0,
    batch_size: int = 512,
    decision: dict[str, Any] | None = None,
) -> tuple[EvalResult, pd.DataFrame, RelevanceCalibrator | None]:
    """Score dev and test with ``model``; fit the decision on dev; return the test result and scored test pairs."""
    cache = cache or FeatureCache()
    dev, test = data.splits["dev"], data.splits["test"]
    dev_s = score_pairs(model, data, dev, cache, batch_size)
    test_s = score_pairs(model, data, test, cache, batch_size)
    result, scored, calibrator = decide(dev, dev_s.score, test, test_s.score, n_boot, seed, decision)
    return result, scored.assign(image_weight=test_s.image_weight), calibrator


GROUP_KEYS: tuple[str, ...] = ("ndcg@10", "roc_auc", "roc_auc_in_type")


def metrics_by_group(
    runs: list[MethodRun], groups: dict[str, list[str]], *, seed: int = 0
) -> dict[str, dict[str, dict[str, float]]]:
    """Metrics of each run over the test queries of each group of product types.

    Returns run name -> group -> :data:`GROUP_KEYS` metrics + ``image_weight`` (the mean of the run's gate weights
    over the group's types; NaN without a gate). A group's numbers are over the test queries whose own product
    type is in the group.
    """
    numbers: dict[str, dict[str, dict[str, float]]] = {}
    for r in runs:
        numbers[r.name] = {}
        for g, types in groups.items():
            sub = r.scored[r.scored["query_type"].isin(types)]
            overall = evaluate_scored(sub, n_boot=0, seed=seed, by_type=False).overall if len(sub) else {}
            gate = [r.gate_by_type[t] for t in types if t in r.gate_by_type]
            entry = {k: float(overall.get(k, float("nan"))) for k in GROUP_KEYS}
            entry["image_weight"] = float(np.mean(gate)) if gate else float("nan")
            numbers[r.name][g] = entry
    return numbers


def judge_kind(run: MethodRun) -> str:
    """The false-negative judge ``run`` trained with ("none" for none, and for untrained methods)."""
    return (run.extra or {}).get("false_negative_judge") or "none"


def judge_results(runs: list[MethodRun], config, data: Dataset, *, n_batches: int = 40, text_tower=None):
    """Mask quality of the judge of each run that trained with one, beside what training with it gave.

    Returns a :class:`~querylife.genfilt.quality.JudgeQuality` whose entries (run name -> ``judge``,
    ``precision``, ``recall``, ``mask_rate`` on sampled training batches; ``train_masked_fraction`` and
    ``train_protected`` of the run's last epoch; its test ``ndcg@10`` and ``roc_auc``) are empty when no run
    trained with a judge.
    """
    from .genfilt.quality import judge_quality

    kinds = {r.name: judge_kind(r) for r in runs if judge_kind(r) != "none"}
    quality = judge_quality(config, data, kinds, n_batches=n_batches, text_tower=text_tower)
    by_name = {r.name: r for r in runs}
    for name, entry in quality.entries.items():
        run = by_name[name]
        history = (run.extra or {}).get("false_negatives") or []
        last = history[-1] if history else {}
        entry.update(
            train_masked_fraction=last.get("masked_fraction", float("nan")),
            train_protected=last.get("protected_labelled_negatives", 0),
            **{"ndcg@10": run.result.overall["ndcg@10"], "roc_auc": run.result.overall["roc_auc"]},
        )
    return quality
