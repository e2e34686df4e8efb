"""``esci`` -- Amazon Shopping Queries Dataset: ``shopping_queries_dataset_examples.parquet`` (``example_id``,
``query``, ``query_id``, ``product_id``, ``product_locale``, ``esci_label``, ``small_version``,
``large_version``, ``split``) and ``shopping_queries_dataset_products.parquet`` beside it (``product_id``,
``product_title``, ``product_description``, ``product_bullet_point``, ``product_brand``, ``product_color``,
``product_locale``). Rows are kept where ``product_locale == locale`` and ``small_version == 1`` (``version=
"small"``) or ``large_version == 1`` (``"large"``). Product ids are only unique within a locale, so products are
filtered to the locale before they are matched; the catalogue holds only the products the kept examples use.

=========================  ===============================================================================
catalog ``title``          ``product_title`` (a product without one: DataError naming it, or skipped)
catalog ``description``    ``product_description`` (HTML in places, kept as is)
catalog ``bullet_points``  ``product_bullet_point``
catalog ``brand``          ``product_brand``
catalog ``color``          ``product_color``
catalog ``locale``         ``product_locale``
catalog ``product_type``   ``"unknown"`` (the set has no categories)
pairs ``label``            ``esci_label``; gains ``E=1, S=0.1, C=0.01, I=0`` (``esci_gains`` overrides),
                           ``positive = E``
pairs extras               ``example_id``, ``query_id``, ``split`` (official ``train``/``test``; honoured by
                           :func:`~querylife.data.splits.choose_splits`)
=========================  ===============================================================================
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from ..errors import BadRows, DataError, UnknownLabelError
from ..labels import LABEL_SCHEMES, LabelScheme, make_label_scheme
from ..readers import text_column
from .common import (
    Rows,
    catalog_frame,
    file_columns,
    finish_pairs,
    listing,
    mark_labels,
    parquet_columns,
    queries,
    read_parquet,
    wrong_format,
)

__all__ = ["ESCI_EXAMPLES_FILE", "ESCI_EXAMPLE_COLUMNS", "ESCI_PRODUCTS_FILE", "esci_dir", "load_esci"]


ESCI_EXAMPLES_FILE = "shopping_queries_dataset_examples.parquet"
ESCI_PRODUCTS_FILE = "shopping_queries_dataset_products.parquet"
ESCI_EXAMPLE_COLUMNS = ("query", "product_id", "product_locale", "esci_label")
ESCI_PRODUCT_COLUMNS = ("product_id", "product_title", "product_locale")
# products parquet column -> catalogue column
ESCI_PRODUCT_TEXT = {
    "product_description": "description",
    "product_bullet_point": "bullet_points",
    "product_brand": "brand",
    "product_color": "color",
}
ESCI_VERSIONS = {"small": "small_version", "large": "large_version"}
# The official release keeps its files in this subfolder; accept the repository root as well.
ESCI_SUBDIR = "shopping_queries_dataset"


def esci_dir(d: Path) -> Path | None:
    for cand in (d, d / ESCI_SUBDIR):
        if (cand / ESCI_EXAMPLES_FILE).is_file():
            return cand
    return None


def _esci_files(p: Path) -> tuple[Path, Path]:
    if p.is_dir():
        d = esci_dir(p)
        if d is None:
            raise DataError(
                f"not an esci directory: expected {ESCI_EXAMPLES_FILE} and {ESCI_PRODUCTS_FILE} (directly or in "
                f"{ESCI_SUBDIR}/); found {listing(p)}",
                file=str(p),
            )
        examples = d / ESCI_EXAMPLES_FILE
    elif p.name.lower() == ESCI_PRODUCTS_FILE:
        examples = p.parent / ESCI_EXAMPLES_FILE
    else:
        examples = p
    if examples.suffix.lower() not in (".parquet", ".pq"):
        # A CSV given as esci: say which columns were expected rather than "cannot read Parquet".
        raise wrong_format(examples, "esci", ESCI_EXAMPLE_COLUMNS, file_columns(examples) or [], "examples file")
    products = examples.parent / ESCI_PRODUCTS_FILE
    if not products.is_file():
        raise DataError(f"the esci products file {ESCI_PRODUCTS_FILE} must lie beside the examples file "
                        f"{examples.name}; not found", file=str(products))
    return examples, products


def _esci_scheme(esci_gains: Mapping[str, float] | None) -> LabelScheme:
    base = LABEL_SCHEMES["esci"]
    if not esci_gains:
        return base
    for k in esci_gains:
        try:
            base.canonical(k)
        except UnknownLabelError:
            # make_label_scheme would add an unknown key as a new label: a typo would go unnoticed.
            raise DataError(f"esci_gains: unknown label {k!r}; use E, S, C, I (or exact, substitute, "
                            "complement, irrelevant)") from None
    return make_label_scheme("esci", gains=esci_gains)


def load_esci(
    path: Path, *, locale: str, version: str, esci_gains: Mapping[str, float] | None, skip_bad: bool,
    report: BadRows | None,
) -> tuple[pd.DataFrame, pd.DataFrame, LabelScheme, dict[str, Any]]:
    examples_file, products_file = _esci_files(path)
    ver = str(version).lower()
    if ver not in ESCI_VERSIONS:
        raise DataError(f"unknown esci version {version!r}; use one of {', '.join(ESCI_VERSIONS)}")
    flag = ESCI_VERSIONS[ver]
    scheme = _esci_scheme(esci_gains)
    loc = str(locale).strip().lower()

    wanted = ("example_id", "query", "query_id", "product_id", "product_locale", "esci_label", flag, "split")
    ex = read_parquet(examples_file, "esci", (*ESCI_EXAMPLE_COLUMNS, flag), "examples file", columns=wanted)
    ex_locale = text_column(ex["product_locale"]).str.lower()
    if not (ex_locale == loc).any():
        raise DataError(f"no examples for locale {locale!r}; locales found: {sorted(set(ex_locale))}",
                        file=str(examples_file), field="product_locale")
    # Row numbers in messages stay the file's own: filter by position, not by re-reading.
    sel = np.flatnonzero(((ex_locale == loc) & (ex[flag].fillna(0).astype(int) == 1)).to_numpy())
    ex = ex.iloc[sel]
    if report is not None:
        report.n_rows += len(ex)

    query = queries(ex["query"])
    pid = text_column(ex["product_id"])
    label = text_column(ex["esci_label"])
    ref_ids = sorted(set(pid) - {""})

    # Products: only this locale's (ids repeat across locales) and only those the examples use.
    prod_cols = ("product_id", "product_title", "product_locale", *ESCI_PRODUCT_TEXT)
    found = parquet_columns(products_file)
    loc_values = {loc, loc.upper()}
    prod = read_parquet(
        products_file, "esci", ESCI_PRODUCT_COLUMNS, "products file", columns=prod_cols,
        filters=[("product_locale", "in", sorted(loc_values)), ("product_id", "in", ref_ids)] if ref_ids else None,
    )
    if not ref_ids:
        prod = prod.iloc[0:0]
    if report is not None:
        report.n_rows += len(prod)
    p_id = text_column(prod["product_id"])
    p_title = text_column(prod["product_title"])
    prows = Rows(products_file, len(prod), skip_bad, report, by_row=False)
    prows.mark_mask((p_id == "").to_numpy(), "empty product_id", "product_id", "product_id is empty")
    prows.mark_mask((p_title == "").to_numpy(), "empty title", "product_title",
                    lambda r: f"product_id {p_id.iloc[r]!r} (locale {loc}) has no product_title")
    dup = p_id.duplicated(keep="first").to_numpy() & (p_id != "").to_numpy()
    prows.mark_mask(dup, "duplicate product_id", "product_id",
                    lambda r: f"duplicate product_id {p_id.iloc[r]!r} in locale {loc}")
    pkeep = prows.finish()
    untitled = set(p_id[~pkeep & (p_title == "").to_numpy()])
    known = set(p_id[pkeep])

    rows = Rows(examples_file, len(ex), skip_bad, report, row_numbers=sel)
    rows.mark_mask((query == "").to_numpy(), "empty query", "query", "query is empty or missing")
    rows.mark_mask((pid == "").to_numpy(), "empty product_id", "product_id", "product_id is empty")
    canon = mark_labels(rows, label, scheme, "esci_label")
    rows.mark([i for i, v in enumerate(pid) if v in untitled], "product without title", "product_id",
              lambda r: f"product_id {pid.iloc[r]!r} has no title in {products_file.name}")
    rows.mark([i for i, v in enumerate(pid) if v and v not in known and v not in untitled], "unknown product",
              "product_id", lambda r: f"product_id {pid.iloc[r]!r} (locale {loc}) is not in {products_file.name}")
    keep = rows.finish()

    pairs = pd.DataFrame({"query": query, "product_id": pid, "label": label})
    for col in ("example_id", "query_id"):
        if col in ex.columns:
            pairs[col] = text_column(ex[col])
    if "split" in ex.columns:
        pairs["split"] = text_column(ex["split"]).str.lower()
    pairs = pairs[keep].reset_index(drop=True)
    pairs, merged = finish_pairs(pairs, canon, scheme, examples_file, report)

    # Catalogue in the order the examples first use the products (stable across runs).
    prod = prod[pkeep].assign(_pid=p_id[pkeep]).set_index("_pid")
    used = list(dict.fromkeys(pairs["product_id"]))
    prod = prod.loc[used] if used else prod.iloc[0:0]
    extras: dict[str, Any] = {}
    for src, dst in ESCI_PRODUCT_TEXT.items():
        extras[dst] = text_column(prod[src]) if src in prod.columns else [""] * len(prod)
    extras["locale"] = [loc] * len(prod)
    catalog = catalog_frame(used, text_column(prod["product_title"]), "unknown", extras)
    source = {
        "examples": str(examples_file), "products": str(products_file), "locale": loc, "version": ver,
        "esci_gains": dict(scheme.gains), "merged_duplicates": merged,
        "missing_product_columns": [c for c in ESCI_PRODUCT_TEXT if c not in found],
    }
    return catalog, pairs, scheme, source
