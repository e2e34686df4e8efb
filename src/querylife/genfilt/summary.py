"""The GenFilt table of a report: each false-negative judge's mask quality next to what training with it gave.

For every method of a suite run that trained with a false-negative judge, the same judge is rebuilt and scored on
sampled training batches against the known equivalents (precision / recall), and shown beside the run's
training-time counts (share of negatives masked, labelled negatives protected) and its test NDCG@10 / ROC-AUC,
with "no filter" (the full model) as the first row.

Example::

    markdown, numbers = genfilt_section(runs, config, data)
"""

from __future__ import annotations

from typing import Any

import numpy as np

from ..config import with_overrides
from ..data.prepare import Dataset
from ..report import md_table
from .mask_eval import evaluate_judge, known_equivalents, sample_batches
from .training import build_judge, guide_encoder


def _judge_kind(run) -> str:
    return (run.extra or {}).get("false_negative_judge") or "none"


def _last_epoch(run) -> dict[str, Any]:
    history = (run.extra or {}).get("false_negatives") or []
    return history[-1] if history else {}


def genfilt_section(runs, config, data: Dataset, *, n_batches: int = 40, text_tower=None) -> tuple[str, dict]:
    """Markdown table + numbers for the runs among ``runs`` (MethodRun objects) that trained with a judge; ("", {})
    if none did."""
    fn_runs = [r for r in runs if _judge_kind(r) != "none"]
    if not fn_runs:
        return "", {}
    encoder = guide_encoder(config, text_tower)  # one for every judge: each distinct text is embedded once
    train = data.splits["train"]
    batches = sample_batches(train[train["positive"]], config.train.batch_size, n_batches, seed=config.train.seed)
    truth = known_equivalents(data.catalog, train)
    by_name = {r.name: r for r in runs}
    rows, numbers = [], {}
    if "full" in by_name:
        full = by_name["full"].result.overall
        rows.append(["no filter (full)", "–", "–", "–", "–", f"{full['ndcg@10']:.4f}", f"{full['roc_auc']:.4f}"])
    for run in fn_runs:
        kind = _judge_kind(run)
        cfg = with_overrides(config, {"train.false_negative_judge": kind})
        judge = build_judge(cfg, data, kind=kind, encoder=encoder)
        quality = evaluate_judge(judge, batches, truth)
        last = _last_epoch(run)
        entry = {
            "judge": getattr(judge, "name", kind),
            "precision": quality["precision"],
            "recall": quality["recall"],
            "mask_rate": quality["mask_rate"],
            "train_masked_fraction": last.get("masked_fraction", float("nan")),
            "train_protected": last.get("protected_labelled_negatives", 0),
            "ndcg@10": run.result.overall["ndcg@10"],
            "roc_auc": run.result.overall["roc_auc"],
        }
        numbers[run.name] = entry
        rows.append(
            [
                f"{run.name} ({entry['judge']})",
                _pct(entry["precision"]),
                _pct(entry["recall"]),
                _pct(entry["mask_rate"]),
                str(entry["train_protected"]),
                f"{entry['ndcg@10']:.4f}",
                f"{entry['roc_auc']:.4f}",
            ]
        )
    header = [
        "judge",
        "mask precision",
        "mask recall",
        "negatives masked",
        "labelled negatives protected (last epoch)",
        "test NDCG@10",
        "test ROC-AUC",
    ]
    note = (
        f"\n\nPrecision and recall of each judge's mask on {len(batches)} sampled training batches of "
        f"{config.train.batch_size}, against the known equivalents (same `group_id`, or both labelled relevant for "
        "the query); NDCG@10 / ROC-AUC of the model trained with that judge, on the test split."
    )
    return md_table(header, rows) + note, numbers


def _pct(x: float) -> str:
    return "–" if x is None or not np.isfinite(x) else f"{100 * x:.1f}%"
