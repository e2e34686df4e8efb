"""The report of a suite run: the results report (:func:`~querylife.report.results.write_report`) plus what a
suite knows besides: run metadata, per-method details, a table by group of product types, the GenFilt table, notes
on gates that never trained, and every method's scored test pairs (``test_scores.parquet``).
"""

from __future__ import annotations

import io
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd

from ..atomic import atomic_write_bytes
from ..methods import REFERENCE_METHOD
from ..runinfo import machine_info
from .genfilt import GENFILT_HEADING, genfilt_section
from .results import md_table, write_report

if TYPE_CHECKING:
    from ..config import ExperimentConfig
    from ..evaluate import MethodRun
    from ..genfilt.quality import JudgeQuality

GROUP_HEADING = "By group of product types"


def suite_machine_info(device: str) -> dict[str, Any]:
    """What the report records about the machine (:func:`querylife.runinfo.machine_info`) and the configured device."""
    return {**machine_info(), "device": device}


def group_table(numbers: Mapping[str, Mapping[str, Mapping[str, float]]], groups: Mapping[str, Sequence[str]]) -> str:
    """Markdown table of :func:`querylife.evaluate.metrics_by_group`'s numbers (one row per method)."""
    header = ["Method"]
    for g in groups:
        header += [f"{g}: NDCG@10", f"{g}: ROC-AUC", f"{g}: AUC in type", f"{g}: image weight"]
    rows = []
    for name, by_group in numbers.items():
        row: list = [name]
        for g in groups:
            entry = by_group[g]
            row += [f"{entry[k]:.3f}" for k in ("ndcg@10", "roc_auc", "roc_auc_in_type")] + [
                "–" if np.isnan(entry["image_weight"]) else f"{entry['image_weight']:.3f}"
            ]
        rows.append(row)
    note = "\n\nEach group's numbers are over the test queries whose own product type is in the group."
    return md_table(header, rows) + note


def gate_notes(runs: Sequence[MethodRun], gate_start_fraction: float) -> list[str]:
    """A note naming the runs whose selected checkpoint predates the gate (so their row is mean fusion)."""
    held = [r for r in runs if r.extra.get("gate_trained") is False]
    if not held:
        return []
    names = ", ".join(f"`{r.name}` (epoch {r.extra['best_epoch']})" for r in held)
    return [
        f"Gate never trained in the selected checkpoint of {names}: the dev-best epoch came before the gate "
        f"started (train.gate_start_fraction={gate_start_fraction}), where the gate is at "
        "its init, so those rows are mean fusion trained for that many epochs."
    ]


def offset_notes(runs: Sequence[MethodRun]) -> list[str]:
    """A note with each run's query offset strength (``model.query_offset``): how its ROC-AUC and threshold numbers
    were scored. Rankings (NDCG, MRR) do not depend on it."""
    chosen = [r for r in runs if r.extra.get("offset_strength") is not None]
    if not chosen:
        return []
    parts = ", ".join(f"`{r.name}` {r.extra['offset_strength']:.1f}" for r in chosen)
    return [
        f"Query offset strength (0 = raw fused scores, 1 = minus the mean of the query's best reference scores; "
        f"chosen on dev, docs/TUNING.md): {parts}. It moves ROC-AUC and the thresholded metrics, never a ranking."
    ]


def write_scores(out_dir: str | os.PathLike[str], runs: Sequence[MethodRun]) -> Path:
    """Every run's scored test pairs, with a ``method`` column, to ``out_dir/test_scores.parquet`` (atomically)."""
    scores = pd.concat([r.scored.assign(method=r.name) for r in runs], ignore_index=True)
    buf = io.BytesIO()
    scores.to_parquet(buf, index=False)
    return atomic_write_bytes(Path(out_dir) / "test_scores.parquet", buf.getvalue())


def write_suite_report(
    out_dir: str | os.PathLike[str],
    runs: Sequence[MethodRun],
    *,
    config: ExperimentConfig,
    splits: Mapping[str, pd.DataFrame],
    title: str,
    command: str = "",
    notes: Sequence[str] | None = None,
    type_groups: Mapping[str, Sequence[str]] | None = None,
    group_numbers: Mapping[str, Mapping[str, Mapping[str, float]]] | None = None,
    judges: JudgeQuality | None = None,
    extra_sections: Mapping[str, str] | None = None,
    extra_meta: Mapping[str, Any] | None = None,
) -> dict[str, Path]:
    """Write report.md / report.json / PNG plots and test_scores.parquet for ``runs``; returns the paths by kind.

    ``type_groups`` with ``group_numbers`` (:func:`querylife.evaluate.metrics_by_group`) adds the table by group
    of product types; ``judges`` (:func:`querylife.evaluate.judge_results`) the GenFilt table; ``extra_sections``
    (heading -> Markdown) and ``extra_meta`` (into report.json's meta) what a caller measured besides. Each
    method is compared against ``querylife`` when it is among the runs.
    """
    results = {r.name: r.result for r in runs}
    gates = {r.name: r.gate_by_type for r in runs if r.gate_by_type}
    notes = [*(notes or []), *gate_notes(runs, config.train.gate_start_fraction), *offset_notes(runs)]
    meta: dict[str, Any] = {
        "command": command,
        "machine": suite_machine_info(str(config.train.device)),
        "methods": {r.name: {"description": r.description, "seconds": round(r.seconds, 1), **r.extra} for r in runs},
        "config": config.model_dump(mode="json"),
        "data": {k: {"pairs": len(v), "queries": int(v["query"].nunique())} for k, v in splits.items()},
    }
    sections = {}
    if type_groups and group_numbers is not None:
        sections[GROUP_HEADING] = group_table(group_numbers, type_groups)
        meta["type_groups"] = {"groups": dict(type_groups), "results": group_numbers}
    if judges is not None and judges.entries:
        sections[GENFILT_HEADING] = genfilt_section(judges, runs)
        meta["genfilt"] = {"judges": judges.entries}
    sections.update(extra_sections or {})
    meta.update(extra_meta or {})
    paths = write_report(
        out_dir,
        results,
        title=title,
        meta=meta,
        gate_weights=gates or None,
        notes=notes,
        baseline_name=REFERENCE_METHOD if REFERENCE_METHOD in results else None,
        sections=sections,
    )
    paths["scores"] = write_scores(out_dir, runs)
    return paths
