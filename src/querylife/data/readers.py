"""Readers for the product catalogue and the labelled query-product pairs (Parquet, CSV, JSONL).

The loaders return normalised pandas frames and raise :class:`~querylife.data.errors.DataError` for bad
input, naming file, row and field (the file's own column name). With ``skip_bad=True`` they drop bad rows
instead and tally them in a :class:`~querylife.data.errors.BadRows`. Which column feeds which field follows
:mod:`querylife.data.columns` (``data.columns``, then aliases); titles are normalised by
:mod:`querylife.data.titles`; what was mapped, kept, ignored or changed goes to a
:class:`~querylife.data.notes.Notes` when one is given.

Row numbers in messages are 1-based data rows (the CSV header is not a row); for CSV and JSONL the line number
in the file is given too, worked out only when an error is reported so that reading stays fast.
"""

from __future__ import annotations

import csv
import json
import logging
import math
import os
import urllib.parse
import urllib.request
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from .columns import (
    CATALOG_ALIASES,
    CATALOG_OPTIONAL,
    CATALOG_REQUIRED,
    PAIRS_ALIASES,
    PAIRS_OPTIONAL,
    PAIRS_REQUIRED,
    ColumnChoice,
    choose_columns,
    normalise_name,
)
from .errors import BadRows, DataError, UnknownLabelError
from .image_urls import is_url, looks_like_images
from .labels import LABEL_SCHEMES, LabelScheme, infer_label_scheme, label_to_str, make_label_scheme
from .notes import Notes
from .splits import split_value
from .titles import MAX_TITLE_CHARS, normalise_titles

__all__ = [
    "read_table",
    "read_catalog",
    "read_pairs",
    "load_catalog",
    "load_pairs",
    "text_column",
    "collapse_whitespace",
    "TableRead",
    "BadRows",
    "CATALOG_REQUIRED",
    "PAIRS_REQUIRED",
]

log = logging.getLogger(__name__)

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

    def __init__(
        self, df: pd.DataFrame, file: str, skip_bad: bool, report: BadRows | None, columns: ColumnChoice | None = None
    ) -> None:
        self.attrs = df.attrs
        self.file = file
        self.skip_bad = skip_bad
        self.report = report
        self.columns = columns  # messages name the file's own column, not the field it feeds
        self.bad: dict[int, tuple[str, str, str]] = {}  # row0 -> (reason, field, message); first reason wins

    def mark(self, rows: Iterable[int], reason: str, field: str, message) -> None:
        if self.columns is not None:
            field = self.columns.column(field)
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


def text_column(s: pd.Series) -> pd.Series:
    """Column as stripped Python strings, with "" for missing values; ints stay exact (123 -> "123")."""
    if pd.api.types.is_string_dtype(s):  # the common case, vectorised (all values str or missing)
        return s.fillna("").astype(str).str.strip().astype(object)
    return pd.Series([("" if _missing(v) else label_to_str(v)) for v in s], index=s.index, dtype=object)


@dataclass
class TableRead:
    """One file as a reader made it.

    Attributes:
        table: the normalised table (the loader's output).
        rows: the 1-based data row in the file of each row of ``table``.
        raw: the file as read, its columns renamed to the fields they feed and ignored columns dropped (for
            :func:`~querylife.data.validation.check_dataset`).
        columns: which column fed which field, what was kept and ignored.
        file: the file's path as given.
    """

    table: pd.DataFrame
    rows: np.ndarray
    raw: pd.DataFrame
    columns: ColumnChoice
    file: str


def _start(
    path: str | os.PathLike, required: tuple[str, ...], optional: tuple[str, ...], aliases: dict,
    mapping: dict[str, str] | None, report: BadRows | None,
) -> tuple[pd.DataFrame, str, ColumnChoice]:
    df = read_table(path)
    file = df.attrs["source"]
    choice = choose_columns(df.columns, required=required, optional=optional, aliases=aliases, mapping=mapping,
                            file=file)
    attrs = dict(df.attrs)
    df = df.drop(columns=list(choice.ignored)).rename(columns=choice.rename).reset_index(drop=True)
    df.attrs = attrs
    df.attrs["_n_rows"] = len(df)
    if report is not None:
        report.n_rows += len(df)
    return df, file, choice


def _note_columns(notes: Notes | None, choice: ColumnChoice, unused: list[str], what: str) -> None:
    if notes is None:
        return
    name = Path(choice.file).name
    mapped = choice.mapped()
    if mapped:
        notes.info("columns", f"{name}: columns used: {', '.join(mapped)}")
    if choice.ignored:
        shown = ", ".join(f"{c!r} ({why})" for c, why in choice.ignored.items())
        notes.info("ignored-columns", f"{name}: columns ignored: {shown}")
    if unused:
        notes.info("extra-columns", f"{name}: columns kept but not used{what}: {', '.join(unused)}")


# ----------------------------------------------------------------------------------------------------------
# Catalogue


def _image_path(v: Any, base: str) -> str | None:
    if _missing(v):
        return None
    text = str(v).strip()
    if not text:
        return None
    if text.lower().startswith("file://"):
        text = urllib.request.url2pathname(urllib.parse.urlsplit(text).path)
    elif is_url(text):  # fetched (or refused) by querylife.data.image_urls, never silently dropped
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


def attr_columns(columns: Iterable[str]) -> dict[str, str]:
    """``attr_*`` columns -> the attribute name they hold (``attr_colour`` -> ``colour``)."""
    out = {}
    for c in columns:
        norm = normalise_name(c)
        if norm.startswith("attr_") and len(norm) > 5:
            out[c] = str(c).strip()[5:]
    return out


def _merge_attributes(base: pd.Series, raw: pd.DataFrame, attrs: dict[str, str]) -> pd.Series:
    """``attributes`` JSON with the ``attr_*`` columns merged in (they win on a clash; empty cells left out).

    A base value that is not a JSON object is kept under the key ``"attributes"``.
    """
    cols = {key: text_column(raw[c]) for c, key in attrs.items()}
    out = []
    for i, b in enumerate(base):
        obj: dict[str, Any] = {}
        if b is not None:
            parsed = json.loads(b)
            obj = dict(parsed) if isinstance(parsed, dict) else {"attributes": parsed}
        for key, values in cols.items():
            if values.iloc[i]:
                obj[key] = values.iloc[i]
        out.append(json.dumps(obj, ensure_ascii=False) if obj else None)
    return pd.Series(out, index=base.index, dtype=object)


def _warn_unused_image_columns(notes: Notes | None, raw: pd.DataFrame, choice: ColumnChoice, candidates: list[str]
                               ) -> None:
    """Warn when no column feeds image_path while one looks like image paths or URLs."""
    if notes is None or "image_path" in choice.used or "image_path" in choice.disabled:
        return
    for c in candidates:
        values = [v for v in raw[c].head(200).tolist() if not _missing(v) and str(v).strip()][:50]
        if values and looks_like_images(values):
            notes.warn(
                "image-column",
                f"{Path(choice.file).name}: no column is used for image_path, but column {c!r} looks like image paths "
                f"or URLs (e.g. {str(values[0])[:80]!r}): use it with --column image_path={c} "
                f"(data.columns.image_path), or say --column image_path= to train without images",
            )


def read_catalog(
    path: str | os.PathLike,
    *,
    columns: dict[str, str] | None = None,
    skip_bad: bool = False,
    report: BadRows | None = None,
    notes: Notes | None = None,
    max_title_chars: int | None = MAX_TITLE_CHARS,
) -> TableRead:
    """Read and normalise a catalogue; see :func:`load_catalog` (which returns ``TableRead.table``)."""
    raw, file, choice = _start(path, CATALOG_REQUIRED, CATALOG_OPTIONAL, CATALOG_ALIASES, columns, report)
    errs = _RowErrors(raw, file, skip_bad, report, choice)
    pid = text_column(raw["product_id"])
    title, title_stats = normalise_titles(text_column(raw["title"]), max_title_chars)
    ptype = text_column(raw["product_type"])
    pid_col, title_col, type_col = (choice.column(f) for f in ("product_id", "title", "product_type"))

    errs.mark(np.flatnonzero((pid == "").to_numpy()), "empty product_id", "product_id", f"{pid_col} is empty")
    errs.mark(np.flatnonzero((title == "").to_numpy()), "empty title", "title", f"{title_col} is empty or missing")
    errs.mark(
        np.flatnonzero((ptype == "").to_numpy()), "empty product_type", "product_type",
        f"{type_col} is empty or missing",
    )
    # Duplicates among rows that are otherwise fine, so the surviving copy is a good one.
    ok_idx = np.array([i for i in range(len(raw)) if i not in errs.bad], dtype=int)
    ok_ids = pid.iloc[ok_idx]
    first_row = {}
    for i, v in zip(ok_idx, ok_ids, strict=True):
        if v in first_row:
            errs.mark(
                [i], "duplicate product_id", "product_id",
                f"duplicate {pid_col} {v!r}: also on row {first_row[v] + 1}",
            )
        else:
            first_row[v] = int(i)
    keep = errs.finish()

    base = str(Path(file).resolve().parent)

    def optional(col: str, fn) -> pd.Series:
        values = [fn(v) for v in raw[col]] if col in raw.columns else [None] * len(raw)
        # dtype=object: pandas 3 would otherwise infer a string dtype and turn None into NaN.
        return pd.Series(values, index=raw.index, dtype=object)

    attributes = optional("attributes", _attributes)
    attrs = attr_columns(choice.extra)
    if attrs:
        attributes = _merge_attributes(attributes, raw, attrs)
    out = pd.DataFrame(
        {
            "product_id": pid,
            "title": title,
            "product_type": ptype.str.lower().astype(object),
            "image_path": optional("image_path", lambda v: _image_path(v, base)),
            "attributes": attributes,
            "group_id": optional("group_id", lambda v: None if _missing(v) else (label_to_str(v) or None)),
        },
        index=raw.index,
    )
    for c in choice.extra:
        out[c] = raw[c]
    rows = np.flatnonzero(keep) + 1
    out = out[keep].reset_index(drop=True)
    out.attrs = {"source": file}

    if notes is not None:
        name = Path(file).name
        unused = [c for c in choice.extra if c not in attrs]
        _note_columns(notes, choice, unused, " (name them in data.text_fields to add them to the product text)")
        if attrs:
            notes.info("attributes", f"{name}: columns gathered into attributes: {', '.join(attrs)}")
        _warn_unused_image_columns(notes, raw, choice, list(choice.extra))
        for text in title_stats.messages(f"{name}: titles", where=lambda r: f"row {r + 1}"):
            notes.warn("titles", text)
    return TableRead(out, rows, raw, choice, file)


def load_catalog(
    path: str | os.PathLike,
    *,
    columns: dict[str, str] | None = None,
    skip_bad: bool = False,
    report: BadRows | None = None,
    notes: Notes | None = None,
    max_title_chars: int | None = MAX_TITLE_CHARS,
) -> pd.DataFrame:
    """Load and normalise a product catalogue.

    Fields (see :mod:`querylife.data.columns` for how columns are found): ``product_id``, ``title`` and
    ``product_type`` are required; ``image_path``, ``attributes`` and ``group_id`` optional; ``attr_*`` columns
    are gathered into ``attributes``; any other column is kept as it is.

    Output columns: ``product_id`` (str, stripped), ``title`` (normalised by :mod:`querylife.data.titles`:
    control characters to spaces, whitespace collapsed, cut to ``max_title_chars``), ``product_type`` (str,
    stripped, lower-cased), ``image_path`` (absolute path, relative ones resolved against the catalogue's
    folder, ``file://`` URLs turned into paths, ``http(s)://`` URLs kept for :mod:`querylife.data.image_urls`,
    or None), ``attributes`` (JSON text or None; free text is stored as a JSON string), ``group_id`` (str or
    None), then the extra columns. Image files are not checked here (that is the job of
    :func:`~querylife.data.validation.check_dataset` and :func:`~querylife.data.images.load_images`).

    Args:
        columns: ``data.columns``: field -> the file's column.
        skip_bad: drop bad rows instead of raising; for duplicate ids the first good row is kept.
        report: tally of skipped rows (also counts the rows read).
        notes: gets what was mapped, kept, ignored and normalised, and warnings (an unused image-like column,
            titles with control characters or over ``max_title_chars``).

    Raises:
        DataError: unreadable file, missing required column (naming it and the columns found), an ambiguous or
            wrong column mapping, or, unless ``skip_bad``, the first bad row: empty ``product_id``/``title``/
            ``product_type``, duplicate ``product_id`` (naming both rows).
    """
    own = report if report is not None else (BadRows() if skip_bad else None)
    out = read_catalog(path, columns=columns, skip_bad=skip_bad, report=own, notes=notes,
                       max_title_chars=max_title_chars).table
    if skip_bad and report is None and own:
        log.warning("%s: %s", out.attrs.get("source"), own.summary())
    return out


# ----------------------------------------------------------------------------------------------------------
# Pairs


def collapse_whitespace(text: str) -> str:
    """Runs of whitespace as one space, ends stripped (how queries are compared)."""
    return " ".join(text.split())


def read_pairs(
    path: str | os.PathLike,
    *,
    catalog: pd.DataFrame | Iterable[str] | None = None,
    label_scheme: LabelScheme | str = "auto",
    columns: dict[str, str] | None = None,
    split_column: bool = True,
    used_elsewhere: Iterable[str] = (),
    skip_bad: bool = False,
    report: BadRows | None = None,
    notes: Notes | None = None,
    lenient_scheme: bool = False,
) -> tuple[TableRead, LabelScheme]:
    """Read and normalise labelled pairs; see :func:`load_pairs` (which returns ``TableRead.table``).

    ``used_elsewhere``: extra columns that something else uses (the ``data.split_by`` column), left out of the
    "kept but not used" note. ``lenient_scheme``: with ``auto``, labels that fit no scheme together get the
    best-fitting one and count as unknown labels (for the data check) instead of raising.
    """
    raw, file, choice = _start(path, PAIRS_REQUIRED, PAIRS_OPTIONAL, PAIRS_ALIASES, columns, report)
    errs = _RowErrors(raw, file, skip_bad, report, choice)
    query = pd.Series([collapse_whitespace(t) for t in text_column(raw["query"])], index=raw.index, dtype=object)
    pid = text_column(raw["product_id"])
    label = text_column(raw["label"])
    q_col, pid_col, label_col = (choice.column(f) for f in ("query", "product_id", "label"))

    errs.mark(np.flatnonzero((query == "").to_numpy()), "empty query", "query", f"{q_col} is empty or missing")
    errs.mark(np.flatnonzero((pid == "").to_numpy()), "empty product_id", "product_id", f"{pid_col} is empty")
    errs.mark(np.flatnonzero((label == "").to_numpy()), "empty label", "label", f"{label_col} is empty or missing")

    split = None
    if "split" in raw.columns and split_column:
        split_col = choice.column("split")
        texts = text_column(raw["split"])
        split = texts.map(split_value)
        errs.mark(
            np.flatnonzero(split.isna().to_numpy()), "bad split value", "split",
            lambda r: f"split value {texts.iloc[r]!r} is not train, dev or test (also read: training, valid, "
            f"validation, val); fix it, map another column with --column split=COLUMN, or set "
            f"data.official_split=false to ignore {split_col!r}",
        )

    # Label scheme: by name, given, or inferred from the distinct label values.
    present = sorted(set(label) - {""})
    if isinstance(label_scheme, LabelScheme):
        scheme = label_scheme
    elif label_scheme.lower() == "auto":
        if not present:
            raise DataError("no labels to infer the label scheme from", file=file, field=label_col)
        scheme, bad = infer_label_scheme(present)
        if bad and not lenient_scheme:
            first = int(np.flatnonzero((label == bad[0]).to_numpy())[0])
            raise DataError(
                f"cannot decide the label scheme: label {bad[0]!r} does not fit {scheme.describe()} like "
                f"the other labels {present[:8]}; name the scheme (label_scheme=, or --set data.label_scheme= on "
                f"the command line: one of {', '.join(LABEL_SCHEMES)}) or fix the label",
                file=file, row=first + 1, field=label_col, line=_line_of(raw.attrs, first),
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
            lambda r: f"{pid_col} {pid.iloc[r]!r} is not in the catalogue",
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
    if split is not None:
        out["split"] = split.astype(object)
    for c in raw.columns:
        if c not in PAIRS_REQUIRED and c not in out.columns:
            out[c] = raw[c]
    rows = np.flatnonzero(keep) + 1
    out = out[keep].reset_index(drop=True)
    out["gain"] = out["gain"].astype(float)
    out["positive"] = out["positive"].astype(bool)
    out.attrs = {"source": file, "label_scheme": scheme.name}

    used = set(used_elsewhere)
    unused = [c for c in choice.extra if c not in used]
    if "split" in choice.used and not split_column:
        unused.insert(0, choice.used["split"] + " (data.official_split is off)")
    _note_columns(notes, choice, unused, "")
    return TableRead(out, rows, raw, choice, file), scheme


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
    columns: dict[str, str] | None = None,
    split_column: bool = True,
    skip_bad: bool = False,
    report: BadRows | None = None,
    notes: Notes | None = None,
) -> tuple[pd.DataFrame, LabelScheme]:
    """Load labelled query-product pairs.

    Fields (see :mod:`querylife.data.columns`): ``query``, ``product_id``, ``label`` required; ``split``
    optional. Output columns: ``query`` (stripped, runs of whitespace collapsed to one space), ``product_id``
    (str), ``label`` (as given, stripped), ``gain`` (float, from the label scheme), ``positive`` (bool), ``split``
    (``train``/``dev``/``test``, when the file has one and ``split_column``), then any extra columns.

    Args:
        catalog: when given, every ``product_id`` must be in it.
        label_scheme: a :class:`LabelScheme`, a scheme name, or ``"auto"`` to pick one from the labels.
        columns: ``data.columns``: field -> the file's column.
        split_column: read the ``split`` column as the pairs' own split (``data.official_split``): every value
            must be train / dev / test (``training``, ``valid``, ``validation``, ``val`` are read too). Off: the
            column is kept as it is, unchecked.
        skip_bad: drop bad rows instead of raising. A (query, product) pair with conflicting labels is dropped
            entirely (every copy), as there is no telling which label is right.
        report: tally of skipped rows.
        notes: gets what was mapped, kept and ignored.

    Exact duplicates (same query, product and label) are always reduced to their first row; they are counted
    in ``report`` as ``duplicate pair``.

    Returns:
        The pairs and the label scheme used.

    Raises:
        DataError: unreadable file, missing column, undecidable label scheme, or (unless ``skip_bad``) the
            first bad row: empty query / product_id / label, unknown label (naming the value and the allowed
            ones), a split value other than train / dev / test, product not in the catalogue, conflicting labels
            for one pair (naming the rows).
    """
    own = report if report is not None else (BadRows() if skip_bad else None)
    read, scheme = read_pairs(
        path, catalog=catalog, label_scheme=label_scheme, columns=columns, split_column=split_column,
        skip_bad=skip_bad, report=own, notes=notes,
    )
    out = read.table
    if skip_bad and report is None and own:
        log.warning("%s: %s", out.attrs.get("source"), own.summary())
    return out, scheme
