"""``wands`` -- Wayfair ANnotation DataSet: a directory with ``query.csv`` (``query_id``, ``query``,
``query_class``), ``product.csv`` (``product_id``, ``product_name``, ``product_class``, ``category hierarchy``,
``product_description``, ``product_features``, ``rating_count``, ``average_rating``, ``review_count``) and
``label.csv`` (``id``, ``query_id``, ``product_id``, ``label``). The original release is tab-separated despite
the ``.csv`` extension, so the delimiter is sniffed from the header line. Every product of ``product.csv`` is in
the catalogue (unlabelled ones are still retrieval candidates).

=========================  ===============================================================================
catalog ``title``          ``product_name``
catalog ``product_type``   ``product_class``, lower-cased (empty: ``"unknown"``)
catalog ``category``       ``category hierarchy`` (``category_hierarchy`` also accepted)
catalog ``description``    ``product_description``
catalog ``features``       ``product_features`` as written (``key:value|key:value``)
catalog ``attributes``     ``product_features`` parsed into a JSON object ``{key: value}``
catalog extras             ``rating_count``, ``average_rating``, ``review_count`` (text)
pairs ``query``            ``query`` of ``query.csv`` for the label's ``query_id``
pairs ``label``            ``label``; exact_partial_irrelevant scheme: ``Exact=2, Partial=1, Irrelevant=0``,
                           ``positive = Exact``
pairs extras               ``example_id`` (``id``), ``query_id``, ``query_class``
=========================  ===============================================================================
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pandas as pd

from ..errors import BadRows, DataError
from ..labels import LABEL_SCHEMES, LabelScheme
from ..readers import text_column
from .common import Rows, catalog_frame, finish_pairs, listing, mark_labels, queries, read_csv

__all__ = ["WANDS_FILES", "load_wands", "wands_dir"]


WANDS_FILES = ("query.csv", "product.csv", "label.csv")
WANDS_QUERY_COLUMNS = ("query_id", "query")
WANDS_PRODUCT_COLUMNS = ("product_id", "product_name")
WANDS_LABEL_COLUMNS = ("query_id", "product_id", "label")
WANDS_SUBDIR = "dataset"  # the WANDS repository keeps the trio in dataset/


def wands_dir(d: Path) -> Path | None:
    for cand in (d, d / WANDS_SUBDIR):
        if all((cand / f).is_file() for f in WANDS_FILES):
            return cand
    return None


def _features_json(text: str) -> str | None:
    """``key:value|key:value`` -> JSON object text (None when there is nothing to parse)."""
    items: dict[str, str] = {}
    for part in text.split("|"):
        key, sep, value = part.partition(":")
        if sep and key.strip():
            items[key.strip()] = value.strip()
    return json.dumps(items, ensure_ascii=False) if items else None


def load_wands(
    path: Path, *, skip_bad: bool, report: BadRows | None
) -> tuple[pd.DataFrame, pd.DataFrame, LabelScheme, dict[str, Any]]:
    d = path if path.is_dir() else path.parent
    found = wands_dir(d)
    if found is None:
        raise DataError(f"not a wands directory: expected {list(WANDS_FILES)} (directly or in {WANDS_SUBDIR}/); "
                        f"found {listing(d)}", file=str(d))
    d = found
    qfile, pfile, lfile = (d / f for f in WANDS_FILES)
    qraw = read_csv(qfile, "wands", WANDS_QUERY_COLUMNS, "query file")
    praw = read_csv(pfile, "wands", WANDS_PRODUCT_COLUMNS, "product file")
    lraw = read_csv(lfile, "wands", WANDS_LABEL_COLUMNS, "label file")
    if report is not None:
        report.n_rows += len(qraw) + len(praw) + len(lraw)
    scheme = LABEL_SCHEMES["exact_partial_irrelevant"]

    # Queries
    q_id, q_text = text_column(qraw["query_id"]), queries(qraw["query"])
    qrows = Rows(qfile, len(qraw), skip_bad, report)
    qrows.mark_mask((q_id == "").to_numpy(), "empty query_id", "query_id", "query_id is empty")
    qrows.mark_mask((q_text == "").to_numpy(), "empty query", "query", "query is empty or missing")
    qrows.mark_mask(q_id.duplicated().to_numpy() & (q_id != "").to_numpy(), "duplicate query_id", "query_id",
                    lambda r: f"duplicate query_id {q_id.iloc[r]!r}")
    qkeep = qrows.finish()
    query_of = dict(zip(q_id[qkeep], q_text[qkeep], strict=True))
    qclass = text_column(qraw["query_class"]) if "query_class" in qraw.columns else None
    class_of = dict(zip(q_id[qkeep], qclass[qkeep], strict=True)) if qclass is not None else {}

    # Products
    p_id, p_name = text_column(praw["product_id"]), text_column(praw["product_name"])
    prows = Rows(pfile, len(praw), skip_bad, report)
    prows.mark_mask((p_id == "").to_numpy(), "empty product_id", "product_id", "product_id is empty")
    prows.mark_mask((p_name == "").to_numpy(), "empty title", "product_name",
                    lambda r: f"product_id {p_id.iloc[r]!r} has no product_name")
    prows.mark_mask(p_id.duplicated().to_numpy() & (p_id != "").to_numpy(), "duplicate product_id", "product_id",
                    lambda r: f"duplicate product_id {p_id.iloc[r]!r}")
    pkeep = prows.finish()
    untitled = set(p_id[~pkeep & (p_name == "").to_numpy()])
    known = set(p_id[pkeep])

    def col(*names: str) -> pd.Series:
        for n in names:
            if n in praw.columns:
                return text_column(praw[n])[pkeep]
        return pd.Series([""] * int(pkeep.sum()), dtype=object)

    ptype = col("product_class").str.lower()
    ptype = ptype.where(ptype != "", "unknown")
    features = col("product_features")
    extras: dict[str, Any] = {
        "category": col("category hierarchy", "category_hierarchy"),
        "description": col("product_description"),
        "features": features,
    }
    for c in ("rating_count", "average_rating", "review_count"):
        if c in praw.columns:
            extras[c] = col(c)
    catalog = catalog_frame(p_id[pkeep], p_name[pkeep], ptype, extras,
                             attributes=[_features_json(f) for f in features])

    # Labels
    l_qid, l_pid, label = text_column(lraw["query_id"]), text_column(lraw["product_id"]), text_column(lraw["label"])
    rows = Rows(lfile, len(lraw), skip_bad, report)
    rows.mark_mask((l_qid == "").to_numpy(), "empty query_id", "query_id", "query_id is empty")
    rows.mark_mask((l_pid == "").to_numpy(), "empty product_id", "product_id", "product_id is empty")
    canon = mark_labels(rows, label, scheme, "label")
    rows.mark([i for i, v in enumerate(l_qid) if v and v not in query_of], "unknown query", "query_id",
              lambda r: f"query_id {l_qid.iloc[r]!r} is not in {qfile.name}")
    rows.mark([i for i, v in enumerate(l_pid) if v in untitled], "product without title", "product_id",
              lambda r: f"product_id {l_pid.iloc[r]!r} has no product_name in {pfile.name}")
    rows.mark([i for i, v in enumerate(l_pid) if v and v not in known and v not in untitled], "unknown product",
              "product_id", lambda r: f"product_id {l_pid.iloc[r]!r} is not in {pfile.name}")
    keep = rows.finish()

    pairs = pd.DataFrame({"query": l_qid.map(query_of).astype(object), "product_id": l_pid, "label": label})
    if "id" in lraw.columns:
        pairs["example_id"] = text_column(lraw["id"])
    pairs["query_id"] = l_qid
    if class_of:
        pairs["query_class"] = l_qid.map(class_of).astype(object)
    pairs = pairs[keep].reset_index(drop=True)
    pairs, merged = finish_pairs(pairs, canon, scheme, lfile, report)
    source = {"query": str(qfile), "product": str(pfile), "label": str(lfile), "merged_duplicates": merged}
    return catalog, pairs, scheme, source
