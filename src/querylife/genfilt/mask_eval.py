"""How good is a false-negative mask? Precision and recall of judges against known equivalents.

On data where the true duplicates / equivalents are known (the demo storefront's ``group_id``: one item listed
by several sellers; and the labels: two products both labelled positive for a query), a judge's mask can be
scored pair by pair. Only off-positive pairs count: (query i, product j) with j not row i's own positive.

Example::

    truth = known_equivalents(data.catalog, data.pairs)
    batches = sample_batches(data, config, n_batches=50)  # the batches training sees
    table = evaluate_judges({"title": DuplicateTitleJudge(catalog), "guide": GuideModelJudge(...)}, batches, truth)
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable, Mapping
from typing import Any

import numpy as np
import pandas as pd

from ..batches import EpochBatches, TrainBatch
from ..data.prepare import Dataset
from .judges import Judge

__all__ = [
    "KnownEquivalents",
    "evaluate_judge",
    "evaluate_judges",
    "judge_batch",
    "known_equivalents",
    "sample_batches",
]

Batch = tuple[list[str], list[str], list[str]]  # (queries, product_ids = columns, positive_ids = one per query)
Truth = Callable[[str, str, str], bool]


def positive_flags(pairs: pd.DataFrame) -> pd.Series:
    """Which pair rows are positives: the ``positive`` column if present, else derived from ``label``."""
    if "positive" in pairs.columns:
        return pairs["positive"].fillna(False).astype(bool)
    if "label" in pairs.columns:
        from ..data.labels import make_label_scheme

        scheme = make_label_scheme("auto", pairs["label"].tolist())
        return pairs["label"].map(scheme.is_positive).astype(bool)
    raise ValueError("pairs need a 'positive' column (prepared pairs) or a 'label' column (raw pairs)")


class KnownEquivalents:
    """``truth(query, positive_id, other_id)``: is ``other`` a true false negative for the query?

    True when ``other`` shares the positive's ``group_id`` (a duplicate listing; empty / missing ids never
    match), or when ``other`` is itself labelled positive for the query (then both are: the positive is
    positive by construction in a training batch). ``reason`` says which rule fired.
    """

    def __init__(self, group_of: Mapping[str, str], positives: set[tuple[str, str]]):
        self.group_of = group_of
        self.positives = positives

    def reason(self, query: str, positive_id: str, other_id: str) -> str | None:
        if other_id == positive_id:
            return None
        g = self.group_of.get(positive_id, "")
        if g and g == self.group_of.get(other_id, ""):
            return "group"
        if (query, other_id) in self.positives:
            return "label"
        return None

    def __call__(self, query: str, positive_id: str, other_id: str) -> bool:
        return self.reason(query, positive_id, other_id) is not None


def known_equivalents(catalog: pd.DataFrame, pairs: pd.DataFrame) -> KnownEquivalents:
    """The ground truth of :class:`KnownEquivalents` from a catalogue (``group_id`` optional) and labelled pairs.

    ``pairs`` may be raw (``label``) or prepared (``positive``); all of them count, whatever the split, since
    a label anywhere says what the product is.
    """
    group_of: dict[str, str] = {}
    if "group_id" in catalog.columns:
        groups = catalog["group_id"].fillna("").astype(str)
        group_of = dict(zip(catalog["product_id"].astype(str), groups, strict=True))
    pos = pairs[positive_flags(pairs)]
    positives = set(zip(pos["query"].astype(str), pos["product_id"].astype(str), strict=True))
    return KnownEquivalents(group_of, positives)


def _ratio(num: int, den: int) -> float:
    return num / den if den else float("nan")


def evaluate_judge(judge: Judge, batches: Iterable[Batch], truth: Truth) -> dict[str, Any]:
    """Precision / recall / F1 of ``judge``'s masks over ``batches`` against ``truth``.

    Returns ``precision`` (masked pairs that are true false negatives; NaN when nothing was masked), ``recall``
    (true false negatives that were masked; NaN when there were none), ``f1``, ``n_masked``, ``n_true``,
    ``n_true_masked``, ``n_pairs`` (off-positive pairs), ``mask_rate``, ``seconds`` (time inside the judge) and
    the judge's counters for these batches (``asked``, ``cache_hits``, ``fallbacks``, ...).
    """
    before = judge.stats.as_dict() if hasattr(judge, "stats") else {}
    n_pairs = n_masked = n_true = tp = 0
    seconds = 0.0
    for queries, product_ids, positive_ids in batches:
        t0 = time.perf_counter()
        mask = np.asarray(judge.mask(list(queries), list(product_ids), list(positive_ids)), dtype=bool)
        seconds += time.perf_counter() - t0
        if mask.shape != (len(queries), len(product_ids)):
            raise ValueError(
                f"judge {judge.name!r} returned shape {mask.shape} for a {len(queries)}x{len(product_ids)}"
            )
        for i, (q, pos) in enumerate(zip(queries, positive_ids, strict=True)):
            for j, other in enumerate(product_ids):
                if other == pos:
                    continue
                t, m = truth(q, pos, other), bool(mask[i, j])
                n_pairs += 1
                n_true += t
                n_masked += m
                tp += t and m
    precision, recall = _ratio(tp, n_masked), _ratio(tp, n_true)
    if np.isnan(precision) or np.isnan(recall):
        f1 = float("nan")
    else:
        f1 = 2 * precision * recall / (precision + recall) if precision + recall else 0.0
    out: dict[str, Any] = {
        "precision": precision,
        "recall": recall,
        "f1": f1,
        "n_masked": n_masked,
        "n_true": n_true,
        "n_true_masked": tp,
        "n_pairs": n_pairs,
        "mask_rate": _ratio(n_masked, n_pairs),
        "seconds": seconds,
    }
    if before:
        after = judge.stats.as_dict()
        for key in ("asked", "cache_hits", "over_budget", "undecided", "fallbacks"):
            out[key] = after[key] - before[key]
    return out


def evaluate_judges(judges: Mapping[str, Judge], batches: Iterable[Batch], truth: Truth) -> pd.DataFrame:
    """:func:`evaluate_judge` for each judge on the same batches: one row per judge (``judge`` column first)."""
    batches = list(batches)  # a generator would be used up by the first judge
    rows = [{"judge": name, **evaluate_judge(judge, batches, truth)} for name, judge in judges.items()]
    return pd.DataFrame(rows)


def judge_batch(batch: TrainBatch) -> Batch:
    """A training batch as a judge sees it: ``(queries, product_ids of every column, positive_ids)``."""
    return list(batch.queries), list(batch.product_ids), list(batch.positive_ids)


def sample_batches(data: Dataset, config, n_batches: int, *, seed: int | None = None) -> list[Batch]:
    """The first ``n_batches`` batches training sees (:func:`querylife.batches.epoch_batches`: epochs 0, 1, ... of
    ``config.train``'s batch size, seed and hard negatives, over the positives training learns from), as judge
    batches ``(queries, product_ids, positive_ids)``: the columns are the rows' positives, then their hard negatives.

    Batches without an off-positive column (a single pair, no hard negative) are skipped: they hold nothing to judge.
    ``seed`` replaces ``config.train.seed``.
    """
    if n_batches < 1:
        return []
    plan = EpochBatches.from_config(data, config, seed=seed)
    out: list[Batch] = []
    epoch = 0
    while len(out) < n_batches:
        got = [b for b in plan.epoch(epoch) if len(b.product_rows) >= 2]
        if not got:
            break
        out += [judge_batch(b) for b in got[: n_batches - len(out)]]
        epoch += 1
    return out
