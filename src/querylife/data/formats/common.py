"""What the data-set readers share: the :class:`LoadedData` they return and the table / bad-row helpers.

Every reader gives the same normalised catalogue and pairs as :func:`~querylife.data.readers.load_catalog` and
:func:`~querylife.data.readers.load_pairs` (see the package docstring for what is common to all formats).
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from ..errors import BadRows, DataError, UnknownLabelError
from ..labels import LabelScheme
from ..notes import Notes
from ..readers import collapse_whitespace, text_column

__all__ = [
    "LoadedData",
    "QUERYLIFE_SUFFIXES",
    "Rows",
    "catalog_frame",
    "csv_columns",
    "file_columns",
    "finish_pairs",
    "listing",
    "mark_labels",
    "parquet_columns",
    "queries",
    "read_csv",
    "read_parquet",
    "sniff_delimiter",
    "wrong_format",
]


QUERYLIFE_SUFFIXES = (".parquet", ".pq", ".csv", ".tsv", ".jsonl", ".ndjson", ".json")


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
        notes: what was mapped, kept, ignored or normalised while loading, and warnings.
    """

    catalog: pd.DataFrame
    pairs: pd.DataFrame
    label_scheme: LabelScheme
    format: str
    source: dict[str, Any]
    bad_rows: BadRows | None = None
    notes: Notes = field(default_factory=Notes)


def queries(s: pd.Series) -> pd.Series:
    """Query text normalised like :func:`~querylife.data.readers.load_pairs` does (whitespace collapsed)."""
    return pd.Series([collapse_whitespace(t) for t in text_column(s)], index=s.index, dtype=object)


def sniff_delimiter(path: Path) -> str:
    """Tab or comma, from the header line: WANDS is tab-separated although its files end in ``.csv``."""
    try:
        with open(path, encoding="utf-8-sig", newline="") as f:
            header = f.readline()
    except UnicodeDecodeError as e:
        raise DataError(f"not UTF-8 text: {e}", file=str(path)) from None
    except OSError as e:
        raise DataError(f"cannot read: {e.strerror or e}", file=str(path)) from None
    return "\t" if header.count("\t") > header.count(",") else ","


def csv_columns(path: Path) -> list[str]:
    """Header of a CSV/TSV file (delimiter sniffed), without reading the rows."""
    sep = sniff_delimiter(path)
    try:
        head = pd.read_csv(path, sep=sep, nrows=0, encoding="utf-8-sig")
    except Exception as e:  # pandas raises several types for unparseable text; all mean "not a table"
        raise DataError(f"cannot read the header: {type(e).__name__}: {e}", file=str(path)) from None
    return [str(c).strip() for c in head.columns]


def parquet_columns(path: Path) -> list[str]:
    import pyarrow.parquet as pq

    try:
        return list(pq.read_schema(path).names)
    except Exception as e:  # pyarrow raises several types for corrupt files; all mean "unreadable"
        raise DataError(f"cannot read the Parquet schema: {type(e).__name__}: {e}", file=str(path)) from None


def file_columns(path: Path) -> list[str] | None:
    """Column names of a table file, or None when the extension is not one we can peek into."""
    suffix = path.suffix.lower()
    if suffix in (".parquet", ".pq"):
        return parquet_columns(path)
    if suffix in (".csv", ".tsv", ".txt"):
        return csv_columns(path)
    if suffix in (".jsonl", ".ndjson", ".json"):
        try:
            with open(path, encoding="utf-8") as f:
                first = f.readline()
            rec = json.loads(first)
        except (OSError, UnicodeDecodeError, json.JSONDecodeError):
            return None
        return [str(k) for k in rec] if isinstance(rec, dict) else None
    return None


def wrong_format(path: Path, fmt: str, expected: Iterable[str], found: Iterable[str], what: str = "") -> DataError:
    """The error for a file that is not in the format asked for: names the file, expected and found columns."""
    exp = list(expected)
    missing = [c for c in exp if c not in set(found)]
    return DataError(
        f"not in the {fmt} format ({what or 'file'}): missing column(s) {missing}; expected columns {exp}, "
        f"found columns {list(found)}",
        file=str(path),
    )


def read_csv(path: Path, fmt: str, required: Iterable[str], what: str) -> pd.DataFrame:
    """Whole CSV/TSV as text (ids keep leading zeros; empty cells are ``""``), required columns checked."""
    if not path.is_file():
        raise DataError("file not found", file=str(path))
    sep = sniff_delimiter(path)
    try:
        df = pd.read_csv(path, sep=sep, dtype=str, keep_default_na=False, encoding="utf-8-sig")
    except UnicodeDecodeError as e:
        raise DataError(f"not UTF-8 text: {e}", file=str(path)) from None
    except Exception as e:  # pandas raises several types for unparseable text; all mean "unreadable"
        raise DataError(f"cannot read {fmt} {what}: {type(e).__name__}: {e}", file=str(path)) from None
    df.columns = [str(c).strip() for c in df.columns]
    missing = [c for c in required if c not in df.columns]
    if missing:
        raise wrong_format(path, fmt, required, df.columns, what)
    return df.reset_index(drop=True)


def read_parquet(
    path: Path, fmt: str, required: Iterable[str], what: str, *, columns: Iterable[str] | None = None,
    filters: list | None = None,
) -> pd.DataFrame:
    """Parquet file (only ``columns`` of it, rows matching ``filters``), required columns checked first."""
    if not path.is_file():
        raise DataError("file not found", file=str(path))
    found = parquet_columns(path)
    missing = [c for c in required if c not in found]
    if missing:
        raise wrong_format(path, fmt, required, found, what)
    cols = None if columns is None else [c for c in columns if c in found]
    try:
        df = pd.read_parquet(path, columns=cols, filters=filters)
    except Exception as e:  # pyarrow raises several types for corrupt files; all mean "unreadable"
        raise DataError(f"cannot read {fmt} {what}: {type(e).__name__}: {e}", file=str(path)) from None
    return df.reset_index(drop=True)


class Rows:
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


def mark_labels(rows: Rows, labels: pd.Series, scheme: LabelScheme, field: str) -> dict[str, str | None]:
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


def finish_pairs(
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


def catalog_frame(
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


def listing(d: Path, limit: int = 12) -> str:
    names = sorted(p.name + ("/" if p.is_dir() else "") for p in d.iterdir())
    return str(names[:limit]) + (f" and {len(names) - limit} more" if len(names) > limit else "")
