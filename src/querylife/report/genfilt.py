"""GenFilt in reports: the false-negative judges' table of a suite report, and the files of ``querylife genfilt
evaluate`` (genfilt_masks.md / .json) and ``querylife genfilt judge`` (flagged_pairs.csv, judge_summary.json).

The numbers come from :mod:`querylife.genfilt.quality` and :func:`querylife.evaluate.judge_results`; this module
only formats and writes them (atomically).
"""

from __future__ import annotations

import json
import os
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd

from ..atomic import atomic_write_text
from ..methods import REFERENCE_METHOD
from .results import md_table

if TYPE_CHECKING:
    from ..evaluate import MethodRun
    from ..genfilt.quality import JudgeComparison, JudgeQuality

GENFILT_HEADING = "GenFilt: false-negative judges"


def _pct(x: float | None) -> str:
    return "–" if x is None or not np.isfinite(x) else f"{100 * x:.1f}%"


def _fmt(value: object) -> str:
    return f"{value:.3f}" if isinstance(value, float) else str(value)


def genfilt_section(judges: JudgeQuality, runs: Sequence[MethodRun]) -> str:
    """Markdown table: each judge's mask precision / recall beside the test NDCG@10 / ROC-AUC of the model trained
    with it, after a "no filter" row (the ``querylife`` run, when present)."""
    rows = []
    by_name = {r.name: r for r in runs}
    if REFERENCE_METHOD in by_name:
        ref = by_name[REFERENCE_METHOD].result.overall
        rows.append(
            [f"no filter ({REFERENCE_METHOD})", "–", "–", "–", "–", f"{ref['ndcg@10']:.4f}", f"{ref['roc_auc']:.4f}"]
        )
    for name, entry in judges.entries.items():
        rows.append(
            [
                f"{name} ({entry['judge']})",
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
        f"\n\nPrecision and recall of each judge's mask on {judges.n_batches} sampled training batches of "
        f"{judges.batch_size}, against the known equivalents (same `group_id`, or both labelled relevant for "
        "the query); NDCG@10 / ROC-AUC of the model trained with that judge, on the test split."
    )
    return md_table(header, rows) + note


def mask_table_text(comparison: JudgeComparison) -> str:
    """The judges' comparison as a fixed-width table for a terminal."""
    return comparison.shown().to_string(float_format=lambda x: f"{x:.3f}")


def write_mask_report(
    out_dir: str | os.PathLike[str], comparison: JudgeComparison, *, command: str = ""
) -> dict[str, Path]:
    """``genfilt_masks.md`` (the shown columns) and ``genfilt_masks.json`` (every column) in ``out_dir``."""
    out = Path(out_dir)
    shown = comparison.shown()
    md = "\n".join(
        [
            "# GenFilt: false-negative masks vs known equivalents",
            "",
            f"Command: `{command}`  ",
            f"{comparison.n_batches} training batches of {comparison.batch_size} positive pairs; descriptions: "
            f"{comparison.source}.",
            "",
            md_table(["judge", *shown.columns], [[name, *(_fmt(v) for v in row)] for name, row in shown.iterrows()]),
            "",
        ]
    )
    return {
        "markdown": atomic_write_text(out / "genfilt_masks.md", md),
        "json": atomic_write_text(
            out / "genfilt_masks.json", comparison.table.to_json(orient="index", indent=2) + "\n"
        ),
    }


def write_judge_outputs(
    out_dir: str | os.PathLike[str], flagged: pd.DataFrame, summary: dict[str, Any], *, command: str = ""
) -> dict[str, Path]:
    """``flagged_pairs.csv`` (one row per flagged pair) and ``judge_summary.json`` (the counts + ``command``)."""
    out = Path(out_dir)
    payload = {**summary, "command": command}
    return {
        "flagged": atomic_write_text(out / "flagged_pairs.csv", flagged.to_csv(index=False)),
        "summary": atomic_write_text(out / "judge_summary.json", json.dumps(payload, indent=2, default=float) + "\n"),
    }
