"""``crowdflower`` -- CrowdFlower "Search Results Relevance" (Kaggle 2015), one CSV, every field quoted,
descriptions may span lines. Columns: ``id``, ``query``, ``product_title``, ``product_description``,
``median_relevance`` (1-4), ``relevance_variance``.

=======================  ================================================================================
catalog ``product_id``   ``"cf-"`` + first 12 hex digits of the SHA-1 of ``lower(collapse(product_title)) +
                         "\\n" + lower(collapse(product_description))`` (:func:`crowdflower_product_id`): the
                         file has no product ids; the same product listed under two queries gets one id
catalog ``title``        ``product_title``
catalog ``description``  ``product_description``
catalog ``product_type`` ``"unknown"`` (the set has no categories)
pairs ``label``          ``median_relevance``; graded scheme, ``gain = grade - 1`` (0-3),
                         ``positive = grade >= relevant_min`` (default 3, "relevant")
pairs ``example_id``     ``id``
pairs extras             ``relevance_variance`` (float)
=======================  ================================================================================
"""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from ..errors import BadRows, DataError
from ..labels import LabelScheme, make_graded_scheme
from ..readers import collapse_whitespace, text_column
from .common import (
    Rows,
    catalog_frame,
    csv_columns,
    file_columns,
    finish_pairs,
    listing,
    mark_labels,
    queries,
    read_csv,
    wrong_format,
)

__all__ = ["CROWDFLOWER_COLUMNS", "crowdflower_csvs", "crowdflower_product_id", "load_crowdflower"]


CROWDFLOWER_COLUMNS = ("query", "product_title", "product_description", "median_relevance")
CROWDFLOWER_GRADES = (1, 2, 3, 4)
CROWDFLOWER_RELEVANT_MIN = 3


def crowdflower_product_id(title: str, description: str) -> str:
    """Stable product id for a CrowdFlower row, which has none: ``cf-`` + 12 hex digits of a SHA-1.

    The key is the lower-cased, whitespace-collapsed title and description, so the same listing under two
    queries (or with different spacing / case) gets one id; the newline between them cannot occur inside either
    after collapsing, so ("a b", "") and ("a", "b") stay apart.
    """
    key = collapse_whitespace(str(title)).lower() + "\n" + collapse_whitespace(str(description)).lower()
    return "cf-" + hashlib.sha1(key.encode("utf-8")).hexdigest()[:12]


def crowdflower_csvs(d: Path) -> list[Path]:
    """CSV files in ``d`` whose header has the CrowdFlower columns (the Kaggle test.csv has no labels)."""
    hits = []
    for p in sorted(d.glob("*.csv")):
        try:
            cols = csv_columns(p)
        except DataError:
            continue
        if all(c in cols for c in CROWDFLOWER_COLUMNS):
            hits.append(p)
    return hits


def _crowdflower_file(p: Path) -> Path:
    if p.is_dir():
        hits = crowdflower_csvs(p)
        if len(hits) != 1:
            raise DataError(
                f"expected one CrowdFlower CSV (columns {list(CROWDFLOWER_COLUMNS)}) in the directory; found "
                + (f"several: {[h.name for h in hits]}" if hits else f"none among {listing(p)}"),
                file=str(p),
            )
        return hits[0]
    if p.suffix.lower() in (".parquet", ".pq", ".jsonl", ".ndjson", ".json"):
        # Not a CSV at all: name the columns it has rather than fail to decode it as text.
        raise wrong_format(p, "crowdflower", CROWDFLOWER_COLUMNS, file_columns(p) or [], "CSV")
    return p


def load_crowdflower(
    path: Path, *, relevant_min: int | None, skip_bad: bool, report: BadRows | None
) -> tuple[pd.DataFrame, pd.DataFrame, LabelScheme, dict[str, Any]]:
    file = _crowdflower_file(path)
    raw = read_csv(file, "crowdflower", CROWDFLOWER_COLUMNS, "CSV")
    if report is not None:
        report.n_rows += len(raw)
    thr = CROWDFLOWER_RELEVANT_MIN if relevant_min is None else int(relevant_min)
    if not CROWDFLOWER_GRADES[0] <= thr <= CROWDFLOWER_GRADES[-1]:
        raise DataError(f"relevant_min must be a CrowdFlower grade {CROWDFLOWER_GRADES[0]}-"
                        f"{CROWDFLOWER_GRADES[-1]}; got {relevant_min}")
    scheme = make_graded_scheme(CROWDFLOWER_GRADES, thr)  # gain = grade - 1

    rows = Rows(file, len(raw), skip_bad, report)
    query = queries(raw["query"])
    title = text_column(raw["product_title"])
    desc = text_column(raw["product_description"])
    label = text_column(raw["median_relevance"])
    rows.mark_mask((query == "").to_numpy(), "empty query", "query", "query is empty or missing")
    rows.mark_mask((title == "").to_numpy(), "empty title", "product_title", "product_title is empty or missing")
    canon = mark_labels(rows, label, scheme, "median_relevance")
    keep = rows.finish()

    pid = pd.Series([crowdflower_product_id(t, d) for t, d in zip(title, desc, strict=True)], dtype=object)
    pairs = pd.DataFrame({"query": query, "product_id": pid, "label": label})
    if "id" in raw.columns:
        pairs["example_id"] = text_column(raw["id"])
    if "relevance_variance" in raw.columns:
        pairs["relevance_variance"] = pd.to_numeric(raw["relevance_variance"], errors="coerce").astype(float)
    pairs = pairs[keep].reset_index(drop=True)
    pairs, merged = finish_pairs(pairs, canon, scheme, file, report)

    # One catalogue row per derived id, with the title / description as first written.
    first = ~pid[keep].duplicated(keep="first")
    idx = np.flatnonzero(keep)[first.to_numpy()]
    catalog = catalog_frame(pid.iloc[idx], title.iloc[idx], "unknown", {"description": desc.iloc[idx]})
    source = {"file": str(file), "relevant_min": thr, "merged_duplicates": merged}
    return catalog, pairs, scheme, source
