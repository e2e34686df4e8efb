"""Readers for the product catalogue and the labelled query-product pairs (Parquet, CSV, JSONL).

The loaders return normalised pandas frames and raise :class:`~querylife.data.schemas.DataError` for bad
input, naming file, row and field. With ``skip_bad=True`` they drop bad rows instead and tally them in a
:class:`~querylife.data.schemas.BadRows`.

Row numbers in messages are 1-based data rows (the CSV header is not a row); for CSV and JSONL the line number
in the file is given too, worked out only when an error is reported so that reading stays fast.
"""

from __future__ import annotations

import csv
import json
import logging
import math
import os
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from .schemas import (
    LABEL_SCHEMES,
    BadRows,
    DataError,
    LabelScheme,
    UnknownLabelError,
    infer_label_scheme,
    label_to_str,
    make_label_scheme,
)

__all__ = ["read_table", "load_catalog", "load_pairs", "BadRows", "CATALOG_REQUIRED", "PAIRS_REQUIRED"]

log = logging.getLogger(__name__)

CATALOG_REQUIRED = ("product_id", "title", "product_type")
CATALOG_OPTIONAL = ("image_path", "attributes", "group_id")
PAIRS_REQUIRED = ("query", "product_id", "label")

_FORMATS = {
    ".parquet": "parquet",
    ".pq": "parquet",
    ".csv": "csv",
    ".tsv": "tsv",
    ".jsonl": "jsonl",
    ".ndjson": "jsonl",
    ".json": "jsonl",
}


# ----------------------------------------------------------------------------------------------------------
# Tables


def _detect_format(path: Path, format: str | None) -> str:
    if format is not None:
        fmt = format.lower().lstrip(".")
        fmt = {"json": "jsonl", "ndjson": "jsonl", "pq": "parquet"}.get(fmt, fmt)
        if fmt not in {"parquet", "csv", "tsv", "jsonl"}:
            raise DataError(f"unknown format {format!r}; use parquet, csv, tsv or jsonl", file=str(path))
        return fmt
    suffixes = [s.lower() for s in path.suffixes]
    # "pairs.csv.gz": gzip is read transparently; the format is the suffix before ".gz".
    if suffixes and suffixes[-1] == ".gz":
        suffixes = suffixes[:-1]
    if suffixes and suffixes[-1] in _FORMATS:
        return _FORMATS[suffixes[-1]]
    raise DataError(
        f"cannot tell the file format from the extension {path.suffix!r}; use .parquet, .csv, .tsv or .jsonl "
        "or pass format=",
        file=str(path),
    )


def _read_jsonl(path: Path) -> pd.DataFrame:
    text_start = _peek(path)
    if text_start == "[":  # a .json file holding one JSON array of records
        try:
            with _open_text(path) as f:
                records = json.load(f)
        except (json.JSONDecodeError, UnicodeDecodeError) as e:
            raise DataError(f"invalid JSON: {e}", file=str(path)) from None
        if not isinstance(records, list) or not all(isinstance(r, dict) for r in records):
            raise DataError("a JSON array file must hold a list of objects", file=str(path))
        lines = None
        array = True
    else:
        array = False
        records, lines = [], []
        with _open_text(path) as f:
            for lineno, line in enumerate(f, start=1):
                if not line.strip():
                    continue
                try:
                    rec = json.loads(line)
                except json.JSONDecodeError as e:
                    raise DataError(
                        f"invalid JSON: {e.msg} (column {e.colno})",
                        file=str(path), line=lineno,
                    ) from None
                if not isinstance(rec, dict):
                    raise DataError(
                        f"not a JSON object (got {type(rec).__name__})", file=str(path),
                        line=lineno,
                    )
                records.append(rec)
                lines.append(lineno)
    df = pd.DataFrame(records, dtype=object)
    # Infer column types, except where it would turn integer ids with gaps into floats (123 -> 123.0).
    for col in df.columns:
        s = df[col]
        inferred = s.infer_objects()
        if inferred.dtype.kind == "f" and any(isinstance(v, (int, np.integer)) and not isinstance(v, bool)
                                              for v in s):
            continue
        df[col] = inferred
    if array:
        df.attrs["json_array"] = True  # rows do not map to lines
    elif lines and lines[-1] != len(lines):
        df.attrs["lines"] = lines  # blank lines present: keep the exact mapping row -> line
    return df


def _peek(path: Path) -> str:
    with _open_text(path) as f:
        while True:
            ch = f.read(1)
            if not ch or not ch.isspace():
                return ch


def _open_text(path: Path):
    import gzip

    if path.suffix.lower() == ".gz":
        return gzip.open(path, "rt", encoding="utf-8")
    return open(path, encoding="utf-8")


def read_table(path: str | os.PathLike, *, format: str | None = None) -> pd.DataFrame:
    """Read a Parquet, CSV/TSV or JSON-lines file into a DataFrame.

    The format comes from the extension (``.parquet``/``.pq``, ``.csv``, ``.tsv``, ``.jsonl``/``.ndjson``/
    ``.json``; ``.gz`` allowed for the text formats) or from ``format``. CSV cells are read as text, so ids
    such as ``00123`` keep their leading zeros; empty cells become empty strings. A ``.json`` file may also
    hold a single JSON array of objects.

    Raises:
        DataError: naming the file when it is missing, empty, corrupt or not parseable, and the line for a
            JSON-lines record that fails to parse.
    """
    p = Path(path)
    fmt = _detect_format(p, format)
    if not p.exists():
        raise DataError("file not found", file=str(p))
    if p.is_dir():
        raise DataError("is a directory, not a file", file=str(p))
    if p.stat().st_size == 0:
        raise DataError("file is empty (0 bytes)", file=str(p))
    try:
        if fmt == "parquet":
            df = pd.read_parquet(p)
        elif fmt in ("csv", "tsv"):
            df = pd.read_csv(
                p, sep="," if fmt == "csv" else "\t", dtype=str, keep_default_na=False, encoding="utf-8"
            )
        else:
            df = _read_jsonl(p)
    except DataError:
        raise
    except UnicodeDecodeError as e:
        raise DataError(f"not UTF-8 text: {e}", file=str(p)) from None
    except Exception as e:  # pyarrow / pandas raise many types for corrupt files; all mean "unreadable"
        raise DataError(f"cannot read {fmt} file: {type(e).__name__}: {e}", file=str(p)) from None
    df.attrs["source"] = str(p)
    df.attrs["format"] = fmt
    return df


def _line_of(df_attrs: dict[str, Any], row0: int) -> int | None:
    """Line in the source file of 0-based data row ``row0`` (CSV/JSONL), computed on demand."""
    fmt = df_attrs.get("format")
    if fmt == "jsonl":
        if df_attrs.get("json_array"):
            return None
        lines = df_attrs.get("lines")
        return lines[row0] if lines is not None else row0 + 1
    if fmt in ("csv", "tsv"):
        cached = df_attrs.get("_csv_lines")
        if cached is None:
            # Quoted cells may span lines and pandas skips blank lines: count lines the way the CSV is parsed.
            cached = []
            try:
                with _open_text(Path(df_attrs["source"])) as f:
                    reader = csv.reader(f, delimiter="," if fmt == "csv" else "\t")
                    header_seen = False
                    while True:
                        start = reader.line_num + 1
                        try:
                            rec = next(reader)
                        except StopIteration:
                            break
                        if not rec:
                            continue
                        if header_seen:
                            cached.append(start)
                        header_seen = True
            except (OSError, csv.Error, UnicodeDecodeError):
                return None
            df_attrs["_csv_lines"] = cached
        return cached[row0] if row0 < len(cached) else None
    return None


class _RowErrors:
    """Collects bad rows of one file: raises on the first one, or tallies them when skipping."""

    def __init__(self, df: pd.DataFrame, file: str, skip_bad: bool, report: BadRows | None) -> None:
        self.attrs = df.attrs
        self.file = file
        self.skip_bad = skip_bad
        self.report = report
        self.bad: dict[int, tuple[str, str, str]] = {}  # row0 -> (reason, field, message); first reason wins

    def mark(self, rows: Iterable[int], reason: str, field: str, message) -> None:
        for r in rows:
            r = int(r)
            if r not in self.bad:
                self.bad[r] = (reason, field, message(r) if callable(message) else message)

    def error(self, row0: int) -> DataError:
        reason, field, message = self.bad[row0]
        cls = UnknownLabelError if reason == "unknown label" else DataError
        return cls(message, file=self.file, row=row0 + 1, field=field, line=_line_of(self.attrs, row0))

    def finish(self, soft: frozenset[str] = frozenset()) -> np.ndarray:
        """Boolean keep-mask over the rows.

        Unless skipping, raises for the first bad row whose reason is not in ``soft``; rows with a ``soft``
        reason (harmless ones, like exact duplicates) are always dropped and tallied.
        """
        n = self.attrs.get("_n_rows", 0)
        keep = np.ones(n, dtype=bool)
        if not self.skip_bad:
            hard = [r for r, v in self.bad.items() if v[0] not in soft]
            if hard:
                raise self.error(min(hard))
        for r in sorted(self.bad):
            reason, field, message = self.bad[r]
            keep[r] = False
            if self.report is not None:
                self.report.add(reason, file=self.file, row=r + 1, field=field, message=message)
        return keep


def _missing(v: Any) -> bool:
    if v is None:
        return True
    if isinstance(v, float) and math.isnan(v):
        return True
    return v is pd.NA or v is pd.NaT


def _text_column(s: pd.Series) -> pd.Series:
    """Column as stripped Python strings, with "" for missing values; ints stay exact (123 -> "123")."""
    if pd.api.types.is_string_dtype(s):  # the common case, vectorised (all values str or missing)
        return s.fillna("").astype(str).str.strip().astype(object)
    return pd.Series([("" if _missing(v) else label_to_str(v)) for v in s], index=s.index, dtype=object)


def _check_columns(df: pd.DataFrame, required: Iterable[str], file: str) -> None:
    found = [str(c) for c in df.columns]
    for col in required:
        if col not in df.columns:
            raise DataError(
                f"missing required column {col!r}; found columns: {found}", file=file, field=col
            )


def _start(
    path: str | os.PathLike, required: Iterable[str], report: BadRows | None
) -> tuple[pd.DataFrame, str]:
    df = read_table(path)
    file = df.attrs["source"]
    _check_columns(df, required, file)
    df = df.reset_index(drop=True)
    df.attrs["_n_rows"] = len(df)
    if report is not None:
        report.n_rows += len(df)
    return df, file


# ----------------------------------------------------------------------------------------------------------
# Catalogue


def _image_path(v: Any, base: str) -> str | None:
    if _missing(v):
        return None
    text = str(v).strip()
    if not text:
        return None
    if "://" in text:  # a URL: leave as is (the image loader will report it; we never fetch)
        return text
    # os.path on strings rather than pathlib: this runs once per product and pathlib is ~5x slower.
    if text.startswith("~"):
        text = os.path.expanduser(text)
    if not os.path.isabs(text):
        text = os.path.join(base, text)
    return os.path.normpath(text)


def _attributes(v: Any) -> str | None:
    if isinstance(v, np.ndarray):
        v = v.tolist()
    if _missing(v):
        return None
    if isinstance(v, str):
        text = v.strip()
        if not text:
            return None
        try:
            json.loads(text)
            return text
        except json.JSONDecodeError:
            # Free text ("colour: red; size M") is kept, as a JSON string, so that json.loads always works.
            return json.dumps(text, ensure_ascii=False)
    if isinstance(v, list) and v and all(isinstance(x, tuple) and len(x) == 2 for x in v):
        v = {str(k): x for k, x in v}  # a Parquet map column arrives as a list of (key, value) tuples
    try:
        return json.dumps(v, ensure_ascii=False, default=_json_default)
    except (TypeError, ValueError):
        return json.dumps(str(v), ensure_ascii=False)


def _json_default(o: Any) -> Any:
    if isinstance(o, np.ndarray):
        return o.tolist()
    if isinstance(o, np.generic):
        return o.item()
    raise TypeError(type(o).__name__)


def _load_catalog(
    path: str | os.PathLike, *, skip_bad: bool = False, report: BadRows | None = None
) -> tuple[pd.DataFrame, np.ndarray, pd.DataFrame]:
    """Catalogue plus the 1-based source row of each kept row, plus the raw table (for validation)."""
    raw, file = _start(path, CATALOG_REQUIRED, report)
    errs = _RowErrors(raw, file, skip_bad, report)
    pid = _text_column(raw["product_id"])
    title = _text_column(raw["title"])
    ptype = _text_column(raw["product_type"])

    errs.mark(np.flatnonzero((pid == "").to_numpy()), "empty product_id", "product_id", "product_id is empty")
    errs.mark(np.flatnonzero((title == "").to_numpy()), "empty title", "title", "title is empty or missing")
    errs.mark(
        np.flatnonzero((ptype == "").to_numpy()), "empty product_type", "product_type",
        "product_type is empty or missing",
    )
    # Duplicates among rows that are otherwise fine, so the surviving copy is a good one.
    ok_idx = np.array([i for i in range(len(raw)) if i not in errs.bad], dtype=int)
    ok_ids = pid.iloc[ok_idx]
    first_row = {}
    for i, v in zip(ok_idx, ok_ids, strict=True):
        if v in first_row:
            errs.mark(
                [i], "duplicate product_id", "product_id",
                f"duplicate product_id {v!r}: also on row {first_row[v] + 1}",
            )
        else:
            first_row[v] = int(i)
    keep = errs.finish()

    base = str(Path(file).resolve().parent)
    def optional(col: str, fn) -> pd.Series:
        values = [fn(v) for v in raw[col]] if col in raw.columns else [None] * len(raw)
        # dtype=object: pandas 3 would otherwise infer a string dtype and turn None into NaN.
        return pd.Series(values, index=raw.index, dtype=object)

    out = pd.DataFrame(
        {
            "product_id": pid,
            "title": title,
            "product_type": ptype.str.lower().astype(object),
            "image_path": optional("image_path", lambda v: _image_path(v, base)),
            "attributes": optional("attributes", _attributes),
            "group_id": optional("group_id", lambda v: None if _missing(v) else (label_to_str(v) or None)),
        },
        index=raw.index,
    )
    extras = [c for c in raw.columns if c not in CATALOG_REQUIRED + CATALOG_OPTIONAL]
    for c in extras:
        out[c] = raw[c]
    rows = np.flatnonzero(keep) + 1
    out = out[keep].reset_index(drop=True)
    out.attrs = {"source": file}
    return out, rows, raw


def load_catalog(
    path: str | os.PathLike, *, skip_bad: bool = False, report: BadRows | None = None
) -> pd.DataFrame:
    """Load and normalise a product catalogue.

    Required columns: ``product_id``, ``title``, ``product_type``; optional: ``image_path``, ``attributes``,
    ``group_id``; any other columns are kept as they are.

    Output columns: ``product_id`` (str, stripped), ``title`` (str, stripped), ``product_type`` (str,
    stripped, lower-cased), ``image_path`` (absolute path, relative ones resolved against the catalogue's
    folder, or None), ``attributes`` (JSON text or None; free text is stored as a JSON string), ``group_id``
    (str or None), then the extra columns. Image files are not checked here (that is the job of
    :func:`~querylife.data.validation.check_dataset` and :func:`~querylife.data.images.load_images`).

    Args:
        skip_bad: drop bad rows instead of raising; for duplicate ids the first good row is kept.
        report: tally of skipped rows (also counts the rows read).

    Raises:
        DataError: unreadable file, missing required column (naming it and the columns found), or, unless
            ``skip_bad``, the first bad row: empty ``product_id``/``title``/``product_type``, duplicate
            ``product_id`` (naming both rows).
    """
    own = report if report is not None else (BadRows() if skip_bad else None)
    out, _, _ = _load_catalog(path, skip_bad=skip_bad, report=own)
    if skip_bad and report is None and own:
        log.warning("%s: %s", out.attrs.get("source"), own.summary())
    return out


# ----------------------------------------------------------------------------------------------------------
# Pairs


def _collapse(text: str) -> str:
    return " ".join(text.split())


def _load_pairs(
    path: str | os.PathLike,
    *,
    catalog: pd.DataFrame | Iterable[str] | None = None,
    label_scheme: LabelScheme | str = "auto",
    skip_bad: bool = False,
    report: BadRows | None = None,
    lenient_scheme: bool = False,
) -> tuple[pd.DataFrame, LabelScheme, np.ndarray]:
    raw, file = _start(path, PAIRS_REQUIRED, report)
    errs = _RowErrors(raw, file, skip_bad, report)
    query = pd.Series([_collapse(t) for t in _text_column(raw["query"])], index=raw.index, dtype=object)
    pid = _text_column(raw["product_id"])
    label = _text_column(raw["label"])

    errs.mark(np.flatnonzero((query == "").to_numpy()), "empty query", "query", "query is empty or missing")
    errs.mark(np.flatnonzero((pid == "").to_numpy()), "empty product_id", "product_id", "product_id is empty")
    errs.mark(np.flatnonzero((label == "").to_numpy()), "empty label", "label", "label is empty or missing")

    # Label scheme: by name, given, or inferred from the distinct label values.
    present = sorted(set(label) - {""})
    if isinstance(label_scheme, LabelScheme):
        scheme = label_scheme
    elif label_scheme.lower() == "auto":
        if not present:
            raise DataError("no labels to infer the label scheme from", file=file, field="label")
        scheme, bad = infer_label_scheme(present)
        if bad and not lenient_scheme:
            first = int(np.flatnonzero((label == bad[0]).to_numpy())[0])
            raise DataError(
                f"cannot decide the label scheme: label {bad[0]!r} does not fit {scheme.describe()} like "
                f"the other labels {present[:8]}; name the scheme (label_scheme=, or --set data.label_scheme= on "
                f"the command line: one of {', '.join(LABEL_SCHEMES)}) or fix the label",
                file=file, row=first + 1, field="label", line=_line_of(raw.attrs, first),
            )
    elif label_scheme.lower() == "graded":
        ok = [v for v in present if _int_like(v)]
        scheme = make_label_scheme("graded", ok or None)
    else:
        scheme = make_label_scheme(label_scheme)

    canon: dict[str, str | None] = {}
    for v in present:
        try:
            canon[v] = scheme.canonical(v)
        except UnknownLabelError:
            canon[v] = None
    allowed = ", ".join(scheme.labels)
    errs.mark(
        [i for i, v in enumerate(label) if v and canon[v] is None],
        "unknown label", "label",
        lambda r: f"unknown label {label.iloc[r]!r}; allowed ({scheme.name}): {allowed}",
    )

    if catalog is not None:
        known = set(catalog["product_id"].astype(str)) if isinstance(catalog, pd.DataFrame) else set(catalog)
        errs.mark(
            [i for i, v in enumerate(pid) if v and v not in known],
            "unknown product", "product_id",
            lambda r: f"product_id {pid.iloc[r]!r} is not in the catalogue",
        )

    # Duplicate (query, product) pairs: same label -> keep the first; conflicting labels -> error.
    seen: dict[tuple[str, str], int] = {}
    conflicts: dict[tuple[str, str], list[int]] = {}
    q_list, p_list, l_list = query.tolist(), pid.tolist(), label.tolist()
    for i in range(len(raw)):
        if i in errs.bad:
            continue
        key = (q_list[i], p_list[i])
        j = seen.get(key)
        if j is None:
            seen[key] = i
        elif canon[l_list[i]] != canon[l_list[j]]:
            conflicts.setdefault(key, [j]).append(i)
        else:
            errs.mark([i], "duplicate pair", "product_id",
                      f"duplicate of row {j + 1} (same query, product and label)")
    for key, rows in conflicts.items():
        labels_txt = ", ".join(f"{l_list[r]!r} on row {r + 1}" for r in rows)
        msg = f"conflicting labels for query {key[0]!r} and product_id {key[1]!r}: {labels_txt}"
        # Which label is right is unknown: when skipping, drop every copy of the pair.
        errs.mark(rows, "conflicting labels", "label", msg)

    keep = errs.finish(soft=frozenset({"duplicate pair"}))

    canon_col = [canon.get(v) for v in label]
    out = pd.DataFrame(
        {
            "query": query,
            "product_id": pid,
            "label": label,
            "gain": [scheme.gains[c] if c is not None else np.nan for c in canon_col],
            "positive": [c in scheme.positive if c is not None else False for c in canon_col],
        },
        index=raw.index,
    )
    for c in raw.columns:
        if c not in PAIRS_REQUIRED and c not in out.columns:
            out[c] = raw[c]
    rows = np.flatnonzero(keep) + 1
    out = out[keep].reset_index(drop=True)
    out["gain"] = out["gain"].astype(float)
    out["positive"] = out["positive"].astype(bool)
    out.attrs = {"source": file, "label_scheme": scheme.name}
    return out, scheme, rows


def _int_like(v: str) -> bool:
    try:
        return float(v).is_integer()
    except ValueError:
        return False


def load_pairs(
    path: str | os.PathLike,
    *,
    catalog: pd.DataFrame | None = None,
    label_scheme: LabelScheme | str = "auto",
    skip_bad: bool = False,
    report: BadRows | None = None,
) -> tuple[pd.DataFrame, LabelScheme]:
    """Load labelled query-product pairs.

    Required columns: ``query``, ``product_id``, ``label``. Output columns: ``query`` (stripped, runs of
    whitespace collapsed to one space), ``product_id`` (str), ``label`` (as given, stripped), ``gain`` (float,
    from the label scheme), ``positive`` (bool), then any extra columns.

    Args:
        catalog: when given, every ``product_id`` must be in it.
        label_scheme: a :class:`LabelScheme`, a scheme name, or ``"auto"`` to pick one from the labels.
        skip_bad: drop bad rows instead of raising. A (query, product) pair with conflicting labels is dropped
            entirely (every copy), as there is no telling which label is right.
        report: tally of skipped rows.

    Exact duplicates (same query, product and label) are always reduced to their first row; they are counted
    in ``report`` as ``duplicate pair``.

    Returns:
        The pairs and the label scheme used.

    Raises:
        DataError: unreadable file, missing column, undecidable label scheme, or (unless ``skip_bad``) the
            first bad row: empty query / product_id / label, unknown label (naming the value and the allowed
            ones), product not in the catalogue, conflicting labels for one pair (naming the rows).
    """
    own = report if report is not None else (BadRows() if skip_bad else None)
    out, scheme, _ = _load_pairs(
        path, catalog=catalog, label_scheme=label_scheme, skip_bad=skip_bad, report=own
    )
    if skip_bad and report is None and own:
        log.warning("%s: %s", out.attrs.get("source"), own.summary())
    return out, scheme
