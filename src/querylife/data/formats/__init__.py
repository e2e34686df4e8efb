"""Readers for data sets in their own layouts, each giving querylife's normalised catalogue and pairs.

:func:`load_format` reads one of the :data:`FORMATS` and returns a :class:`LoadedData` whose ``catalog`` and
``pairs`` have the same columns and normalisation as :func:`~querylife.data.readers.load_catalog` and
:func:`~querylife.data.readers.load_pairs`; :func:`~querylife.data.prepare.to_dataset` turns it into a
:class:`~querylife.data.prepare.Dataset` without reading the files again. :func:`detect_format` tells the
formats apart by file names and columns. One module per data set (``crowdflower``, ``esci``, ``wands``,
``querylife``); ``common`` holds what they share. None of the public sets has images: ``image_path`` is always
None and every product gets a zero image with ``has_image`` False.

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
  :class:`~querylife.data.errors.DataError` naming the file, row (or product id) and field, or, with
  ``skip_bad=True``, are dropped and tallied in ``report`` (a :class:`~querylife.data.errors.BadRows`).
* Titles are normalised by :mod:`querylife.data.titles` (control characters, whitespace, ``max_title_chars``).

Each format's module docstring gives its column mapping: :mod:`.crowdflower`, :mod:`.esci`, :mod:`.wands`.

``querylife`` -- a directory with ``catalog.*`` and ``pairs.*`` (Parquet, CSV/TSV or JSONL), read by
:func:`~querylife.data.formats.querylife.load_querylife`, the same loader as ``--catalog`` / ``--pairs``.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Mapping
from pathlib import Path

from ..errors import BadRows, DataError
from ..image_urls import ImageFetch
from ..labels import LabelScheme
from ..notes import Notes
from ..titles import MAX_TITLE_CHARS, normalise_titles
from .common import LoadedData, file_columns, listing
from .crowdflower import CROWDFLOWER_COLUMNS, crowdflower_csvs, crowdflower_product_id, load_crowdflower
from .esci import ESCI_EXAMPLE_COLUMNS, ESCI_EXAMPLES_FILE, ESCI_PRODUCTS_FILE, esci_dir, load_esci
from .querylife import load_querylife, querylife_dir_files, querylife_files
from .wands import WANDS_FILES, load_wands, wands_dir

__all__ = [
    "FORMATS",
    "LoadedData",
    "detect_format",
    "load_format",
    "load_querylife",
    "querylife_dir_files",
    "crowdflower_product_id",
    "CROWDFLOWER_COLUMNS",
    "ESCI_EXAMPLES_FILE",
    "ESCI_PRODUCTS_FILE",
    "WANDS_FILES",
]

log = logging.getLogger(__name__)


FORMATS = ("querylife", "crowdflower", "esci", "wands")


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
        if esci_dir(p):
            return "esci"
        if wands_dir(p):
            return "wands"
        catalog, pairs = querylife_files(p)
        if catalog and pairs:
            return "querylife"
        cf = crowdflower_csvs(p)
        if len(cf) == 1:
            return "crowdflower"
        hint = f"; several CrowdFlower CSVs {[c.name for c in cf]}: pass one of them" if cf else ""
        raise DataError(
            f"directory is in none of the known formats ({', '.join(FORMATS)}): expected {ESCI_EXAMPLES_FILE} "
            f"(esci), {'/'.join(WANDS_FILES)} (wands), one CrowdFlower CSV, or catalog.* and pairs.* (querylife); "
            f"found {listing(p)}{hint}",
            file=str(p),
        )
    name = p.name.lower()
    if name in (ESCI_EXAMPLES_FILE, ESCI_PRODUCTS_FILE):
        return "esci"
    if name in WANDS_FILES and wands_dir(p.parent):
        return "wands"
    cols = file_columns(p)
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


def load_format(
    path: str | os.PathLike,
    *,
    format: str = "auto",
    locale: str = "us",
    version: str = "small",
    esci_gains: Mapping[str, float] | None = None,
    relevant_min: int | None = None,
    label_scheme: str | LabelScheme = "auto",
    columns: Mapping[str, str] | None = None,
    official_split: bool = True,
    split_by: str = "query",
    max_title_chars: int | None = MAX_TITLE_CHARS,
    images: ImageFetch | None = None,
    skip_bad: bool = False,
    report: BadRows | None = None,
    notes: Notes | None = None,
    progress: bool = False,
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
        label_scheme, columns, official_split, split_by, images: querylife only: passed to
            :func:`~querylife.data.formats.querylife.load_querylife` (the public sets have fixed layouts).
        max_title_chars: titles are cut to this many characters (:mod:`querylife.data.titles`).
        skip_bad: drop bad rows (counted in ``report``) instead of raising.
        report: tally of skipped and merged rows; one is made when ``skip_bad`` and none is given.
        notes: gets the loading messages (``LoadedData.notes`` either way).
        progress: a progress bar while image URLs are downloaded.

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
    if columns and fmt != "querylife":
        raise DataError(f"data.columns applies to your own catalogue and pairs files, not to the {fmt} format "
                        "(its columns are fixed)")
    own = report if report is not None else (BadRows() if skip_bad else None)
    notes = notes if notes is not None else Notes()

    if fmt == "querylife":
        catalog_file, pairs_file = querylife_dir_files(p)
        loaded = load_querylife(
            catalog_file, pairs_file, columns=columns, label_scheme=label_scheme, relevant_min=relevant_min,
            official_split=official_split, split_by=split_by, max_title_chars=max_title_chars, images=images,
            skip_bad=skip_bad, report=own, notes=notes, progress=progress,
        )
        catalog, pairs, scheme, source = loaded.catalog, loaded.pairs, loaded.label_scheme, loaded.source
    else:
        if fmt == "crowdflower":
            catalog, pairs, scheme, source = load_crowdflower(p, relevant_min=relevant_min, skip_bad=skip_bad,
                                                              report=own)
        elif fmt == "esci":
            catalog, pairs, scheme, source = load_esci(p, locale=locale, version=version, esci_gains=esci_gains,
                                                       skip_bad=skip_bad, report=own)
        else:
            catalog, pairs, scheme, source = load_wands(p, skip_bad=skip_bad, report=own)
        catalog["title"], stats = normalise_titles(catalog["title"], max_title_chars)
        ids = catalog["product_id"]
        for text in stats.messages(f"{p.name}: titles", where=lambda r: f"product_id {ids.iloc[r]!r}"):
            notes.warn("titles", text)
    if not len(pairs):
        raise DataError(f"no labelled pairs left to use ({fmt} format)", file=str(p))
    source = {"path": str(p), "format": fmt, "skip_bad": skip_bad, **source}
    if source.get("merged_duplicates"):
        notes.info("merged", f"{p.name}: merged {source['merged_duplicates']} duplicate judgements of the same "
                             "(query, product)")
    if skip_bad and report is None and own:
        log.warning("%s: %s", p, own.summary())
    catalog.attrs = {"source": str(p), "format": fmt}
    pairs.attrs = {"source": str(p), "format": fmt, "label_scheme": scheme.name}
    return LoadedData(catalog, pairs, scheme, fmt, source, own, notes)
