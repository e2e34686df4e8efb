"""Readers for public product-search relevance data sets, each giving querylife's normalised catalogue and pairs.

:func:`load_format` reads one of the :data:`FORMATS` and returns a :class:`LoadedData` whose ``catalog`` and
``pairs`` have the same columns and normalisation as :func:`~querylife.data.readers.load_catalog` and
:func:`~querylife.data.readers.load_pairs`; :func:`to_dataset` turns it into a
:class:`~querylife.data.prepare.Dataset` without reading the files again. :func:`detect_format` tells the
formats apart by file names and columns. None of the public sets has images: ``image_path`` is always None and
:func:`to_dataset` gives every product a zero image with ``has_image`` False.

Common to every public format:

* ``catalog``: ``product_id``, ``title``, ``product_type``, ``image_path`` (None), ``attributes`` (JSON text or
  None), ``group_id`` (None), then extra text columns under fixed names (``description``, ``bullet_points``,
  ``brand``, ``color``, ``category``, ``features``) so that ``text_fields`` can add them to the title side.
  Missing extra text is ``""``.
* ``pairs``: ``query`` (stripped, runs of whitespace collapsed, case kept), ``product_id``, ``label`` (as
  written in the file, stripped), ``gain``, ``positive``, then extras (``example_id``, ``query_id``, ``split``...).
* Duplicate (query, product) judgements are merged into one pair, always (they are common in these sets: the
  same product listed twice for one query): copies with the same label are dropped (``duplicate pair``); when
  the copies disagree, the one with the *lowest* gain is kept (``conflicting duplicate``) so that a product any
  judge called less relevant is not trained on as a sure positive. Both are tallied in ``report`` when one is
  given, and counted in ``LoadedData.source["merged_duplicates"]``.
* Bad rows (empty query or title, unknown label, a pair whose product is not in the products file) raise
  :class:`~querylife.data.schemas.DataError` naming the file, row (or product id) and field, or, with
  ``skip_bad=True``, are dropped and tallied in ``report`` (a :class:`~querylife.data.schemas.BadRows`).

``crowdflower`` -- CrowdFlower "Search Results Relevance" (Kaggle 2015), one CSV, every field quoted,
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

``esci`` -- Amazon Shopping Queries Dataset: ``shopping_queries_dataset_examples.parquet`` (``example_id``,
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
                           :func:`to_dataset`)
=========================  ===============================================================================

``wands`` -- Wayfair ANnotation DataSet: a directory with ``query.csv`` (``query_id``, ``query``,
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
pairs ``label``            ``label``; epi scheme: ``Exact=2, Partial=1, Irrelevant=0``, ``positive = Exact``
pairs extras               ``example_id`` (``id``), ``query_id``, ``query_class``
=========================  ===============================================================================

``querylife`` -- a directory with ``catalog.*`` and ``pairs.*`` (Parquet, CSV/TSV or JSONL), read with
:func:`~querylife.data.readers.load_catalog` and :func:`~querylife.data.readers.load_pairs` (their checks apply).
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd

from .readers import load_catalog, load_pairs
from .schemas import (
    LABEL_SCHEMES,
    BadRows,
    DataError,
    LabelScheme,
    UnknownLabelError,
    label_to_str,
    make_graded_scheme,
    make_label_scheme,
)
from .splits import split_by_query

if TYPE_CHECKING:  # prepare imports torch: keep it out of loading
    from .prepare import Dataset

__all__ = [
    "FORMATS",
    "LoadedData",
    "detect_format",
    "load_format",
    "to_dataset",
    "crowdflower_product_id",
    "CROWDFLOWER_COLUMNS",
    "ESCI_EXAMPLES_FILE",
    "ESCI_PRODUCTS_FILE",
    "WANDS_FILES",
]

log = logging.getLogger(__name__)

FORMATS = ("querylife", "crowdflower", "esci", "wands")

CROWDFLOWER_COLUMNS = ("query", "product_title", "product_description", "median_relevance")
CROWDFLOWER_GRADES = (1, 2, 3, 4)
CROWDFLOWER_RELEVANT_MIN = 3

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

WANDS_FILES = ("query.csv", "product.csv", "label.csv")
WANDS_QUERY_COLUMNS = ("query_id", "query")
WANDS_PRODUCT_COLUMNS = ("product_id", "product_name")
WANDS_LABEL_COLUMNS = ("query_id", "product_id", "label")
WANDS_SUBDIR = "dataset"  # the WANDS repository keeps the trio in dataset/

_QUERYLIFE_SUFFIXES = (".parquet", ".pq", ".csv", ".tsv", ".jsonl", ".ndjson", ".json")
_SPLIT_ALIASES = {
    "train": "train", "training": "train",
    "dev": "dev", "valid": "dev", "validation": "dev", "val": "dev",
    "test": "test",
}
_SPLIT_RANK = {"train": 0, "dev": 1, "test": 2}


@dataclass
class LoadedData:
    """A data set in querylife's normalised form, as :func:`load_format` returns it.

    Attributes:
        catalog: the same columns as :func:`~querylife.data.readers.load_catalog` gives (``product_id``,
            ``title``, ``product_type``, ``image_path``, ``attributes``, ``group_id``) plus extra text columns.
        pairs: the same columns as :func:`~querylife.data.readers.load_pairs` gives (``query``,
            ``product_id``, ``label``, ``gain``, ``positive``) plus extras such as ``split`` and ``query_id``.
        label_scheme: how labels map to gains and positives.
        format: one of :data:`FORMATS`.
        source: the paths and options used (JSON-ready), plus ``merged_duplicates``.
        bad_rows: the tally of skipped rows (the ``report`` passed in, or one made for ``skip_bad``).
    """

    catalog: pd.DataFrame
    pairs: pd.DataFrame
    label_scheme: LabelScheme
    format: str
    source: dict[str, Any]
    bad_rows: BadRows | None = None


# ----------------------------------------------------------------------------------------------------------
# Small helpers


def _collapse(text: str) -> str:
    return " ".join(text.split())


def _texts(s: pd.Series) -> pd.Series:
    """Column as stripped Python strings (object dtype), ``""`` for missing; integer ids stay exact."""
    if pd.api.types.is_string_dtype(s):
        return s.fillna("").astype(str).str.strip().astype(object)
    return pd.Series([label_to_str(v) for v in s], index=s.index, dtype=object)


def _queries(s: pd.Series) -> pd.Series:
    """Query text normalised like :func:`~querylife.data.readers.load_pairs` does (whitespace collapsed)."""
    return pd.Series([_collapse(t) for t in _texts(s)], index=s.index, dtype=object)


def crowdflower_product_id(title: str, description: str) -> str:
    """Stable product id for a CrowdFlower row, which has none: ``cf-`` + 12 hex digits of a SHA-1.

    The key is the lower-cased, whitespace-collapsed title and description, so the same listing under two
    queries (or with different spacing / case) gets one id; the newline between them cannot occur inside either
    after collapsing, so ("a b", "") and ("a", "b") stay apart.
    """
    key = _collapse(str(title)).lower() + "\n" + _collapse(str(description)).lower()
    return "cf-" + hashlib.sha1(key.encode("utf-8")).hexdigest()[:12]


def _sniff_delimiter(path: Path) -> str:
    """Tab or comma, from the header line: WANDS is tab-separated although its files end in ``.csv``."""
    try:
        with open(path, encoding="utf-8-sig", newline="") as f:
            header = f.readline()
    except UnicodeDecodeError as e:
        raise DataError(f"not UTF-8 text: {e}", file=str(path)) from None
    except OSError as e:
        raise DataError(f"cannot read: {e.strerror or e}", file=str(path)) from None
    return "\t" if header.count("\t") > header.count(",") else ","


def _csv_columns(path: Path) -> list[str]:
    """Header of a CSV/TSV file (delimiter sniffed), without reading the rows."""
    sep = _sniff_delimiter(path)
    try:
        head = pd.read_csv(path, sep=sep, nrows=0, encoding="utf-8-sig")
    except Exception as e:  # pandas raises several types for unparseable text; all mean "not a table"
        raise DataError(f"cannot read the header: {type(e).__name__}: {e}", file=str(path)) from None
    return [str(c).strip() for c in head.columns]


def _parquet_columns(path: Path) -> list[str]:
    import pyarrow.parquet as pq

    try:
        return list(pq.read_schema(path).names)
    except Exception as e:  # pyarrow raises several types for corrupt files; all mean "unreadable"
        raise DataError(f"cannot read the Parquet schema: {type(e).__name__}: {e}", file=str(path)) from None


def _file_columns(path: Path) -> list[str] | None:
    """Column names of a table file, or None when the extension is not one we can peek into."""
    suffix = path.suffix.lower()
    if suffix in (".parquet", ".pq"):
        return _parquet_columns(path)
    if suffix in (".csv", ".tsv", ".txt"):
        return _csv_columns(path)
    if suffix in (".jsonl", ".ndjson", ".json"):
        try:
            with open(path, encoding="utf-8") as f:
                first = f.readline()
            rec = json.loads(first)
        except (OSError, UnicodeDecodeError, json.JSONDecodeError):
            return None
        return [str(k) for k in rec] if isinstance(rec, dict) else None
    return None


def _wrong_format(path: Path, fmt: str, expected: Iterable[str], found: Iterable[str], what: str = "") -> DataError:
    """The error for a file that is not in the format asked for: names the file, expected and found columns."""
    exp = list(expected)
    missing = [c for c in exp if c not in set(found)]
    return DataError(
        f"not in the {fmt} format ({what or 'file'}): missing column(s) {missing}; expected columns {exp}, "
        f"found columns {list(found)}",
        file=str(path),
    )


def _read_csv(path: Path, fmt: str, required: Iterable[str], what: str) -> pd.DataFrame:
    """Whole CSV/TSV as text (ids keep leading zeros; empty cells are ``""``), required columns checked."""
    if not path.is_file():
        raise DataError("file not found", file=str(path))
    sep = _sniff_delimiter(path)
    try:
        df = pd.read_csv(path, sep=sep, dtype=str, keep_default_na=False, encoding="utf-8-sig")
    except UnicodeDecodeError as e:
        raise DataError(f"not UTF-8 text: {e}", file=str(path)) from None
    except Exception as e:  # pandas raises several types for unparseable text; all mean "unreadable"
        raise DataError(f"cannot read {fmt} {what}: {type(e).__name__}: {e}", file=str(path)) from None
    df.columns = [str(c).strip() for c in df.columns]
    missing = [c for c in required if c not in df.columns]
    if missing:
        raise _wrong_format(path, fmt, required, df.columns, what)
    return df.reset_index(drop=True)


def _read_parquet(
    path: Path, fmt: str, required: Iterable[str], what: str, *, columns: Iterable[str] | None = None,
    filters: list | None = None,
) -> pd.DataFrame:
    """Parquet file (only ``columns`` of it, rows matching ``filters``), required columns checked first."""
    if not path.is_file():
        raise DataError("file not found", file=str(path))
    found = _parquet_columns(path)
    missing = [c for c in required if c not in found]
    if missing:
        raise _wrong_format(path, fmt, required, found, what)
    cols = None if columns is None else [c for c in columns if c in found]
    try:
        df = pd.read_parquet(path, columns=cols, filters=filters)
    except Exception as e:  # pyarrow raises several types for corrupt files; all mean "unreadable"
        raise DataError(f"cannot read {fmt} {what}: {type(e).__name__}: {e}", file=str(path)) from None
    return df.reset_index(drop=True)


class _Rows:
    """Bad rows of one table: raises for the first (in row order) unless skipping, else tallies them.

    ``row_numbers``: the file's 0-based row of each position when the table is a filtered part of the file
    (messages then give the file's row); ``by_row`` False: the rows have no meaning in the file (a filtered
    Parquet read), so messages name ids instead of rows.
    """

    def __init__(
        self, file: Path, n: int, skip_bad: bool, report: BadRows | None, *, by_row: bool = True,
        row_numbers: np.ndarray | None = None,
    ) -> None:
        self.file = str(file)
        self.n = n
        self.skip_bad = skip_bad
        self.report = report
        self.by_row = by_row
        self.row_numbers = row_numbers
        self.bad: dict[int, tuple[str, str, str]] = {}  # position -> (reason, field, message); first reason wins

    def mark(self, rows: Iterable[int], reason: str, field: str, message: str | Callable[[int], str]) -> None:
        for r in rows:
            r = int(r)
            if r not in self.bad:
                self.bad[r] = (reason, field, message(r) if callable(message) else message)

    def mark_mask(self, mask: Any, reason: str, field: str, message: str | Callable[[int], str]) -> None:
        self.mark(np.flatnonzero(np.asarray(mask, dtype=bool)), reason, field, message)

    def _row(self, r: int) -> int | None:
        if not self.by_row:
            return None
        return (int(self.row_numbers[r]) if self.row_numbers is not None else r) + 1

    def finish(self) -> np.ndarray:
        """Keep-mask over the rows; raises for the first bad row unless ``skip_bad``."""
        keep = np.ones(self.n, dtype=bool)
        if self.bad and not self.skip_bad:
            r = min(self.bad)
            reason, fld, message = self.bad[r]
            cls = UnknownLabelError if reason == "unknown label" else DataError
            raise cls(message, file=self.file, row=self._row(r), field=fld)
        for r in sorted(self.bad):
            reason, fld, message = self.bad[r]
            keep[r] = False
            if self.report is not None:
                self.report.add(reason, file=self.file, row=self._row(r), field=fld, message=message)
        return keep


def _mark_labels(rows: _Rows, labels: pd.Series, scheme: LabelScheme, field: str) -> dict[str, str | None]:
    """Mark empty and unknown labels (``field``: the file's label column); returns text -> canonical label."""
    canon: dict[str, str | None] = {}
    for v in pd.unique(labels):
        try:
            canon[v] = scheme.canonical(v) if v else None
        except UnknownLabelError:
            canon[v] = None
    rows.mark_mask((labels == "").to_numpy(), "empty label", field, f"{field} is empty or missing")
    allowed = ", ".join(scheme.labels)
    bad = [i for i, v in enumerate(labels) if v and canon[v] is None]
    rows.mark(bad, "unknown label", field,
              lambda r: f"unknown label {labels.iloc[r]!r}; allowed ({scheme.name}): {allowed}")
    return canon


def _finish_pairs(
    pairs: pd.DataFrame, canon: Mapping[str, str | None], scheme: LabelScheme, file: Path, report: BadRows | None
) -> tuple[pd.DataFrame, int]:
    """Add ``gain`` / ``positive``, put the columns in load_pairs order and merge duplicate judgements.

    Returns the pairs and the number of rows merged away.
    """
    c = pairs["label"].map(canon)
    pairs = pairs.assign(gain=c.map(scheme.gains).astype(float), positive=c.isin(scheme.positive).astype(bool))
    front = ["query", "product_id", "label", "gain", "positive"]
    pairs = pairs[front + [col for col in pairs.columns if col not in front]]

    # Lowest gain first within each (query, product), file order among equals: keep="first" keeps that one.
    order = np.arange(len(pairs))
    ranked = pairs.assign(_canon=c.to_numpy(), _order=order).sort_values(
        ["query", "product_id", "gain", "_order"], kind="stable"
    )
    dropped = ranked.duplicated(["query", "product_id"], keep="first")
    n_dropped = int(dropped.sum())
    if n_dropped:
        n_labels = ranked.groupby(["query", "product_id"], sort=False)["_canon"].transform("nunique")
        if report is not None:
            for _, row in ranked[dropped.to_numpy()].iterrows():
                conflicting = n_labels.loc[row.name] > 1
                reason = "conflicting duplicate" if conflicting else "duplicate pair"
                how = "kept the lowest-gain label" if conflicting else "same label"
                report.add(reason, file=str(file), field="label",
                           message=f"query {row['query']!r}, product_id {row['product_id']!r}: merged ({how})")
        keep = np.ones(len(pairs), dtype=bool)
        keep[ranked["_order"].to_numpy()[dropped.to_numpy()]] = False
        pairs = pairs[keep]
    return pairs.reset_index(drop=True), n_dropped


def _catalog_frame(
    product_id: Iterable[str], title: Iterable[str], product_type: Iterable[str] | str,
    extras: Mapping[str, Iterable[Any]], attributes: Iterable[str | None] | None = None,
) -> pd.DataFrame:
    """A catalogue with load_catalog's leading columns (image_path / group_id None), then ``extras``."""
    ids = list(product_id)
    n = len(ids)
    types = [product_type] * n if isinstance(product_type, str) else list(product_type)
    cols: dict[str, Any] = {
        "product_id": ids,
        "title": list(title),
        "product_type": types,
        "image_path": [None] * n,  # these sets have no images
        "attributes": [None] * n if attributes is None else list(attributes),
        "group_id": [None] * n,
    }
    cols.update({k: list(v) for k, v in extras.items()})
    # dtype=object throughout, like load_catalog: pandas 3 would otherwise turn None into NaN.
    return pd.DataFrame({k: pd.Series(v, dtype=object) for k, v in cols.items()})


# ----------------------------------------------------------------------------------------------------------
# Detection


def _querylife_files(d: Path) -> tuple[Path | None, Path | None]:
    def one(stem: str) -> Path | None:
        hits = sorted(
            p for p in d.glob(stem + ".*")
            if p.is_file() and any(p.name.lower().removesuffix(".gz").endswith(s) for s in _QUERYLIFE_SUFFIXES)
        )
        if len(hits) > 1:
            raise DataError(f"several {stem} files: {[h.name for h in hits]}; keep one", file=str(d))
        return hits[0] if hits else None

    return one("catalog"), one("pairs")


def _crowdflower_csvs(d: Path) -> list[Path]:
    """CSV files in ``d`` whose header has the CrowdFlower columns (the Kaggle test.csv has no labels)."""
    hits = []
    for p in sorted(d.glob("*.csv")):
        try:
            cols = _csv_columns(p)
        except DataError:
            continue
        if all(c in cols for c in CROWDFLOWER_COLUMNS):
            hits.append(p)
    return hits


def _esci_dir(d: Path) -> Path | None:
    for cand in (d, d / ESCI_SUBDIR):
        if (cand / ESCI_EXAMPLES_FILE).is_file():
            return cand
    return None


def _wands_dir(d: Path) -> Path | None:
    for cand in (d, d / WANDS_SUBDIR):
        if all((cand / f).is_file() for f in WANDS_FILES):
            return cand
    return None


def _listing(d: Path, limit: int = 12) -> str:
    names = sorted(p.name + ("/" if p.is_dir() else "") for p in d.iterdir())
    return str(names[:limit]) + (f" and {len(names) - limit} more" if len(names) > limit else "")


def detect_format(path: str | os.PathLike) -> str:
    """Which of :data:`FORMATS` ``path`` holds, from file names and columns (no data rows are read).

    * ``esci``: a directory holding ``shopping_queries_dataset_examples.parquet`` (directly or in
      ``shopping_queries_dataset/``), or that file, or a Parquet file with the examples columns;
    * ``wands``: a directory holding ``query.csv``, ``product.csv`` and ``label.csv`` (directly or in
      ``dataset/``), or one of those files with the other two beside it;
    * ``crowdflower``: a CSV with the columns ``query``, ``product_title``, ``product_description`` and
      ``median_relevance``, or a directory holding exactly one such CSV;
    * ``querylife``: a directory holding ``catalog.*`` and ``pairs.*``.

    Raises:
        DataError: naming the path and what was found (files of a directory, columns of a file) when it looks
            like none of them.
    """
    p = Path(path).expanduser()
    if not p.exists():
        raise DataError("no such file or directory", file=str(p))
    if p.is_dir():
        if _esci_dir(p):
            return "esci"
        if _wands_dir(p):
            return "wands"
        catalog, pairs = _querylife_files(p)
        if catalog and pairs:
            return "querylife"
        cf = _crowdflower_csvs(p)
        if len(cf) == 1:
            return "crowdflower"
        hint = f"; several CrowdFlower CSVs {[c.name for c in cf]}: pass one of them" if cf else ""
        raise DataError(
            f"directory is in none of the known formats ({', '.join(FORMATS)}): expected {ESCI_EXAMPLES_FILE} "
            f"(esci), {'/'.join(WANDS_FILES)} (wands), one CrowdFlower CSV, or catalog.* and pairs.* (querylife); "
            f"found {_listing(p)}{hint}",
            file=str(p),
        )
    name = p.name.lower()
    if name in (ESCI_EXAMPLES_FILE, ESCI_PRODUCTS_FILE):
        return "esci"
    if name in WANDS_FILES and _wands_dir(p.parent):
        return "wands"
    cols = _file_columns(p)
    if cols is None:
        raise DataError(
            f"cannot tell the data format of a {p.suffix or 'extension-less'} file; pass a directory or a "
            f".csv / .parquet file of one of the formats {', '.join(FORMATS)}",
            file=str(p),
        )
    if all(c in cols for c in CROWDFLOWER_COLUMNS):
        return "crowdflower"
    if all(c in cols for c in ESCI_EXAMPLE_COLUMNS):
        return "esci"
    if all(c in cols for c in ("query", "product_id", "label")) or all(
        c in cols for c in ("product_id", "title", "product_type")
    ):
        raise DataError(
            f"looks like a querylife {'pairs' if 'label' in cols else 'catalogue'} table (columns {cols}); "
            "pass the directory holding catalog.* and pairs.*, or use --catalog/--pairs",
            file=str(p),
        )
    raise DataError(
        f"file is in none of the known formats ({', '.join(FORMATS)}); found columns {cols}; expected e.g. "
        f"{list(CROWDFLOWER_COLUMNS)} (crowdflower) or {list(ESCI_EXAMPLE_COLUMNS)} (esci examples)",
        file=str(p),
    )


# ----------------------------------------------------------------------------------------------------------
# CrowdFlower


def _crowdflower_file(p: Path) -> Path:
    if p.is_dir():
        hits = _crowdflower_csvs(p)
        if len(hits) != 1:
            raise DataError(
                f"expected one CrowdFlower CSV (columns {list(CROWDFLOWER_COLUMNS)}) in the directory; found "
                + (f"several: {[h.name for h in hits]}" if hits else f"none among {_listing(p)}"),
                file=str(p),
            )
        return hits[0]
    if p.suffix.lower() in (".parquet", ".pq", ".jsonl", ".ndjson", ".json"):
        # Not a CSV at all: name the columns it has rather than fail to decode it as text.
        raise _wrong_format(p, "crowdflower", CROWDFLOWER_COLUMNS, _file_columns(p) or [], "CSV")
    return p


def _load_crowdflower(
    path: Path, *, relevant_min: int | None, skip_bad: bool, report: BadRows | None
) -> tuple[pd.DataFrame, pd.DataFrame, LabelScheme, dict[str, Any]]:
    file = _crowdflower_file(path)
    raw = _read_csv(file, "crowdflower", CROWDFLOWER_COLUMNS, "CSV")
    if report is not None:
        report.n_rows += len(raw)
    thr = CROWDFLOWER_RELEVANT_MIN if relevant_min is None else int(relevant_min)
    if not CROWDFLOWER_GRADES[0] <= thr <= CROWDFLOWER_GRADES[-1]:
        raise DataError(f"relevant_min must be a CrowdFlower grade {CROWDFLOWER_GRADES[0]}-"
                        f"{CROWDFLOWER_GRADES[-1]}; got {relevant_min}")
    scheme = make_graded_scheme(CROWDFLOWER_GRADES, thr)  # gain = grade - 1

    rows = _Rows(file, len(raw), skip_bad, report)
    query = _queries(raw["query"])
    title = _texts(raw["product_title"])
    desc = _texts(raw["product_description"])
    label = _texts(raw["median_relevance"])
    rows.mark_mask((query == "").to_numpy(), "empty query", "query", "query is empty or missing")
    rows.mark_mask((title == "").to_numpy(), "empty title", "product_title", "product_title is empty or missing")
    canon = _mark_labels(rows, label, scheme, "median_relevance")
    keep = rows.finish()

    pid = pd.Series([crowdflower_product_id(t, d) for t, d in zip(title, desc, strict=True)], dtype=object)
    pairs = pd.DataFrame({"query": query, "product_id": pid, "label": label})
    if "id" in raw.columns:
        pairs["example_id"] = _texts(raw["id"])
    if "relevance_variance" in raw.columns:
        pairs["relevance_variance"] = pd.to_numeric(raw["relevance_variance"], errors="coerce").astype(float)
    pairs = pairs[keep].reset_index(drop=True)
    pairs, merged = _finish_pairs(pairs, canon, scheme, file, report)

    # One catalogue row per derived id, with the title / description as first written.
    first = ~pid[keep].duplicated(keep="first")
    idx = np.flatnonzero(keep)[first.to_numpy()]
    catalog = _catalog_frame(pid.iloc[idx], title.iloc[idx], "unknown", {"description": desc.iloc[idx]})
    source = {"file": str(file), "relevant_min": thr, "merged_duplicates": merged}
    return catalog, pairs, scheme, source


# ----------------------------------------------------------------------------------------------------------
# Amazon ESCI


def _esci_files(p: Path) -> tuple[Path, Path]:
    if p.is_dir():
        d = _esci_dir(p)
        if d is None:
            raise DataError(
                f"not an esci directory: expected {ESCI_EXAMPLES_FILE} and {ESCI_PRODUCTS_FILE} (directly or in "
                f"{ESCI_SUBDIR}/); found {_listing(p)}",
                file=str(p),
            )
        examples = d / ESCI_EXAMPLES_FILE
    elif p.name.lower() == ESCI_PRODUCTS_FILE:
        examples = p.parent / ESCI_EXAMPLES_FILE
    else:
        examples = p
    if examples.suffix.lower() not in (".parquet", ".pq"):
        # A CSV given as esci: say which columns were expected rather than "cannot read Parquet".
        raise _wrong_format(examples, "esci", ESCI_EXAMPLE_COLUMNS, _file_columns(examples) or [], "examples file")
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


def _load_esci(
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
    ex = _read_parquet(examples_file, "esci", (*ESCI_EXAMPLE_COLUMNS, flag), "examples file", columns=wanted)
    ex_locale = _texts(ex["product_locale"]).str.lower()
    if not (ex_locale == loc).any():
        raise DataError(f"no examples for locale {locale!r}; locales found: {sorted(set(ex_locale))}",
                        file=str(examples_file), field="product_locale")
    # Row numbers in messages stay the file's own: filter by position, not by re-reading.
    sel = np.flatnonzero(((ex_locale == loc) & (ex[flag].fillna(0).astype(int) == 1)).to_numpy())
    ex = ex.iloc[sel]
    if report is not None:
        report.n_rows += len(ex)

    query = _queries(ex["query"])
    pid = _texts(ex["product_id"])
    label = _texts(ex["esci_label"])
    ref_ids = sorted(set(pid) - {""})

    # Products: only this locale's (ids repeat across locales) and only those the examples use.
    prod_cols = ("product_id", "product_title", "product_locale", *ESCI_PRODUCT_TEXT)
    found = _parquet_columns(products_file)
    loc_values = {loc, loc.upper()}
    prod = _read_parquet(
        products_file, "esci", ESCI_PRODUCT_COLUMNS, "products file", columns=prod_cols,
        filters=[("product_locale", "in", sorted(loc_values)), ("product_id", "in", ref_ids)] if ref_ids else None,
    )
    if not ref_ids:
        prod = prod.iloc[0:0]
    if report is not None:
        report.n_rows += len(prod)
    p_id = _texts(prod["product_id"])
    p_title = _texts(prod["product_title"])
    prows = _Rows(products_file, len(prod), skip_bad, report, by_row=False)
    prows.mark_mask((p_id == "").to_numpy(), "empty product_id", "product_id", "product_id is empty")
    prows.mark_mask((p_title == "").to_numpy(), "empty title", "product_title",
                    lambda r: f"product_id {p_id.iloc[r]!r} (locale {loc}) has no product_title")
    dup = p_id.duplicated(keep="first").to_numpy() & (p_id != "").to_numpy()
    prows.mark_mask(dup, "duplicate product_id", "product_id",
                    lambda r: f"duplicate product_id {p_id.iloc[r]!r} in locale {loc}")
    pkeep = prows.finish()
    untitled = set(p_id[~pkeep & (p_title == "").to_numpy()])
    known = set(p_id[pkeep])

    rows = _Rows(examples_file, len(ex), skip_bad, report, row_numbers=sel)
    rows.mark_mask((query == "").to_numpy(), "empty query", "query", "query is empty or missing")
    rows.mark_mask((pid == "").to_numpy(), "empty product_id", "product_id", "product_id is empty")
    canon = _mark_labels(rows, label, scheme, "esci_label")
    rows.mark([i for i, v in enumerate(pid) if v in untitled], "product without title", "product_id",
              lambda r: f"product_id {pid.iloc[r]!r} has no title in {products_file.name}")
    rows.mark([i for i, v in enumerate(pid) if v and v not in known and v not in untitled], "unknown product",
              "product_id", lambda r: f"product_id {pid.iloc[r]!r} (locale {loc}) is not in {products_file.name}")
    keep = rows.finish()

    pairs = pd.DataFrame({"query": query, "product_id": pid, "label": label})
    for col in ("example_id", "query_id"):
        if col in ex.columns:
            pairs[col] = _texts(ex[col])
    if "split" in ex.columns:
        pairs["split"] = _texts(ex["split"]).str.lower()
    pairs = pairs[keep].reset_index(drop=True)
    pairs, merged = _finish_pairs(pairs, canon, scheme, examples_file, report)

    # Catalogue in the order the examples first use the products (stable across runs).
    prod = prod[pkeep].assign(_pid=p_id[pkeep]).set_index("_pid")
    used = list(dict.fromkeys(pairs["product_id"]))
    prod = prod.loc[used] if used else prod.iloc[0:0]
    extras: dict[str, Any] = {}
    for src, dst in ESCI_PRODUCT_TEXT.items():
        extras[dst] = _texts(prod[src]) if src in prod.columns else [""] * len(prod)
    extras["locale"] = [loc] * len(prod)
    catalog = _catalog_frame(used, _texts(prod["product_title"]), "unknown", extras)
    source = {
        "examples": str(examples_file), "products": str(products_file), "locale": loc, "version": ver,
        "esci_gains": dict(scheme.gains), "merged_duplicates": merged,
        "missing_product_columns": [c for c in ESCI_PRODUCT_TEXT if c not in found],
    }
    return catalog, pairs, scheme, source


# ----------------------------------------------------------------------------------------------------------
# Wayfair WANDS


def _features_json(text: str) -> str | None:
    """``key:value|key:value`` -> JSON object text (None when there is nothing to parse)."""
    items: dict[str, str] = {}
    for part in text.split("|"):
        key, sep, value = part.partition(":")
        if sep and key.strip():
            items[key.strip()] = value.strip()
    return json.dumps(items, ensure_ascii=False) if items else None


def _load_wands(
    path: Path, *, skip_bad: bool, report: BadRows | None
) -> tuple[pd.DataFrame, pd.DataFrame, LabelScheme, dict[str, Any]]:
    d = path if path.is_dir() else path.parent
    found = _wands_dir(d)
    if found is None:
        raise DataError(f"not a wands directory: expected {list(WANDS_FILES)} (directly or in {WANDS_SUBDIR}/); "
                        f"found {_listing(d)}", file=str(d))
    d = found
    qfile, pfile, lfile = (d / f for f in WANDS_FILES)
    qraw = _read_csv(qfile, "wands", WANDS_QUERY_COLUMNS, "query file")
    praw = _read_csv(pfile, "wands", WANDS_PRODUCT_COLUMNS, "product file")
    lraw = _read_csv(lfile, "wands", WANDS_LABEL_COLUMNS, "label file")
    if report is not None:
        report.n_rows += len(qraw) + len(praw) + len(lraw)
    scheme = LABEL_SCHEMES["epi"]

    # Queries
    q_id, q_text = _texts(qraw["query_id"]), _queries(qraw["query"])
    qrows = _Rows(qfile, len(qraw), skip_bad, report)
    qrows.mark_mask((q_id == "").to_numpy(), "empty query_id", "query_id", "query_id is empty")
    qrows.mark_mask((q_text == "").to_numpy(), "empty query", "query", "query is empty or missing")
    qrows.mark_mask(q_id.duplicated().to_numpy() & (q_id != "").to_numpy(), "duplicate query_id", "query_id",
                    lambda r: f"duplicate query_id {q_id.iloc[r]!r}")
    qkeep = qrows.finish()
    query_of = dict(zip(q_id[qkeep], q_text[qkeep], strict=True))
    qclass = _texts(qraw["query_class"]) if "query_class" in qraw.columns else None
    class_of = dict(zip(q_id[qkeep], qclass[qkeep], strict=True)) if qclass is not None else {}

    # Products
    p_id, p_name = _texts(praw["product_id"]), _texts(praw["product_name"])
    prows = _Rows(pfile, len(praw), skip_bad, report)
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
                return _texts(praw[n])[pkeep]
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
    catalog = _catalog_frame(p_id[pkeep], p_name[pkeep], ptype, extras,
                             attributes=[_features_json(f) for f in features])

    # Labels
    l_qid, l_pid, label = _texts(lraw["query_id"]), _texts(lraw["product_id"]), _texts(lraw["label"])
    rows = _Rows(lfile, len(lraw), skip_bad, report)
    rows.mark_mask((l_qid == "").to_numpy(), "empty query_id", "query_id", "query_id is empty")
    rows.mark_mask((l_pid == "").to_numpy(), "empty product_id", "product_id", "product_id is empty")
    canon = _mark_labels(rows, label, scheme, "label")
    rows.mark([i for i, v in enumerate(l_qid) if v and v not in query_of], "unknown query", "query_id",
              lambda r: f"query_id {l_qid.iloc[r]!r} is not in {qfile.name}")
    rows.mark([i for i, v in enumerate(l_pid) if v in untitled], "product without title", "product_id",
              lambda r: f"product_id {l_pid.iloc[r]!r} has no product_name in {pfile.name}")
    rows.mark([i for i, v in enumerate(l_pid) if v and v not in known and v not in untitled], "unknown product",
              "product_id", lambda r: f"product_id {l_pid.iloc[r]!r} is not in {pfile.name}")
    keep = rows.finish()

    pairs = pd.DataFrame({"query": l_qid.map(query_of).astype(object), "product_id": l_pid, "label": label})
    if "id" in lraw.columns:
        pairs["example_id"] = _texts(lraw["id"])
    pairs["query_id"] = l_qid
    if class_of:
        pairs["query_class"] = l_qid.map(class_of).astype(object)
    pairs = pairs[keep].reset_index(drop=True)
    pairs, merged = _finish_pairs(pairs, canon, scheme, lfile, report)
    source = {"query": str(qfile), "product": str(pfile), "label": str(lfile), "merged_duplicates": merged}
    return catalog, pairs, scheme, source


# ----------------------------------------------------------------------------------------------------------
# querylife


def _load_querylife(
    path: Path, *, label_scheme: str | LabelScheme, relevant_min: int | None, skip_bad: bool, report: BadRows | None
) -> tuple[pd.DataFrame, pd.DataFrame, LabelScheme, dict[str, Any]]:
    if not path.is_dir():
        raise DataError("the querylife format is a directory holding catalog.* and pairs.*; got a file "
                        "(use --catalog / --pairs for separate files)", file=str(path))
    catalog_file, pairs_file = _querylife_files(path)
    if catalog_file is None or pairs_file is None:
        missing = [n for n, f in (("catalog.*", catalog_file), ("pairs.*", pairs_file)) if f is None]
        raise DataError(f"not a querylife directory: no {' or '.join(missing)} (.parquet, .csv, .tsv or .jsonl); "
                        f"found {_listing(path)}", file=str(path))
    catalog = load_catalog(catalog_file, skip_bad=skip_bad, report=report)
    pairs, scheme = load_pairs(pairs_file, catalog=catalog, label_scheme=label_scheme, skip_bad=skip_bad,
                               report=report)
    if relevant_min is not None:
        if not scheme.name.startswith("graded"):
            raise DataError(f"relevant_min applies to graded labels; the labels use the {scheme.name} scheme",
                            file=str(pairs_file), field="label")
        scheme = make_graded_scheme((int(k) for k in scheme.gains), relevant_min, scheme.name)
        pairs["positive"] = [scheme.is_positive(v) for v in pairs["label"]]
    return catalog, pairs, scheme, {"catalog": str(catalog_file), "pairs": str(pairs_file), "merged_duplicates": 0}


# ----------------------------------------------------------------------------------------------------------
# Entry points


def load_format(
    path: str | os.PathLike,
    *,
    format: str = "auto",
    locale: str = "us",
    version: str = "small",
    esci_gains: Mapping[str, float] | None = None,
    relevant_min: int | None = None,
    label_scheme: str | LabelScheme = "auto",
    skip_bad: bool = False,
    report: BadRows | None = None,
) -> LoadedData:
    """Read a data set in one of :data:`FORMATS` into querylife's normalised catalogue and pairs.

    Args:
        path: the file or directory (see :func:`detect_format` for what each format looks like).
        format: ``auto`` (detect) or one of :data:`FORMATS`.
        locale: esci only: the product locale to keep (``us``, ``es``, ``jp``).
        version: esci only: ``small`` (rows with ``small_version == 1``) or ``large`` (``large_version == 1``).
        esci_gains: esci only: gains overriding the defaults ``E=1, S=0.1, C=0.01, I=0`` (keys E/S/C/I).
        relevant_min: crowdflower (and querylife with graded labels): the lowest grade that counts as positive
            (default 3 for crowdflower).
        label_scheme: querylife only: the scheme passed to :func:`~querylife.data.readers.load_pairs`.
        skip_bad: drop bad rows (counted in ``report``) instead of raising.
        report: tally of skipped and merged rows; one is made when ``skip_bad`` and none is given.

    Raises:
        DataError: an unknown format name; a path that is not in the format (naming the file, the expected and
            the found columns or files); a bad row unless ``skip_bad``; an option that does not apply.
    """
    p = Path(path).expanduser()
    fmt = str(format).strip().lower()
    if fmt != "auto" and fmt not in FORMATS:
        raise DataError(f"unknown data format {format!r}; choose one of auto, {', '.join(FORMATS)}")
    if not p.exists():
        raise DataError("no such file or directory", file=str(p))
    if fmt == "auto":
        fmt = detect_format(p)
    if esci_gains is not None and fmt != "esci":
        raise DataError(f"esci_gains applies to the esci format, not {fmt}")
    if relevant_min is not None and fmt not in ("crowdflower", "querylife"):
        raise DataError(f"relevant_min applies to graded labels (crowdflower, querylife), not {fmt}")
    own = report if report is not None else (BadRows() if skip_bad else None)

    if fmt == "crowdflower":
        catalog, pairs, scheme, source = _load_crowdflower(p, relevant_min=relevant_min, skip_bad=skip_bad,
                                                           report=own)
    elif fmt == "esci":
        catalog, pairs, scheme, source = _load_esci(p, locale=locale, version=version, esci_gains=esci_gains,
                                                    skip_bad=skip_bad, report=own)
    elif fmt == "wands":
        catalog, pairs, scheme, source = _load_wands(p, skip_bad=skip_bad, report=own)
    else:
        catalog, pairs, scheme, source = _load_querylife(p, label_scheme=label_scheme, relevant_min=relevant_min,
                                                         skip_bad=skip_bad, report=own)
    if not len(pairs):
        raise DataError(f"no labelled pairs left to use ({fmt} format)", file=str(p))
    source = {"path": str(p), "format": fmt, "skip_bad": skip_bad, **source}
    if source.get("merged_duplicates"):
        log.info("%s: merged %d duplicate judgements of the same (query, product)", p, source["merged_duplicates"])
    if skip_bad and report is None and own:
        log.warning("%s: %s", p, own.summary())
    catalog.attrs = {"source": str(p), "format": fmt}
    pairs.attrs = {"source": str(p), "format": fmt, "label_scheme": scheme.name}
    return LoadedData(catalog, pairs, scheme, fmt, source, own)


def _official_splits(
    pairs: pd.DataFrame, fractions: tuple[float, float, float], seed: int, group_by: str
) -> dict[str, pd.DataFrame] | None:
    """Splits from the pairs' ``split`` column, or None when it names no test rows.

    Official test -> test (and official dev -> dev when present); otherwise dev is carved out of the official
    train by ``group_by`` with the seed, in the ratio ``fractions[1] : fractions[0]``. A group found in several
    official splits goes wholly to the latest of train < dev < test, so no test query is trained on.
    """
    values = pairs["split"].fillna("").astype(str).str.strip().str.lower()
    unknown = sorted(set(values) - set(_SPLIT_ALIASES))
    if unknown:
        raise DataError(f"pairs column 'split' has values {unknown[:5]} besides train/dev/test; rename the column "
                        "or pass official_split=False", field="split")
    rank = values.map(_SPLIT_ALIASES).map(_SPLIT_RANK)
    if not (rank == _SPLIT_RANK["test"]).any():
        log.warning("the pairs' 'split' column has no test rows: splitting by %s at random instead", group_by)
        return None
    if group_by not in pairs.columns:
        raise DataError(f"cannot split by {group_by!r}: no such column; found {list(pairs.columns)}", field=group_by)
    keys = pairs[group_by].astype(str)
    latest = rank.groupby(keys).transform("max")
    moved = int((latest != rank).sum())
    if moved:
        log.warning("%d pairs moved to a later official split: their %s is in several splits", moved, group_by)
    name = latest.map({v: k for k, v in _SPLIT_RANK.items()}).to_numpy()

    def part(which: str) -> pd.DataFrame:
        return pairs[name == which].reset_index(drop=True)

    out = {"test": part("test")}
    if (name == "dev").any():
        out["train"], out["dev"] = part("train"), part("dev")
        return {k: out[k] for k in ("train", "dev", "test")}
    train = part("train")
    f_train, f_dev = float(fractions[0]), float(fractions[1])
    if f_train < 0 or f_dev < 0:
        raise DataError(f"split fractions must be non-negative; got {list(fractions)}")
    if not len(train) or f_dev == 0:
        out["train"], out["dev"] = train, train.iloc[0:0]
    elif f_train == 0:
        out["train"], out["dev"] = train.iloc[0:0], train
    else:
        total = f_train + f_dev
        s = split_by_query(train, fractions=(f_train / total, f_dev / total, 0.0), seed=seed, group_by=group_by)
        out["train"], out["dev"] = s["train"], s["dev"]
    return {k: out[k] for k in ("train", "dev", "test")}


def to_dataset(
    loaded: LoadedData,
    *,
    image_size: int = 64,
    split: tuple[float, float, float] = (0.7, 0.1, 0.2),
    split_seed: int = 0,
    split_by: str = "query",
    text_fields: tuple[str, ...] = ("title",),
    progress: bool = False,
    official_split: bool = True,
) -> Dataset:
    """Build a :class:`~querylife.data.prepare.Dataset` from a :class:`LoadedData` (no files are re-read).

    Does what :func:`~querylife.data.prepare.prepare_dataset` does after loading: ``product_type`` and
    ``query_type`` pair columns, a split grouped by ``split_by``, images. When the pairs have a ``split`` column
    with official ``train``/``test`` values (esci) and ``official_split`` is on, the official test set is the
    test split and dev is carved out of the official train by query with ``split_seed`` (dev : train =
    ``split[1] : split[0]``; ``split[2]`` is not used). Otherwise the pairs are split at random by
    :func:`~querylife.data.splits.split_by_query`.

    Images: products without an ``image_path`` (all of the public sets) get a zero image and ``has_image``
    False; the zero tensor is one image broadcast over the catalogue (read-only, no memory per product).
    A querylife-format catalogue with image paths has its images loaded as ``prepare_dataset`` does.

    Raises:
        DataError: a text field that is not a catalogue column, a pair whose product is not in the catalogue,
            a bad ``split`` column, or split fractions that cannot be met.
    """
    import torch

    from .images import load_images
    from .prepare import Dataset, assign_query_types

    catalog = loaded.catalog.reset_index(drop=True)
    for f in text_fields:
        if f not in catalog.columns:
            raise DataError(f"text field {f!r} is not a catalogue column ({list(catalog.columns)})", field=f)
    pairs = loaded.pairs.copy()
    pairs["product_type"] = pairs["product_id"].map(dict(zip(catalog["product_id"], catalog["product_type"],
                                                             strict=True)))
    if pairs["product_type"].isna().any():
        bad = pairs.loc[pairs["product_type"].isna(), "product_id"].iloc[0]
        raise DataError(f"product_id {bad!r} of the pairs is not in the catalogue", field="product_id")
    types = pd.unique(pairs["product_type"])
    if len(types) == 1:
        # CrowdFlower and ESCI have no categories: every query's type is "unknown", which is what
        # assign_query_types would give too, without its per-query groupby (~30 s on ESCI's 40k queries).
        pairs["query_type"] = types[0]
    else:
        pairs["query_type"] = assign_query_types(pairs)

    splits = None
    if official_split and "split" in pairs.columns:
        splits = _official_splits(pairs, tuple(split), split_seed, split_by)  # type: ignore[arg-type]
    if splits is None:
        splits = split_by_query(pairs, fractions=split, seed=split_seed, group_by=split_by)

    n = len(catalog)
    paths = catalog["image_path"].tolist() if "image_path" in catalog.columns else [None] * n
    if any(isinstance(p, str) and p for p in paths):
        images, has_image = load_images(paths, image_size, skip_bad=bool(loaded.source.get("skip_bad")),
                                        report=loaded.bad_rows, progress=progress)
    else:
        # One zero image broadcast to (N, 3, S, S): ESCI's catalogue would need gigabytes of zeros otherwise.
        # Users index rows (a copy), so the shared storage is never written.
        images = torch.zeros((1, 3, image_size, image_size), dtype=torch.uint8).expand(n, 3, image_size, image_size)
        has_image = torch.zeros(n, dtype=torch.bool)
    return Dataset(catalog, pairs, splits, loaded.label_scheme, images, has_image, tuple(text_fields),
                   loaded.bad_rows)
