"""Aggregate one suite's methods over several training seeds: mean ± std per metric and paired intervals against
the reference method (``querylife``).

The paired interval pools the seeds per query: each test query's NDCG@10 is averaged over the seeds for a method
and for the reference, and :func:`querylife.metrics.paired_bootstrap` resamples the queries (the test queries are
the same on every seed, since the split seed does not change). Its mean difference is therefore the mean over
seeds of the seed-level differences (when every seed scored the same queries), and its interval covers query
sampling with the seed noise averaged in. "Ahead on k of N" counts the seeds whose NDCG@10 is above the
reference's on that seed.

Example:
    >>> import pandas as pd
    >>> from querylife.evaluate import MethodRun
    >>> from querylife.metrics import evaluate_scored
    >>> df = pd.DataFrame({"query": ["a", "a", "b", "b"], "gain": [2, 0, 2, 0],
    ...                    "positive": [True, False, True, False], "score": [0.9, 0.1, 0.2, 0.8]})
    >>> def run(name, scores):
    ...     return MethodRun(name, "", evaluate_scored(df.assign(score=scores), n_boot=0), 0.0, df)
    >>> runs = {0: [run("querylife", [0.9, 0.1, 0.2, 0.8]), run("mean", [0.9, 0.1, 0.9, 0.1])],
    ...         1: [run("querylife", [0.9, 0.1, 0.9, 0.1]), run("mean", [0.9, 0.1, 0.9, 0.1])]}
    >>> summary = aggregate_seeds(runs, n_boot=0)
    >>> summary.comparisons["mean"].ahead, summary.comparisons["mean"].n_seeds
    (1, 2)
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd

from .evaluate import MethodRun
from .methods import REFERENCE_METHOD
from .metrics import paired_bootstrap
from .report import md_table

#: The metrics summarised over seeds (keys of ``EvalResult.overall``) with their column headers.
SEED_METRICS: tuple[tuple[str, str], ...] = (
    ("ndcg@10", "NDCG@10"),
    ("roc_auc", "ROC-AUC"),
    ("roc_auc_in_type", "ROC-AUC in type"),
)
COMPARED_METRIC = "ndcg@10"


@dataclass(frozen=True)
class Spread:
    """One metric of one method over seeds: the per-seed values, their mean and sample std (0 for one seed)."""

    values: tuple[float, ...]
    mean: float
    std: float

    @classmethod
    def of(cls, values: Sequence[float]) -> Spread:
        vals = np.asarray(values, dtype=float)
        std = float(vals.std(ddof=1)) if len(vals) > 1 else 0.0
        return cls(tuple(float(v) for v in vals), float(vals.mean()), std)


@dataclass(frozen=True)
class SeedComparison:
    """A method against the reference over seeds, on :data:`COMPARED_METRIC`.

    ``mean_diff`` / ``lo`` / ``hi``: paired bootstrap over queries of the per-query difference averaged over seeds;
    ``per_seed``: the seed-level differences of the overall metric; ``ahead``: seeds where the method is above.
    """

    mean_diff: float
    lo: float
    hi: float
    per_seed: tuple[float, ...]
    ahead: int
    n_seeds: int
    n_queries: int


@dataclass
class SeedSummary:
    """:func:`aggregate_seeds`'s result: ``spread[method][metric]``, ``comparisons[method]`` (methods other than the
    reference, when the reference ran), the seeds and the per-seed runs."""

    seeds: tuple[int, ...]
    methods: tuple[str, ...]
    spread: dict[str, dict[str, Spread]]
    comparisons: dict[str, SeedComparison]
    reference: str | None
    runs: dict[int, list[MethodRun]] = field(repr=False, default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready form with the per-seed numbers (NaN left as float: the report writer turns it into null)."""
        return {
            "seeds": list(self.seeds),
            "reference": self.reference,
            "metric_compared": COMPARED_METRIC,
            "summary": {
                m: {k: {"mean": s.mean, "std": s.std, "per_seed": list(s.values)} for k, s in by.items()}
                for m, by in self.spread.items()
            },
            "comparisons": {
                m: {
                    "mean_diff": c.mean_diff,
                    "lo": c.lo,
                    "hi": c.hi,
                    "per_seed_diff": list(c.per_seed),
                    "ahead": c.ahead,
                    "n_seeds": c.n_seeds,
                    "n_queries": c.n_queries,
                }
                for m, c in self.comparisons.items()
            },
            "per_seed": {
                str(seed): {
                    r.name: {"overall": r.result.overall, "seconds": round(r.seconds, 1), **(r.extra or {})}
                    for r in runs
                }
                for seed, runs in self.runs.items()
            },
        }


def _mean_per_query(runs: Sequence[MethodRun], metric: str) -> pd.DataFrame:
    """Per-query ``metric`` averaged over the runs (one per seed); a query missing on a seed averages the rest."""
    frames = [r.result.per_query[["query", metric]] for r in runs]
    stacked = pd.concat(frames, ignore_index=True)
    return stacked.groupby("query", sort=False, as_index=False)[metric].mean()


def aggregate_seeds(
    runs_by_seed: Mapping[int, Sequence[MethodRun]],
    *,
    reference: str = REFERENCE_METHOD,
    n_boot: int = 1000,
    seed: int = 0,
    alpha: float = 0.05,
) -> SeedSummary:
    """Mean ± std over seeds of :data:`SEED_METRICS` for each method, and each method vs ``reference``.

    ``runs_by_seed``: training seed -> the runs of that seed (every seed the same method names; a seed-independent
    baseline may be the same run on each seed, then its std is 0). The comparison needs each run's per-query
    metrics (:func:`querylife.metrics.evaluate_scored` keeps them); with ``n_boot=0`` its interval is NaN.
    Raises ``ValueError`` when there are no seeds or the seeds ran different methods.
    """
    if not runs_by_seed:
        raise ValueError("no seeds to aggregate")
    seeds = tuple(runs_by_seed)
    by_seed = {s: {r.name: r for r in runs_by_seed[s]} for s in seeds}
    methods = tuple(r.name for r in runs_by_seed[seeds[0]])
    for s in seeds:
        if set(by_seed[s]) != set(methods):
            raise ValueError(f"seed {s} ran {sorted(by_seed[s])}, seed {seeds[0]} ran {sorted(methods)}")
    spread = {
        m: {k: Spread.of([by_seed[s][m].result.overall.get(k, math.nan) for s in seeds]) for k, _ in SEED_METRICS}
        for m in methods
    }
    comparisons: dict[str, SeedComparison] = {}
    ref = reference if reference in methods else None
    if ref is not None:
        ref_mean = _mean_per_query([by_seed[s][ref] for s in seeds], COMPARED_METRIC)
        for m in methods:
            if m == ref:
                continue
            diffs = tuple(
                by_seed[s][m].result.overall[COMPARED_METRIC] - by_seed[s][ref].result.overall[COMPARED_METRIC]
                for s in seeds
            )
            pb = paired_bootstrap(
                _mean_per_query([by_seed[s][m] for s in seeds], COMPARED_METRIC),
                ref_mean,
                COMPARED_METRIC,
                n_boot=n_boot,
                seed=seed,
                alpha=alpha,
            )
            comparisons[m] = SeedComparison(
                mean_diff=pb["mean_diff"],
                lo=pb["lo"],
                hi=pb["hi"],
                per_seed=diffs,
                ahead=int(sum(d > 0 for d in diffs)),
                n_seeds=len(seeds),
                n_queries=int(pb["n_queries"]),
            )
    return SeedSummary(seeds, methods, spread, comparisons, ref, {s: list(runs_by_seed[s]) for s in seeds})


def _pm(s: Spread) -> str:
    return "–" if not math.isfinite(s.mean) else f"{s.mean:.4f} ± {s.std:.4f}"


def seeds_section(summary: SeedSummary, *, n_boot: int) -> str:
    """The Markdown section of a multi-seed report: mean ± std table, then the comparison with the reference."""
    n = len(summary.seeds)
    header = ["Method", *(f"{h} (mean ± std)" for _, h in SEED_METRICS)]
    if summary.reference is not None:
        header += [f"Δ NDCG@10 vs {summary.reference} [95% CI]", "ahead on"]
    rows = []
    for m in summary.methods:
        row = [m, *(_pm(summary.spread[m][k]) for k, _ in SEED_METRICS)]
        if summary.reference is not None:
            c = summary.comparisons.get(m)
            if m == summary.reference:
                row += ["(reference)", "–"]
            elif c is None:
                row += ["–", "–"]
            else:
                ci = "" if not math.isfinite(c.lo) else f" [{c.lo:+.4f}, {c.hi:+.4f}]"
                row += [f"{c.mean_diff:+.4f}{ci}", f"{c.ahead} of {c.n_seeds} seeds"]
        rows.append(row)
    text = [
        f"Training seeds {', '.join(map(str, summary.seeds))} (train.seed); the data split is the same on every "
        "seed (data.split_seed). Mean ± sample std over seeds of the test metrics; baselines that do not depend "
        "on the training seed ran once (std 0).",
        "",
        md_table(header, rows),
    ]
    if summary.reference is not None:
        text += [
            "",
            f"Δ: each test query's NDCG@10 is averaged over the {n} seeds, for the method and for "
            f"`{summary.reference}`; the interval is a paired percentile bootstrap over queries of that difference "
            f"({n_boot} resamples), so it is the mean over seeds of the seed-level differences with query sampling "
            f"as the uncertainty. \"ahead on\" counts the seeds where the method's NDCG@10 is above "
            f"`{summary.reference}`'s on the same seed. report.json keeps every seed's numbers (meta.seeds).",
        ]
    return "\n".join(text)


def seeds_table_text(summary: SeedSummary) -> str:
    """The mean ± std table for a terminal (plain text, one row per method)."""
    lines = [f"{'method':<24}" + "".join(f"{h:>22}" for _, h in SEED_METRICS) + f"{'Δ NDCG@10':>12}{'ahead':>8}"]
    for m in summary.methods:
        c = summary.comparisons.get(m)
        delta = f"{c.mean_diff:+.4f}" if c else "–"
        ahead = f"{c.ahead}/{c.n_seeds}" if c else "–"
        lines.append(
            f"{m:<24}" + "".join(f"{_pm(summary.spread[m][k]):>22}" for k, _ in SEED_METRICS) + f"{delta:>12}{ahead:>8}"
        )
    return "\n".join(lines)
