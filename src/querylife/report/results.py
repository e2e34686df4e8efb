"""The results report: JSON (everything), Markdown (tables for humans) and PNG plots, written atomically.

Example:
    >>> import tempfile, pandas as pd
    >>> from querylife.metrics import evaluate_scored
    >>> df = pd.DataFrame({"query": ["a", "a", "b", "b"], "gain": [2, 0, 2, 1],
    ...                    "positive": [True, False, True, False], "score": [0.9, 0.1, 0.2, 0.8],
    ...                    "product_type": ["x", "y", "x", "x"], "query_type": ["x", "x", "x", "x"]})
    >>> res = {"bm25": evaluate_scored(df, n_boot=50)}
    >>> paths = write_report(tempfile.mkdtemp(), res, title="demo", meta={"command": "doctest"})
    >>> sorted(paths)
    ['json', 'markdown', 'ndcg_by_method', 'ndcg_by_type']
"""

from __future__ import annotations

import io
import json
import math
import os
from collections.abc import Mapping, Sequence
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import numpy as np

from querylife.atomic import atomic_write_bytes
from querylife.metrics import EvalResult, paired_bootstrap

# (key in EvalResult.overall, column header). NDCG@10 gets its CI appended in the Markdown table.
MAIN_COLUMNS: tuple[tuple[str, str], ...] = (
    ("ndcg@10", "NDCG@10 [95% CI]"),
    ("mrr", "MRR"),
    ("recall@10", "Recall@10"),
    ("map", "mAP"),
    ("roc_auc", "ROC-AUC"),
    ("roc_auc_in_type", "ROC-AUC in type"),
    ("pr_auc", "PR-AUC"),
    ("f1", "F1"),
)
HEADLINE = "ndcg@10"
_DASH = "–"


# ----------------------------------------------------------------------------------------------------
# small helpers


def _fmt(x: float | None, digits: int = 3) -> str:
    if x is None or not np.isfinite(x):
        return _DASH
    return f"{x:.{digits}f}"


def _fmt_ci(value: float | None, ci: tuple[float, float] | None, digits: int = 3) -> str:
    text = _fmt(value, digits)
    if ci is None or text == _DASH or not all(np.isfinite(c) for c in ci):
        return text
    return f"{text} [{ci[0]:.{digits}f}, {ci[1]:.{digits}f}]"


def _md_cell(text: Any) -> str:
    return str(text).replace("|", "\\|").replace("\n", " ")


def md_table(header: Sequence[str], rows: Sequence[Sequence[Any]]) -> str:
    lines = ["| " + " | ".join(_md_cell(h) for h in header) + " |"]
    lines.append("|" + "|".join([":---"] + ["---:"] * (len(header) - 1)) + "|")
    lines += ["| " + " | ".join(_md_cell(c) for c in row) + " |" for row in rows]
    return "\n".join(lines)


def _jsonable(obj: Any) -> Any:
    """Recursively turn ``obj`` into strict JSON values (NaN/inf -> None, numpy -> Python, others -> str)."""
    if isinstance(obj, Mapping):
        return {str(k): _jsonable(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple, set, frozenset)):
        return [_jsonable(v) for v in obj]
    if isinstance(obj, np.ndarray):
        return [_jsonable(v) for v in obj.tolist()]
    if isinstance(obj, (bool, np.bool_)):
        return bool(obj)
    if isinstance(obj, (int, np.integer)):
        return int(obj)
    if isinstance(obj, (float, np.floating)):
        return float(obj) if math.isfinite(float(obj)) else None
    if obj is None or isinstance(obj, str):
        return obj
    if isinstance(obj, EvalResult):
        return obj.to_dict()
    return str(obj)


def _types(results: Mapping[str, EvalResult]) -> list[str]:
    return sorted({t for r in results.values() for t in r.by_type})


# ----------------------------------------------------------------------------------------------------
# plots (matplotlib's object API with the Agg canvas: no pyplot, no global backend switch)


def _figure_png(draw: Any, *, width: float, height: float) -> bytes:
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(width, height), dpi=110, layout="constrained")
    FigureCanvasAgg(fig)
    draw(fig.subplots())
    buf = io.BytesIO()
    fig.savefig(buf, format="png")
    return buf.getvalue()


def _plot_ndcg_by_method(results: Mapping[str, EvalResult]) -> bytes:
    names = list(results)
    means = np.array([results[n].overall.get(HEADLINE, math.nan) for n in names], dtype=float)
    lo = np.array([results[n].ci.get(HEADLINE, (math.nan, math.nan))[0] for n in names], dtype=float)
    hi = np.array([results[n].ci.get(HEADLINE, (math.nan, math.nan))[1] for n in names], dtype=float)
    # Methods without an interval get no error bar rather than a NaN that hides the whole plot.
    err = np.vstack([np.nan_to_num(means - lo, nan=0.0), np.nan_to_num(hi - means, nan=0.0)]).clip(min=0)

    def draw(ax: Any) -> None:
        x = np.arange(len(names))
        ax.bar(x, np.nan_to_num(means), yerr=err, capsize=4, color="tab:blue", alpha=0.85)
        ax.set_xticks(
            x, names, rotation=30 if len(names) > 4 else 0, ha="right" if len(names) > 4 else "center"
        )
        finite = means[np.isfinite(means)]
        low = float(np.nanmin(np.where(np.isfinite(lo), lo, means))) if len(finite) else 0.0
        ax.set_ylim(max(0.0, low - 0.05) if np.isfinite(low) else 0.0, 1.0)
        ax.set_ylabel("NDCG@10 (95% bootstrap CI over queries)")
        ax.set_title("NDCG@10 by method")
        ax.grid(axis="y", alpha=0.3)

    return _figure_png(draw, width=max(5.0, 0.8 * len(names) + 2), height=4.0)


def _grouped_bars(
    ax: Any, table: Mapping[str, Mapping[str, float]], groups: Sequence[str], *, ylabel: str, title: str
) -> None:
    series = list(table)
    width = 0.8 / max(len(series), 1)
    x = np.arange(len(groups))
    for i, name in enumerate(series):
        vals = np.array([table[name].get(g, math.nan) for g in groups], dtype=float)
        ax.bar(x - 0.4 + width * (i + 0.5), np.nan_to_num(vals), width, label=name)
    ax.set_xticks(
        x, groups, rotation=30 if len(groups) > 5 else 0, ha="right" if len(groups) > 5 else "center"
    )
    ax.set_ylabel(ylabel)
    ax.set_title(title)
    ax.grid(axis="y", alpha=0.3)
    if series:
        ax.legend(fontsize="small", ncols=min(len(series), 4))


def _plot_ndcg_by_type(results: Mapping[str, EvalResult], types: Sequence[str]) -> bytes:
    table = {n: {t: r.by_type.get(t, {}).get(HEADLINE, math.nan) for t in types} for n, r in results.items()}

    def draw(ax: Any) -> None:
        _grouped_bars(ax, table, types, ylabel="NDCG@10", title="NDCG@10 by query product type")
        # Zoom in on the bars (methods usually differ by a few points) and leave headroom for the legend.
        values = np.array([v for row in table.values() for v in row.values()], dtype=float)
        low = float(np.nanmin(values)) if np.isfinite(values).any() else 0.0
        ax.set_ylim(max(0.0, np.floor((low - 0.1) * 10) / 10), 1.12)

    return _figure_png(draw, width=max(6.0, 0.35 * len(types) * max(len(results), 1) + 2), height=4.5)


def _plot_gate_weights(gate_weights: Mapping[str, Mapping[str, float]], types: Sequence[str]) -> bytes:
    def draw(ax: Any) -> None:
        _grouped_bars(
            ax, gate_weights, types, ylabel="mean image weight", title="Image weight by product type"
        )
        ax.axhline(0.5, color="grey", linestyle="--", linewidth=1)  # 0.5 = mean fusion
        ax.set_ylim(0.0, 1.12)

    return _figure_png(draw, width=max(6.0, 0.35 * len(types) * max(len(gate_weights), 1) + 2), height=4.5)


# ----------------------------------------------------------------------------------------------------
# tables


def _comparisons(
    results: Mapping[str, EvalResult], baseline_name: str | None, metric: str = HEADLINE
) -> dict[str, dict[str, float]]:
    """Paired bootstrap of each method against the baseline (where both kept their per-query metrics)."""
    if baseline_name is None:
        return {}
    base = results[baseline_name]
    out: dict[str, dict[str, float]] = {}
    for name, res in results.items():
        if name == baseline_name or res.per_query is None or base.per_query is None:
            continue
        if metric not in res.per_query.columns or metric not in base.per_query.columns:
            continue
        n_boot = max(res.n_boot, base.n_boot, 1000)
        try:
            out[name] = paired_bootstrap(res.per_query, base.per_query, metric, n_boot=n_boot, seed=0)
        except ValueError:  # no common queries: nothing to compare, not an error in the report
            continue
    return out


def _main_rows(
    results: Mapping[str, EvalResult], comparisons: Mapping[str, Mapping[str, float]], baseline: str | None
) -> tuple[list[str], list[list[str]]]:
    header = ["Method"] + [h for _, h in MAIN_COLUMNS]
    if baseline is not None:
        header.append(f"Δ NDCG@10 vs {baseline} [95% CI]")
    rows = []
    for name, res in results.items():
        row = [name]
        for key, _ in MAIN_COLUMNS:
            value = res.overall.get(key, math.nan)
            row.append(_fmt_ci(value, res.ci.get(key)) if key == HEADLINE else _fmt(value))
        if baseline is not None:
            c = comparisons.get(name)
            if name == baseline:
                row.append("(baseline)")
            elif c is None:
                row.append(_DASH)
            else:
                row.append(f"{c['mean_diff']:+.3f} [{c['lo']:+.3f}, {c['hi']:+.3f}]")
        rows.append(row)
    return header, rows


def results_table_text(results: Mapping[str, EvalResult], *, width: int = 140) -> str:
    """A compact fixed-width table of the main metrics, for printing to a terminal.

    Example:
        >>> import pandas as pd
        >>> from querylife.metrics import evaluate_scored
        >>> df = pd.DataFrame({"query": ["a", "a"], "gain": [2, 0], "positive": [True, False],
        ...                    "score": [0.9, 0.1]})
        >>> "bm25" in results_table_text({"bm25": evaluate_scored(df, n_boot=10)})
        True
    """
    from rich import box
    from rich.console import Console
    from rich.table import Table

    table = Table(box=box.SIMPLE_HEAD, pad_edge=False)
    header, rows = _main_rows(results, {}, None)
    for i, h in enumerate(header):
        table.add_column(h, justify="left" if i == 0 else "right", no_wrap=True)
    for row in rows:
        table.add_row(*row)
    buf = io.StringIO()
    Console(file=buf, width=width, color_system=None, force_terminal=False, highlight=False).print(table)
    return buf.getvalue()


def _markdown(
    results: Mapping[str, EvalResult],
    *,
    title: str,
    meta: Mapping[str, Any],
    types: Sequence[str],
    gate_weights: Mapping[str, Mapping[str, float]] | None,
    notes: Sequence[str] | None,
    baseline_name: str | None,
    comparisons: Mapping[str, Mapping[str, float]],
    plot_files: Mapping[str, str],
    sections: Mapping[str, str] | None = None,
) -> str:
    first = next(iter(results.values()))
    parts = [f"# {title}", ""]
    n_no_pos = first.n_queries_no_positive
    summary = f"{first.n_queries} queries, {first.n_pairs} labelled pairs"
    if n_no_pos:
        noun = "query" if n_no_pos == 1 else "queries"
        summary += f" ({n_no_pos} {noun} without a positive: left out of MRR, Recall and mAP)"
    if len({(r.n_queries, r.n_pairs) for r in results.values()}) > 1:
        summary += " for the first method; the methods were scored on different pairs (see report.json)"
    parts.append(summary + f". Intervals: percentile bootstrap over queries ({first.n_boot} resamples).")
    scalars = {k: v for k, v in meta.items() if isinstance(v, (str, int, float, bool))}
    if scalars:
        parts += ["", "Run: " + "; ".join(f"{k} = `{v}`" for k, v in scalars.items())]

    header, rows = _main_rows(results, comparisons, baseline_name)
    parts += ["", "## Results", "", md_table(header, rows)]
    parts += [
        "",
        "ROC-AUC in type counts only candidates of the query's own product type (exact vs partial): the "
        "all-pairs ROC-AUC is dominated by telling product types apart. F1 is at the threshold chosen on the "
        f"dev split ({_DASH} when no threshold was given).",
    ]
    if "ndcg_by_method" in plot_files:
        parts += ["", f"![NDCG@10 by method]({plot_files['ndcg_by_method']})"]

    if types:
        parts += ["", "## By query product type", "", "NDCG@10:", ""]
        parts.append(
            md_table(
                ["Method"] + list(types),
                [[n] + [_fmt(r.by_type.get(t, {}).get(HEADLINE)) for t in types] for n, r in results.items()],
            )
        )
        parts += ["", "ROC-AUC within type:", ""]
        parts.append(
            md_table(
                ["Method"] + list(types),
                [
                    [n] + [_fmt(r.by_type.get(t, {}).get("roc_auc_in_type")) for t in types]
                    for n, r in results.items()
                ],
            )
        )
        if "ndcg_by_type" in plot_files:
            parts += ["", f"![NDCG@10 by product type]({plot_files['ndcg_by_type']})"]

    if gate_weights:
        gtypes = sorted({t for w in gate_weights.values() for t in w})
        parts += [
            "",
            "## Gate weights",
            "",
            "Mean image weight per product type (0 = title only, 1 = image only):",
        ]
        parts += [
            "",
            md_table(
                ["Method"] + gtypes, [[m] + [_fmt(w.get(t)) for t in gtypes] for m, w in gate_weights.items()]
            ),
        ]
        if "gate_weights" in plot_files:
            parts += ["", f"![Gate weights]({plot_files['gate_weights']})"]

    for heading, body in (sections or {}).items():
        parts += ["", f"## {heading}", "", body.rstrip()]
    if notes:
        parts += ["", "## Notes", ""] + [f"- {n}" for n in notes]
    return "\n".join(parts) + "\n"


# ----------------------------------------------------------------------------------------------------
# entry point


def write_report(
    out_dir: str | os.PathLike[str],
    results: Mapping[str, EvalResult],
    *,
    title: str,
    meta: Mapping[str, Any],
    gate_weights: Mapping[str, Mapping[str, float]] | None = None,
    notes: Sequence[str] | None = None,
    baseline_name: str | None = None,
    sections: Mapping[str, str] | None = None,
) -> dict[str, Path]:
    """Write ``report.json``, ``report.md`` and the PNG plots for ``results`` (method name -> result).

    Methods appear in the order of ``results``. ``meta`` (command, machine, timings, ...) goes whole into the
    JSON and its scalar entries into the Markdown. ``gate_weights`` maps gated method -> product type -> mean
    image weight. With ``baseline_name`` every other method gets a paired-bootstrap NDCG@10 difference
    against it (needs the per-query metrics that :func:`querylife.metrics.evaluate_scored` keeps).
    ``sections`` adds Markdown sections (heading -> body) before the notes.

    Every file is written atomically (temporary file + ``os.replace``). Returns the written paths by kind:
    ``json``, ``markdown``, ``ndcg_by_method``, ``ndcg_by_type`` and, with gate weights, ``gate_weights``.
    """
    if not results:
        raise ValueError("no results to report")
    if baseline_name is not None and baseline_name not in results:
        raise ValueError(f"baseline {baseline_name!r} is not among the methods {list(results)}")
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    types = _types(results)
    comparisons = _comparisons(results, baseline_name)

    paths: dict[str, Path] = {}
    plot_files = {"ndcg_by_method": "ndcg_by_method.png", "ndcg_by_type": "ndcg_by_type.png"}
    if gate_weights:
        plot_files["gate_weights"] = "gate_weights.png"
    # Plots first: if drawing fails, no report refers to a missing image.
    paths["ndcg_by_method"] = atomic_write_bytes(out / plot_files["ndcg_by_method"], _plot_ndcg_by_method(results))
    paths["ndcg_by_type"] = atomic_write_bytes(
        out / plot_files["ndcg_by_type"], _plot_ndcg_by_type(results, types)
    )
    if gate_weights:
        gtypes = sorted({t for w in gate_weights.values() for t in w})
        paths["gate_weights"] = atomic_write_bytes(
            out / plot_files["gate_weights"], _plot_gate_weights(gate_weights, gtypes)
        )

    payload = {
        "title": title,
        "created_at": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "meta": meta,
        "methods": list(results),
        "baseline": baseline_name,
        "results": {name: res.to_dict() for name, res in results.items()},
        "comparisons": {name: {HEADLINE: c} for name, c in comparisons.items()},
        "gate_weights": gate_weights,
        "notes": list(notes or []),
        "files": {k: str(v.name) for k, v in paths.items()},
    }
    text = json.dumps(_jsonable(payload), indent=2, allow_nan=False, ensure_ascii=False)
    paths["json"] = atomic_write_bytes(out / "report.json", (text + "\n").encode("utf-8"))
    md = _markdown(
        results,
        title=title,
        meta=meta,
        types=types,
        gate_weights=gate_weights,
        notes=notes,
        baseline_name=baseline_name,
        comparisons=comparisons,
        plot_files=plot_files,
        sections=sections,
    )
    paths["markdown"] = atomic_write_bytes(out / "report.md", md.encode("utf-8"))
    return paths
