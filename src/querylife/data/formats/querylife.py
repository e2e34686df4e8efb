"""querylife's own layout: a catalogue file and a pairs file (Parquet, CSV/TSV or JSONL), anywhere or in one folder.

:func:`load_querylife` is the one loader for a user's files, whether they were named with ``--catalog`` /
``--pairs`` or as a folder holding ``catalog.*`` and ``pairs.*`` (``--data DIR``): same column mapping, same
checks, same image handling, same messages. It reads with :func:`~querylife.data.readers.read_catalog` and
:func:`~querylife.data.readers.read_pairs` (so their checks apply, including that conflicting labels are an
error) and fetches or refuses image URLs with :func:`~querylife.data.image_urls.localise_image_urls`.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path

import pandas as pd

from ..errors import BadRows, DataError
from ..image_urls import ImageFetch, localise_image_urls
from ..labels import LabelScheme, make_graded_scheme
from ..notes import Notes
from ..readers import read_catalog, read_pairs
from ..titles import MAX_TITLE_CHARS
from .common import QUERYLIFE_SUFFIXES, LoadedData, listing

__all__ = ["load_querylife", "querylife_files", "querylife_dir_files"]


def querylife_files(d: Path) -> tuple[Path | None, Path | None]:
    """The ``catalog.*`` and ``pairs.*`` files of folder ``d`` (None for a missing one)."""

    def one(stem: str) -> Path | None:
        hits = sorted(
            p for p in d.glob(stem + ".*")
            if p.is_file() and any(p.name.lower().removesuffix(".gz").endswith(s) for s in QUERYLIFE_SUFFIXES)
        )
        if len(hits) > 1:
            raise DataError(f"several {stem} files: {[h.name for h in hits]}; keep one", file=str(d))
        return hits[0] if hits else None

    return one("catalog"), one("pairs")


def querylife_dir_files(path: Path) -> tuple[Path, Path]:
    """Both files of a querylife folder, or a DataError saying what is missing and what is there."""
    if not path.is_dir():
        raise DataError("the querylife format is a directory holding catalog.* and pairs.*; got a file "
                        "(use --catalog / --pairs for separate files)", file=str(path))
    catalog_file, pairs_file = querylife_files(path)
    if catalog_file is None or pairs_file is None:
        missing = [n for n, f in (("catalog.*", catalog_file), ("pairs.*", pairs_file)) if f is None]
        raise DataError(f"not a querylife directory: no {' or '.join(missing)} (.parquet, .csv, .tsv or .jsonl); "
                        f"found {listing(path)}", file=str(path))
    return catalog_file, pairs_file


def load_querylife(
    catalog_path: str | os.PathLike,
    pairs_path: str | os.PathLike,
    *,
    columns: Mapping[str, str] | None = None,
    label_scheme: str | LabelScheme = "auto",
    relevant_min: int | None = None,
    official_split: bool = True,
    split_by: str = "query",
    max_title_chars: int | None = MAX_TITLE_CHARS,
    images: ImageFetch | None = None,
    skip_bad: bool = False,
    report: BadRows | None = None,
    notes: Notes | None = None,
    progress: bool = False,
) -> LoadedData:
    """Read a catalogue and its labelled pairs into a :class:`LoadedData`.

    Args:
        columns: ``data.columns``: field -> the files' column (see :mod:`querylife.data.columns`).
        label_scheme: passed to :func:`~querylife.data.readers.read_pairs`.
        relevant_min: for graded labels, the lowest grade that counts as positive.
        official_split: read the pairs' ``split`` column as their own split (checked: train / dev / test).
        split_by: the column the split groups by (only to leave it out of the "not used" note).
        max_title_chars: titles are cut to this many characters (see :mod:`querylife.data.titles`).
        images: whether image URLs are downloaded (default: refused with instructions).
        skip_bad: drop bad rows (and leave products whose URL cannot be fetched without an image), counted
            in ``report``.
        notes: gets the loading messages (one is made when None; either way it is ``LoadedData.notes``).

    Raises:
        DataError: naming the file, row and field; see :func:`~querylife.data.readers.load_catalog`,
            :func:`~querylife.data.readers.load_pairs` and :func:`~querylife.data.image_urls.localise_image_urls`.
    """
    notes = notes if notes is not None else Notes()
    own = report if report is not None else (BadRows() if skip_bad else None)
    mapping = dict(columns or {})
    cat = read_catalog(catalog_path, columns=mapping, skip_bad=skip_bad, report=own, notes=notes,
                       max_title_chars=max_title_chars)
    pairs_read, scheme = read_pairs(
        pairs_path, catalog=cat.table, label_scheme=label_scheme, columns=mapping, split_column=official_split,
        used_elsewhere=(split_by,), skip_bad=skip_bad, report=own, notes=notes,
    )
    if "product_id" in mapping and mapping["product_id"] and mapping["product_id"] not in (
        cat.columns.used.get("product_id"), pairs_read.columns.used.get("product_id")
    ):
        raise DataError(f"data.columns maps product_id to {mapping['product_id']!r}, but neither file has that "
                        f"column (catalogue: {list(cat.raw.columns)}, pairs: {list(pairs_read.raw.columns)})")
    catalog, pairs = cat.table, pairs_read.table
    if relevant_min is not None:
        if not scheme.name.startswith("graded"):
            raise DataError(f"relevant_min applies to graded labels; the labels use the {scheme.name} scheme",
                            file=str(pairs_path), field="label")
        scheme = make_graded_scheme((int(k) for k in scheme.gains), relevant_min, scheme.name)
        pairs["positive"] = [scheme.is_positive(v) for v in pairs["label"]]
    fetch = images or ImageFetch()
    paths = localise_image_urls(
        catalog["image_path"].tolist(), fetch=fetch, file=cat.file, column=cat.columns.column("image_path"),
        rows=cat.rows.tolist(), skip_bad=skip_bad, report=own, notes=notes, progress=progress,
    )
    catalog["image_path"] = pd.Series(paths, index=catalog.index, dtype=object)
    source = {"catalog": str(catalog_path), "pairs": str(pairs_path), "skip_bad": skip_bad, "merged_duplicates": 0}
    if mapping:
        source["columns"] = mapping
    catalog.attrs = {"source": str(catalog_path), "format": "querylife"}
    pairs.attrs = {"source": str(pairs_path), "format": "querylife", "label_scheme": scheme.name}
    return LoadedData(catalog, pairs, scheme, "querylife", source, own, notes)
