"""Train / dev / test splits: the data's own ``split`` column when it has one, else at random by query.

One rule for every way data is loaded (:func:`choose_splits`):

1. When the pairs have a ``split`` column (a user's own, or ESCI's official one) and ``data.official_split`` is on
   (the default), its test rows are the test split. Its dev rows are the dev split; when it has none, dev is
   carved at random out of its train rows by ``split_by`` with the seed, in the ratio ``split[1] : split[0]``. A
   ``split_by`` group found in several of its splits goes wholly to the latest of train < dev < test, so no test
   query (or intent) is trained on. A column without test rows is not used (a warning says so).
2. Otherwise :func:`split_by_query` splits at random by ``split_by`` (the query, or a coarser column such as an
   intent) with the seed and the fractions ``split``.

Either way one line says which rule was used, with the sizes.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence

import numpy as np
import pandas as pd

from .errors import DataError
from .notes import Notes

__all__ = [
    "split_by_query", "choose_splits", "own_splits", "kfold_by_query", "split_value", "SPLIT_NAMES", "SPLIT_ALIASES"
]

log = logging.getLogger(__name__)

SPLIT_NAMES = ("train", "dev", "test")
# Spellings of a split value that are read as one of SPLIT_NAMES (compared lower-cased and stripped).
SPLIT_ALIASES = {
    "train": "train", "training": "train",
    "dev": "dev", "valid": "dev", "validation": "dev", "val": "dev",
    "test": "test",
}
_RANK = {"train": 0, "dev": 1, "test": 2}


def split_value(value: object) -> str | None:
    """``"Validation"`` -> ``"dev"``; None for anything that is not a split name."""
    if value is None:
        return None
    return SPLIT_ALIASES.get(str(value).strip().lower())


def split_by_query(
    pairs: pd.DataFrame, fractions: Sequence[float] = (0.7, 0.1, 0.2), seed: int = 0, *, group_by: str = "query"
) -> dict[str, pd.DataFrame]:
    """Split ``pairs`` into ``train`` / ``dev`` / ``test`` so that all rows of a query land in one split.

    Fractions are over distinct queries, not rows. The assignment depends only on the set of queries and the
    seed (queries are sorted before the seeded shuffle), so re-ordering the rows does not change it. Within a
    split, rows keep their original order; indexes are reset.

    Counts: ``round(n * f)`` queries for dev and test, the rest for train; a split with a non-zero fraction
    that would get no query takes one from the largest split. A fraction of 0 gives an empty split.

    ``group_by`` names a coarser column to split on (e.g. a query intent shared by paraphrases, or a session):
    all rows of one value land in one split, which keeps every query in one split too as long as each query has
    a single value (checked).

    Raises:
        DataError: fractions that are not three non-negative numbers summing to 1, no ``query`` column, or
            fewer distinct queries than splits with a non-zero fraction.
    """
    fr = [float(f) for f in fractions]
    if len(fr) != 3:
        raise DataError(f"split fractions must be three numbers (train, dev, test); got {list(fractions)}")
    if any(not np.isfinite(f) or f < 0 for f in fr):
        raise DataError(f"split fractions must be non-negative; got {fr}")
    if abs(sum(fr) - 1.0) > 1e-6:
        raise DataError(f"split fractions must sum to 1; got {fr} (sum {sum(fr):g})")
    if "query" not in pairs.columns:
        raise DataError(f"pairs have no 'query' column; found {list(pairs.columns)}", field="query")

    if group_by not in pairs.columns:
        raise DataError(f"cannot split by {group_by!r}: no such column; found {list(pairs.columns)}", field=group_by)
    keys = pairs[group_by].astype(str)
    if group_by != "query":
        spread = keys.groupby(pairs["query"].astype(str)).nunique()
        if (spread > 1).any():
            bad = spread[spread > 1].index[0]
            raise DataError(f"query {bad!r} has several {group_by!r} values: cannot split by {group_by!r}",
                            field=group_by)
    queries = np.array(sorted(pd.unique(keys)), dtype=object)
    n = len(queries)
    wanted = [i for i, f in enumerate(fr) if f > 0]
    if n < len(wanted):
        names = [SPLIT_NAMES[i] for i in wanted]
        raise DataError(
            f"need at least {len(wanted)} distinct queries to fill the splits {names}; got {n}"
        )

    counts = [0, round(n * fr[1]), round(n * fr[2])]
    counts[0] = n - counts[1] - counts[2]
    if counts[0] < 0:  # rounding both up can overshoot by one
        big = 1 if counts[1] >= counts[2] else 2
        counts[big] += counts[0]
        counts[0] = 0
    if fr[0] == 0 and counts[0] > 0:  # rounding both down leaves a query for a split that asked for none
        big = 1 if fr[1] >= fr[2] else 2
        counts[big] += counts[0]
        counts[0] = 0
    for i in wanted:
        if counts[i] == 0:
            donor = max(range(3), key=lambda j: counts[j])
            counts[donor] -= 1
            counts[i] += 1

    rng = np.random.default_rng(np.random.SeedSequence([int(seed), 0x5E1F]))
    order = queries[rng.permutation(n)]
    bounds = np.cumsum([0, *counts])
    assign = {}
    for k, name in enumerate(SPLIT_NAMES):
        for q in order[bounds[k]:bounds[k + 1]]:
            assign[q] = name
    which = keys.map(assign).to_numpy()
    return {name: pairs[which == name].reset_index(drop=True) for name in SPLIT_NAMES}


def _sizes(splits: dict[str, pd.DataFrame]) -> str:
    return " / ".join(f"{k} {len(v)}" for k, v in splits.items()) + " pairs"


def _by(group_by: str) -> str:
    return "by query" if group_by == "query" else f"by {group_by!r}"


def own_splits(
    pairs: pd.DataFrame, fractions: Sequence[float], seed: int, group_by: str, notes: Notes | None = None
) -> dict[str, pd.DataFrame] | None:
    """Splits from the pairs' ``split`` column (rule 1 of the module docstring), or None when it has no test rows.

    Raises:
        DataError: a value other than train / dev / test (or their aliases), no ``group_by`` column, or
            negative fractions.
    """
    values = pairs["split"].map(split_value)
    if values.isna().any():
        bad = sorted({str(v) for v in pairs.loc[values.isna(), "split"]})
        raise DataError(f"pairs column 'split' has values {bad[:5]} besides train/dev/test; rename the column, fix "
                        "the values, or set data.official_split=false to split at random", field="split")
    rank = values.map(_RANK)
    if not (rank == _RANK["test"]).any():
        if notes is not None:
            notes.warn("split-column-unused", "the pairs' `split` column has no test rows: it is not used")
        return None
    if group_by not in pairs.columns:
        raise DataError(f"cannot split by {group_by!r}: no such column; found {list(pairs.columns)}", field=group_by)
    keys = pairs[group_by].astype(str)
    latest = rank.groupby(keys).transform("max")
    moved = int((latest != rank).sum())
    if moved and notes is not None:
        notes.warn("split-moved", f"split: {moved} pairs moved to a later split of the `split` column: their "
                                  f"{group_by} is in several splits (train < dev < test), so no test {group_by} is "
                                  "trained on")
    name = latest.map({v: k for k, v in _RANK.items()}).to_numpy()

    def part(which: str) -> pd.DataFrame:
        return pairs[name == which].reset_index(drop=True)

    out = {"test": part("test")}
    if (name == "dev").any():
        out["train"], out["dev"] = part("train"), part("dev")
        out = {k: out[k] for k in SPLIT_NAMES}
        if notes is not None:
            notes.info("split", f"split: the pairs' own `split` column ({_sizes(out)})")
        return out
    train = part("train")
    f_train, f_dev = float(fractions[0]), float(fractions[1])
    if f_train < 0 or f_dev < 0:
        raise DataError(f"split fractions must be non-negative; got {list(fractions)}")
    if not len(train) or f_dev == 0:
        out["train"], out["dev"] = train, train.iloc[0:0]
        how = "no dev split (split[1] is 0)" if len(train) else "no train rows"
    elif f_train == 0:
        out["train"], out["dev"] = train.iloc[0:0], train
        how = "its train rows all go to dev (split[0] is 0)"
    else:
        total = f_train + f_dev
        s = split_by_query(train, fractions=(f_train / total, f_dev / total, 0.0), seed=seed, group_by=group_by)
        out["train"], out["dev"] = s["train"], s["dev"]
        how = (f"dev carved from its train rows at random {_by(group_by)}, seed {seed}, "
               f"dev:train {f_dev:g}:{f_train:g}")
    out = {k: out[k] for k in SPLIT_NAMES}
    if notes is not None:
        notes.info("split", f"split: the pairs' own `split` column for test; {how} ({_sizes(out)})")
    return out


def choose_splits(
    pairs: pd.DataFrame,
    fractions: Sequence[float] = (0.7, 0.1, 0.2),
    seed: int = 0,
    *,
    group_by: str = "query",
    own_split: bool = True,
    notes: Notes | None = None,
) -> dict[str, pd.DataFrame]:
    """Train / dev / test by the rule of the module docstring; ``notes`` gets the line saying which rule was used.

    ``own_split``: use the pairs' ``split`` column when there is one (``data.official_split``).
    """
    splits = None
    if own_split and "split" in pairs.columns:
        splits = own_splits(pairs, fractions, seed, group_by, notes)
    if splits is None:
        splits = split_by_query(pairs, fractions=fractions, seed=seed, group_by=group_by)
        if notes is not None:
            pct = "/".join(f"{100 * float(f):g}" for f in fractions)
            ignored = " (the `split` column is ignored: data.official_split is off)" if (
                "split" in pairs.columns and not own_split) else ""
            notes.info("split", f"split: random {_by(group_by)}, seed {seed}, {pct}{ignored} ({_sizes(splits)})")
    return splits


def kfold_by_query(
    pairs: pd.DataFrame, k: int, seed: int = 0, *, group_by: str = "query", dev_fraction: float = 0.0
) -> list[dict[str, pd.DataFrame]]:
    """``k`` cross-validation folds grouped by query: each query's rows are in the test split of exactly one fold.

    Returns one ``{"train", "dev", "test"}`` dict of pair frames per fold (the shape :func:`split_by_query`
    returns, so a fold can stand in for a dataset's splits). The distinct ``group_by`` values are sorted, shuffled
    with ``numpy.random.default_rng(seed)`` and cut into ``k`` parts of sizes differing by at most one
    (``numpy.array_split``); fold ``f`` tests on part ``f``. With ``dev_fraction`` > 0, each fold's dev split is
    ``max(1, round(dev_fraction * n))`` of its ``n`` remaining groups, drawn with
    ``numpy.random.default_rng([seed, f])``; the rest is train. Within a split, rows keep their original order;
    indexes are reset. (The seeding is the CrowdFlower benchmark's, whose recorded folds it reproduces.)

    Raises:
        DataError: ``k`` below 2 or above the number of groups, ``dev_fraction`` outside [0, 1), no ``query``
            or ``group_by`` column, or a query with several ``group_by`` values.
    """
    if "query" not in pairs.columns:
        raise DataError(f"pairs have no 'query' column; found {list(pairs.columns)}", field="query")
    if group_by not in pairs.columns:
        raise DataError(f"cannot fold by {group_by!r}: no such column; found {list(pairs.columns)}", field=group_by)
    if not 0.0 <= float(dev_fraction) < 1.0:
        raise DataError(f"dev_fraction must be in [0, 1); got {dev_fraction}")
    keys = pairs[group_by].astype(str)
    per_query = keys.groupby(pairs["query"].astype(str)).nunique()
    if (per_query > 1).any():
        raise DataError(
            f"query {per_query[per_query > 1].index[0]!r} has several {group_by!r} values: cannot fold by "
            f"{group_by!r}",
            field=group_by,
        )
    groups = np.array(sorted(pd.unique(keys)), dtype=object)
    if not 2 <= int(k) <= len(groups):
        raise DataError(f"k must be between 2 and the number of distinct {group_by!r} values ({len(groups)}); got {k}")
    parts = np.array_split(groups[np.random.default_rng(seed).permutation(len(groups))], int(k))
    folds = []
    for f in range(int(k)):
        rest = np.concatenate([p for i, p in enumerate(parts) if i != f])
        rest = rest[np.random.default_rng([seed, f]).permutation(len(rest))]
        n_dev = max(1, int(round(dev_fraction * len(rest)))) if dev_fraction > 0 else 0
        assign = {g: "test" for g in parts[f]}
        assign.update({g: "dev" for g in rest[:n_dev]})
        assign.update({g: "train" for g in rest[n_dev:]})
        which = keys.map(assign).to_numpy()
        folds.append({name: pairs[which == name].reset_index(drop=True) for name in SPLIT_NAMES})
    return folds
