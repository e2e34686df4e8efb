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

from .evaluate import MethodRun, metrics_by_group
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
#: The metrics summarised per type group (a group's test queries are those whose own product type is in it).
GROUP_METRICS: tuple[tuple[str, str], ...] = (("ndcg@10", "NDCG@10"), ("roc_auc_in_type", "ROC-AUC in type"))


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

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready form: mean, std and the per-seed values."""
        return {"mean": self.mean, "std": self.std, "per_seed": list(self.values)}


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

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready form (``per_seed`` under the report's key ``per_seed_diff``)."""
        return {
            "mean_diff": self.mean_diff,
            "lo": self.lo,
            "hi": self.hi,
            "per_seed_diff": list(self.per_seed),
            "ahead": self.ahead,
            "n_seeds": self.n_seeds,
            "n_queries": self.n_queries,
        }


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
    #: type group -> product types; ``group_spread[method][group][metric]`` and ``group_comparisons[method][group]``
    #: are the same numbers over the test queries of each group (empty without groups).
    groups: dict[str, list[str]] = field(default_factory=dict)
    group_spread: dict[str, dict[str, dict[str, Spread]]] = field(default_factory=dict)
    group_comparisons: dict[str, dict[str, SeedComparison]] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready form with the per-seed numbers (NaN left as float: the report writer turns it into null)."""
        return {
            "seeds": list(self.seeds),
            "reference": self.reference,
            "metric_compared": COMPARED_METRIC,
            "summary": {
                m: {k: s.to_dict() for k, s in by.items()}
                for m, by in self.spread.items()
            },
            "comparisons": {
                m: c.to_dict()
                for m, c in self.comparisons.items()
            },
            "groups": self.groups,
            "group_summary": {
                m: {
                    g: {k: s.to_dict() for k, s in by.items()}
                    for g, by in groups.items()
                }
                for m, groups in self.group_spread.items()
            },
            "group_comparisons": {
                m: {
                    g: c.to_dict()
                    for g, c in by.items()
                }
                for m, by in self.group_comparisons.items()
            },
            "per_seed": {
                str(seed): {
                    r.name: {"overall": r.result.overall, "seconds": round(r.seconds, 1), **(r.extra or {})}
                    for r in runs
                }
                for seed, runs in self.runs.items()
            },
        }


def _mean_per_query(runs: Sequence[MethodRun], metric: str, types: Sequence[str] | None = None) -> pd.DataFrame:
    """Per-query ``metric`` averaged over the runs (one per seed); a query missing on a seed averages the rest.
    ``types``: only the queries whose own product type is one of them."""
    frames = []
    for r in runs:
        pq = r.result.per_query
        if types is not None:
            pq = pq[pq["query_type"].isin(list(types))] if "query_type" in pq else pq.iloc[:0]
        frames.append(pq[["query", metric]])
    stacked = pd.concat(frames, ignore_index=True)
    return stacked.groupby("query", sort=False, as_index=False)[metric].mean()


def _compare(
    runs: Sequence[MethodRun], ref_runs: Sequence[MethodRun], diffs: tuple[float, ...], types, *, n_boot, seed, alpha
) -> SeedComparison:
    pb = paired_bootstrap(
        _mean_per_query(runs, COMPARED_METRIC, types),
        _mean_per_query(ref_runs, COMPARED_METRIC, types),
        COMPARED_METRIC,
        n_boot=n_boot,
        seed=seed,
        alpha=alpha,
    )
    return SeedComparison(
        mean_diff=pb["mean_diff"],
        lo=pb["lo"],
        hi=pb["hi"],
        per_seed=diffs,
        ahead=int(sum(d > 0 for d in diffs)),
        n_seeds=len(diffs),
        n_queries=int(pb["n_queries"]),
    )


def type_groups_of(runs_by_seed: Mapping[int, Sequence[MethodRun]]) -> dict[str, list[str]]:
    """Each product type of the test queries as a group of its own (when no grouping is given)."""
    types: set[str] = set()
    for runs in runs_by_seed.values():
        for r in runs:
            if "query_type" in r.scored:
                types.update(str(t) for t in r.scored["query_type"].dropna().unique())
    return {t: [t] for t in sorted(types)}


def aggregate_seeds(
    runs_by_seed: Mapping[int, Sequence[MethodRun]],
    *,
    reference: str = REFERENCE_METHOD,
    n_boot: int = 1000,
    seed: int = 0,
    alpha: float = 0.05,
    groups: Mapping[str, Sequence[str]] | None = None,
) -> SeedSummary:
    """Mean ± std over seeds of :data:`SEED_METRICS` for each method, and each method vs ``reference``; with
    ``groups`` (group name -> product types, e.g. a storefront's ``type_groups()``, or :func:`type_groups_of` for
    one group per type) the same per type group (:data:`GROUP_METRICS`, paired intervals on the group's queries).

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
    groups = {g: list(t) for g, t in (groups or {}).items()}
    numbers = {s: metrics_by_group(list(runs_by_seed[s]), groups, seed=seed) for s in seeds} if groups else {}
    group_spread = (
        {
            m: {
                g: {k: Spread.of([numbers[s][m][g].get(k, math.nan) for s in seeds]) for k, _ in GROUP_METRICS}
                for g in groups
            }
            for m in methods
        }
        if groups
        else {}
    )
    comparisons: dict[str, SeedComparison] = {}
    group_comparisons: dict[str, dict[str, SeedComparison]] = {}
    ref = reference if reference in methods else None
    if ref is not None:
        ref_runs = [by_seed[s][ref] for s in seeds]
        opts = {"n_boot": n_boot, "seed": seed, "alpha": alpha}
        for m in methods:
            if m == ref:
                continue
            runs = [by_seed[s][m] for s in seeds]
            diffs = tuple(
                by_seed[s][m].result.overall[COMPARED_METRIC] - by_seed[s][ref].result.overall[COMPARED_METRIC]
                for s in seeds
            )
            comparisons[m] = _compare(runs, ref_runs, diffs, None, **opts)
            group_comparisons[m] = {}
            for g, types in groups.items():
                gd = tuple(numbers[s][m][g][COMPARED_METRIC] - numbers[s][ref][g][COMPARED_METRIC] for s in seeds)
                group_comparisons[m][g] = _compare(runs, ref_runs, gd, types, **opts)
    return SeedSummary(
        seeds,
        methods,
        spread,
        comparisons,
        ref,
        {s: list(runs_by_seed[s]) for s in seeds},
        groups,
        group_spread,
        group_comparisons,
    )


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
            f'as the uncertainty. "ahead on" counts the seeds where the method\'s NDCG@10 is above '
            f"`{summary.reference}`'s on the same seed. report.json keeps every seed's numbers (meta.seeds).",
        ]
    if summary.groups:
        text += ["", group_table(summary)]
    return "\n".join(text)


def _delta(c: SeedComparison | None, ref: bool) -> str:
    if ref:
        return "(reference)"
    if c is None or not math.isfinite(c.mean_diff):
        return "–"
    ci = "" if not math.isfinite(c.lo) else f" [{c.lo:+.4f}, {c.hi:+.4f}]"
    return f"{c.mean_diff:+.4f}{ci}"


def group_table(summary: SeedSummary) -> str:
    """Markdown: per type group, each method's NDCG@10 and within-type ROC-AUC (mean ± std over seeds) and its
    NDCG@10 against the reference on the group's queries (paired interval, as in the overall table)."""
    ref = summary.reference
    header = ["Type group", "Method", *(f"{h} (mean ± std)" for _, h in GROUP_METRICS)]
    if ref is not None:
        header.append(f"Δ NDCG@10 vs {ref} [95% CI]")
    rows = []
    for g, types in summary.groups.items():
        label = g if [g] == list(types) else f"{g} ({', '.join(types)})"
        for m in summary.methods:
            row = [label, m, *(_pm(summary.group_spread[m][g][k]) for k, _ in GROUP_METRICS)]
            if ref is not None:
                row.append(_delta(summary.group_comparisons.get(m, {}).get(g), m == ref))
            rows.append(row)
    return "\n".join(
        [
            "Per type group: the test queries whose own product type is in the group, same seeds and intervals.",
            "",
            md_table(header, rows),
        ]
    )


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
