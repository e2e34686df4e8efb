"""Evaluation of trained models against baselines, and the ablation suite that produces the whole table.

Every method is scored on the same test split, each query ranking only its own labelled candidates. Trained
methods are selected on dev NDCG@10; their relevance decision (calibrated probability + threshold) is fitted on
dev and applied to test. The test split is never used for any choice.
"""

from __future__ import annotations

import platform
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch
import torch.nn.functional as F

from .bm25 import BM25Scorer
from .config import ExperimentConfig, with_overrides
from .data.prepare import Dataset
from .metrics import EvalResult, evaluate_scored
from .model import QueryLifeModel
from .relevance import RelevanceCalibrator
from .report import md_table, results_table_text, write_report
from .scoring import FeatureCache, score_pairs
from .towers import TextTower
from .train import Trainer

# Trained variants: name -> (description, config overrides). "full" is Query-LIFE as configured.
NO_AUX = {"loss.query_title": 0.0, "loss.query_image": 0.0, "loss.title_image": 0.0}
TRAINED_METHODS: dict[str, tuple[str, dict[str, Any]]] = {
    "full": ("Query-LIFE: query+type gate, all loss terms", {}),
    "title_only": ("title vector only (trained)", {"model.fusion.mode": "title", **NO_AUX}),
    "image_only": ("image vector only (trained)", {"model.fusion.mode": "image", **NO_AUX}),
    "mean": ("mean fusion, all loss terms", {"model.fusion.mode": "mean"}),
    "concat": ("concat + MLP fusion, all loss terms", {"model.fusion.mode": "concat"}),
    "type_gate": ("ablation: type-only gate (query-independent)", {"model.fusion.mode": "type_gate"}),
    "no_fused_term": ("ablation: per-modality alignment only (no query-fused term)", {"loss.query_fused": 0.0}),
    "no_query_title": ("ablation: query-title term off", {"loss.query_title": 0.0}),
    "no_query_image": ("ablation: query-image term off", {"loss.query_image": 0.0}),
    "no_title_image": ("ablation: title-image term off", {"loss.title_image": 0.0}),
    "hard_negatives": ("ablation: + 1 labelled hard negative per pair", {"train.hard_negatives": 1}),
    "separate_query_head": (
        "ablation: queries get their own projection head",
        {"model.separate_query_projection": True},
    ),
    "fn_duplicate_title": (
        "false negatives: same-title duplicates masked",
        {"train.false_negative_judge": "duplicate_title"},
    ),
    "fn_guide": ("false negatives: GIST-style guide model on titles", {"train.false_negative_judge": "guide"}),
    # GenFilt proper: need generated descriptions (`querylife genfilt describe`, or a describer configured for the
    # demo), so they are not in the default list.
    "fn_descriptions": (
        "false negatives: GenFilt similarity judge on generated descriptions",
        {"train.false_negative_judge": "descriptions"},
    ),
    "fn_generative": (
        "false negatives: GenFilt similarity prefilter + generative yes/no judge",
        {"train.false_negative_judge": "generative"},
    ),
}
NEEDS_DESCRIBER: tuple[str, ...] = ("fn_descriptions", "fn_generative")
UNTRAINED_METHODS: dict[str, str] = {
    "bm25": "BM25 on product text (bm25s)",
    "zero_shot": "untrained text tower: cosine(query, title)",
}
DEFAULT_METHODS: tuple[str, ...] = ("bm25", "zero_shot", *(m for m in TRAINED_METHODS if m not in NEEDS_DESCRIBER))


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


def _decide(
    dev: pd.DataFrame,
    dev_scores: np.ndarray,
    test: pd.DataFrame,
    test_scores: np.ndarray,
    n_boot: int,
    seed: int,
    decision: dict[str, Any] | None = None,
) -> tuple[EvalResult, pd.DataFrame, RelevanceCalibrator | None]:
    """Fit the relevance decision on dev (``decision``: RelevanceCalibrator settings), evaluate on test."""
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
    result, scored, calibrator = _decide(dev, dev_s.score, test, test_s.score, n_boot, seed, decision)
    return result, scored.assign(image_weight=test_s.image_weight), calibrator


def bm25_scores(data: Dataset, pairs: pd.DataFrame) -> np.ndarray:
    corpus = dict(zip(data.catalog["product_id"], data.product_texts(), strict=True))
    return BM25Scorer(corpus).score_pairs(pairs["query"].tolist(), pairs["product_id"].tolist())


def zero_shot_scores(data: Dataset, pairs: pd.DataFrame, cache: FeatureCache, shell: QueryLifeModel) -> np.ndarray:
    """Cosine of raw (untrained, unprojected) tower features of the query and the product text."""
    rows = data.rows(pairs["product_id"])
    texts = data.product_texts()
    q = F.normalize(cache.text(shell, pairs["query"].tolist(), role="query"), dim=-1)
    t = F.normalize(cache.text(shell, [texts[r] for r in rows]), dim=-1)
    return (q * t).sum(-1).double().numpy()


def group_summary(
    runs: list[MethodRun], groups: dict[str, list[str]], *, seed: int = 0
) -> tuple[str, dict[str, dict[str, dict[str, float]]]]:
    """Metrics of each method over the test queries of each group of product types (Markdown table + numbers)."""
    keys = ("ndcg@10", "roc_auc", "roc_auc_in_type")
    header = ["Method"]
    for g in groups:
        header += [f"{g}: NDCG@10", f"{g}: ROC-AUC", f"{g}: AUC in type", f"{g}: image weight"]
    rows, numbers = [], {}
    for r in runs:
        row: list = [r.name]
        numbers[r.name] = {}
        for g, types in groups.items():
            sub = r.scored[r.scored["query_type"].isin(types)]
            overall = evaluate_scored(sub, n_boot=0, seed=seed, by_type=False).overall if len(sub) else {}
            gate = [r.gate_by_type[t] for t in types if t in r.gate_by_type]
            entry = {k: float(overall.get(k, float("nan"))) for k in keys}
            entry["image_weight"] = float(np.mean(gate)) if gate else float("nan")
            numbers[r.name][g] = entry
            row += [f"{entry[k]:.3f}" for k in keys] + [
                "–" if np.isnan(entry["image_weight"]) else f"{entry['image_weight']:.3f}"
            ]
        rows.append(row)
    note = "\n\nEach group's numbers are over the test queries whose own product type is in the group."
    return md_table(header, rows) + note, numbers


class Suite:
    """Train and evaluate a list of methods on one dataset; write one report.

    Example::

        suite = Suite(config, data, "runs/demo")
        runs = suite.run(["bm25", "zero_shot", "full", "mean"])
        suite.report(runs, title="demo")
    """

    def __init__(
        self,
        config: ExperimentConfig,
        data: Dataset,
        out_dir: str | Path,
        *,
        progress: bool = True,
        n_boot: int | None = None,
        log: Callable[[str], None] = print,
    ):
        self.config = config
        self.data = data
        self.out_dir = Path(out_dir)
        self.progress = progress
        self.n_boot = config.eval.n_boot if n_boot is None else n_boot
        self.decision = {
            "method": config.eval.calibration,
            "threshold_rule": config.eval.threshold_rule,
            "target_precision": config.eval.target_precision,
        }
        self.log = log
        self.cache = FeatureCache()
        self._text_tower: TextTower | None = None

    def shared_text_tower(self) -> TextTower | None:
        """The frozen text tower shared by the suite's runs (None when the towers are trained)."""
        towers = self._towers()
        return towers[0] if towers else None

    def _towers(self) -> tuple[TextTower, None, None] | None:
        """The shared frozen text tower (the trainable vision tower is built per run, after its seed)."""
        tc = self.config.model.tower
        # A frozen text tower is a fixed function: load it once and share it between the runs.
        if tc.train_text_layers == 0 and tc.query_model is None and tc.vision_model != "same":
            if self._text_tower is None:
                self._text_tower = TextTower(tc.text_model, pooling=tc.pooling, max_length=tc.max_text_length)
            return self._text_tower, None, None
        return None

    def run_method(self, name: str) -> MethodRun:
        data, start = self.data, time.time()
        dev, test = data.splits["dev"], data.splits["test"]
        if name in UNTRAINED_METHODS:
            if name == "bm25":
                dev_s, test_s = bm25_scores(data, dev), bm25_scores(data, test)
            else:
                shell = QueryLifeModel(
                    self.config.model.model_copy(update={"product_types": []}), towers=self._towers()
                )
                dev_s = zero_shot_scores(data, dev, self.cache, shell)
                test_s = zero_shot_scores(data, test, self.cache, shell)
            result, scored, _ = _decide(dev, dev_s, test, test_s, self.n_boot, self.config.train.seed, self.decision)
            return MethodRun(name, UNTRAINED_METHODS[name], result, time.time() - start, scored)
        if name not in TRAINED_METHODS:
            known = ", ".join([*UNTRAINED_METHODS, *TRAINED_METHODS])
            raise ValueError(f"unknown method {name!r}; known: {known}")
        description, overrides = TRAINED_METHODS[name]
        cfg = with_overrides(self.config, overrides)
        trainer = Trainer(
            cfg, data, self.out_dir / "runs" / name, cache=self.cache, towers=self._towers(), progress=self.progress
        )
        trained = trainer.fit()
        result, scored, calibrator = evaluate_model(
            trained.model, data, cache=self.cache, n_boot=self.n_boot, seed=cfg.train.seed, decision=self.decision
        )
        extra = {
            "best_epoch": trained.best_epoch,
            "dev_ndcg@10": trained.best_dev_ndcg,
            "train_seconds": round(trained.seconds, 1),
            "temperature": 1 / float(trained.model.logit_scale.detach()),
            "calibrator": calibrator.to_dict() if calibrator else None,
            "false_negative_judge": cfg.train.false_negative_judge,
            "false_negatives": [h["false_negatives"] for h in trained.history if "false_negatives" in h] or None,
        }
        best = trained.history[trained.best_epoch - 1] if 0 < trained.best_epoch <= len(trained.history) else {}
        if "gate_trained" in best:
            extra["gate_trained"] = best["gate_trained"]
        return MethodRun(name, description, result, time.time() - start, scored, gate_weight_by_type(scored), extra)

    def run(self, methods: list[str] | tuple[str, ...] = DEFAULT_METHODS) -> list[MethodRun]:
        runs = []
        for i, name in enumerate(methods, 1):
            self.log(f"[{i}/{len(methods)}] {name}: {TRAINED_METHODS.get(name, (UNTRAINED_METHODS.get(name, ''),))[0]}")
            run = self.run_method(name)
            self.log(
                f"    test NDCG@10 {run.result.overall['ndcg@10']:.4f}  ROC-AUC {run.result.overall['roc_auc']:.4f}"
                f"  ({run.seconds:.0f}s)"
            )
            runs.append(run)
        return runs

    def report(
        self,
        runs: list[MethodRun],
        *,
        title: str,
        command: str = "",
        notes: list[str] | None = None,
        type_groups: dict[str, list[str]] | None = None,
        extra_sections: dict[str, str] | None = None,
        extra_meta: dict[str, Any] | None = None,
    ) -> dict[str, Path]:
        """Write report.md / report.json / PNG plots and the scored test pairs; returns the paths.

        ``type_groups`` (group name -> product types, e.g. where the image carries the information) adds a table
        of each method's metrics over the queries of each group; ``extra_sections`` (heading -> Markdown) and
        ``extra_meta`` (into report.json) add what a caller measured besides.
        """
        results = {r.name: r.result for r in runs}
        gates = {r.name: r.gate_by_type for r in runs if r.gate_by_type}
        held = [r for r in runs if r.extra.get("gate_trained") is False]
        if held:
            names = ", ".join(f"`{r.name}` (epoch {r.extra['best_epoch']})" for r in held)
            notes = [
                *(notes or []),
                f"Gate never trained in the selected checkpoint of {names}: the dev-best epoch came before the gate "
                f"started (train.gate_start_fraction={self.config.train.gate_start_fraction}), where the gate is at "
                "its init, so those rows are mean fusion trained for that many epochs.",
            ]
        meta = {
            "command": command,
            "machine": {
                "platform": platform.platform(),
                "python": platform.python_version(),
                "torch": torch.__version__,
                "cpu_threads": torch.get_num_threads(),
                "device": str(self.config.train.device),
            },
            "methods": {
                r.name: {"description": r.description, "seconds": round(r.seconds, 1), **r.extra} for r in runs
            },
            "config": self.config.model_dump(mode="json"),
            "data": {k: {"pairs": len(v), "queries": int(v["query"].nunique())} for k, v in self.data.splits.items()},
        }
        sections = {}
        if type_groups:
            table, numbers = group_summary(runs, type_groups, seed=self.config.train.seed)
            sections["By group of product types"] = table
            meta["type_groups"] = {"groups": type_groups, "results": numbers}
        sections.update(extra_sections or {})
        meta.update(extra_meta or {})
        baseline = "full" if "full" in results else None  # the Δ column: each method against Query-LIFE
        paths = write_report(
            self.out_dir,
            results,
            title=title,
            meta=meta,
            gate_weights=gates or None,
            notes=notes,
            baseline_name=baseline,
            sections=sections,
        )
        scores = pd.concat([r.scored.assign(method=r.name) for r in runs], ignore_index=True)
        tmp = self.out_dir / ".test_scores.parquet.tmp"
        scores.to_parquet(tmp, index=False)
        tmp.replace(self.out_dir / "test_scores.parquet")
        paths["scores"] = self.out_dir / "test_scores.parquet"
        return paths

    @staticmethod
    def table(runs: list[MethodRun]) -> str:
        return results_table_text({r.name: r.result for r in runs})
