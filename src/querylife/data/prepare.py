"""Load, validate and split data into the in-memory form training and evaluation use: one path for every source.

``--catalog/--pairs`` files, a ``--data DIR`` in querylife's layout and the public data sets all go through
:func:`load_data` (a :class:`~querylife.data.formats.LoadedData`) and :func:`to_dataset` (splits by
:func:`~querylife.data.splits.choose_splits`, images, messages), so the same files give the same dataset, the
same split rule and the same messages whichever way they were named.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch

from .errors import BadRows, DataError
from .formats import LoadedData, load_format, load_querylife
from .image_urls import ImageFetch
from .images import load_images
from .labels import LabelScheme
from .notes import Notes, warn_text_only
from .splits import choose_splits
from .titles import MAX_TITLE_CHARS

__all__ = [
    "Dataset",
    "assign_query_types",
    "join_text_fields",
    "load_data",
    "prepare_dataset",
    "prepare_from_config",
    "to_dataset",
    "training_positive",
]


@dataclass
class Dataset:
    """A validated catalogue, its images and query-grouped splits of the labelled pairs (see :func:`to_dataset`).

    ``catalog``: one row per product (row number = index into ``images``); ``splits``: "train"/"dev"/"test"
    pair tables with ``gain``, ``positive``, ``product_type`` (the candidate's) and ``query_type`` (the query's
    own type: the most common type among its positive products) columns.
    """

    catalog: pd.DataFrame
    pairs: pd.DataFrame
    splits: dict[str, pd.DataFrame]
    label_scheme: LabelScheme
    images: torch.Tensor  # (N, 3, S, S) uint8; zeros where has_image is False
    has_image: torch.Tensor  # (N,) bool
    text_fields: tuple[str, ...] = ("title",)
    bad_rows: BadRows | None = None
    row_of: dict[str, int] = field(default_factory=dict)
    notes: Notes = field(default_factory=Notes)  # how the data was read and split, and warnings

    def __post_init__(self) -> None:
        if not self.row_of:
            self.row_of = {pid: i for i, pid in enumerate(self.catalog["product_id"])}

    @property
    def product_types(self) -> list[str]:
        return sorted(self.catalog["product_type"].unique().tolist())

    def rows(self, product_ids) -> np.ndarray:
        """Catalogue row numbers of ``product_ids`` (KeyError names an unknown id)."""
        try:
            return np.fromiter((self.row_of[p] for p in product_ids), dtype=np.int64)
        except KeyError as err:
            raise KeyError(f"product_id {err.args[0]!r} is not in the catalogue") from None

    def product_texts(self, rows: np.ndarray | None = None) -> list[str]:
        """The text fed to the title tower: the configured fields joined (empty fields dropped)."""
        return join_text_fields(self.catalog if rows is None else self.catalog.iloc[rows], self.text_fields)


def join_text_fields(catalog: pd.DataFrame, text_fields: tuple[str, ...] = ("title",)) -> list[str]:
    """The product text of each catalogue row: ``text_fields`` joined with " | " (empty fields dropped).

    Example: ``join_text_fields(catalog, ("title", "brand"))`` -> ``["Red dress | Acme", ...]``.
    """
    if tuple(text_fields) == ("title",):
        return catalog["title"].tolist()
    cols = [catalog[f].fillna("").astype(str) for f in text_fields]
    return [" | ".join(p for p in parts if p.strip()) for parts in zip(*cols, strict=True)]


def training_positive(pairs: pd.DataFrame, include_partial: bool = False) -> pd.Series:
    """Which labelled pairs training treats as positives: the ``positive`` ones, or with ``include_partial``
    (``data.include_partial_positives``) every pair with a gain above 0."""
    return (pairs["gain"] > 0) if include_partial else pairs["positive"].astype(bool)


def assign_query_types(pairs: pd.DataFrame) -> pd.Series:
    """Each query's own product type: the most common type among its positives (else among gain > 0, else all)."""

    def pick(group: pd.DataFrame) -> str:
        for sub in (group[group["positive"]], group[group["gain"] > 0], group):
            if len(sub):
                return str(sub["product_type"].mode().sort_values().iloc[0])
        return "unknown"

    types = pairs.groupby("query", sort=False)[["positive", "gain", "product_type"]].apply(pick)
    return pairs["query"].map(types)


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
    load_pixels: bool = True,
) -> Dataset:
    """Build a :class:`Dataset` from a :class:`~querylife.data.formats.LoadedData` (no files are re-read).

    Adds the ``product_type`` and ``query_type`` pair columns, splits by
    :func:`~querylife.data.splits.choose_splits` (the pairs' own ``split`` column when there is one and
    ``official_split`` is on, else at random by ``split_by``), and loads the images. ``Dataset.notes`` gets the
    loading notes, the split rule used and, when no product has an image, a warning that the run is text-only.

    Images: products without an ``image_path`` get a zero image and ``has_image`` False; when no product has one
    (all of the public sets), the zero tensor is one image broadcast over the catalogue (read-only, no memory
    per product). ``load_pixels=False`` skips decoding (every product then counts as without image).

    Raises:
        DataError: a text field that is not a catalogue column, a pair whose product is not in the catalogue,
            a bad ``split`` column, split fractions that cannot be met, or (unless ``skip_bad`` was set when
            loading) an image that cannot be read.
    """
    notes = Notes()
    notes.extend(loaded.notes)
    catalog = loaded.catalog.reset_index(drop=True)
    source = loaded.catalog.attrs.get("source") or loaded.source.get("catalog") or loaded.source.get("path")
    for f in text_fields:
        if f not in catalog.columns:
            raise DataError(f"text field {f!r} (data.text_fields) is not a catalogue column; columns: "
                            f"{list(catalog.columns)}", file=source, field=f)
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

    splits = choose_splits(pairs, split, split_seed, group_by=split_by, own_split=official_split, notes=notes)

    n = len(catalog)
    paths = catalog["image_path"].tolist() if "image_path" in catalog.columns else [None] * n
    if load_pixels and any(isinstance(p, str) and p for p in paths):
        images, has_image = load_images(paths, image_size, skip_bad=bool(loaded.source.get("skip_bad")),
                                        report=loaded.bad_rows, progress=progress)
    else:
        # One zero image broadcast to (N, 3, S, S): ESCI's catalogue would need gigabytes of zeros otherwise.
        # Users index rows (a copy), so the shared storage is never written.
        images = torch.zeros((1, 3, image_size, image_size), dtype=torch.uint8).expand(n, 3, image_size, image_size)
        has_image = torch.zeros(n, dtype=torch.bool)
    if n and not bool(has_image.any()) and load_pixels:
        warn_text_only(notes, "no image path" if all(p is None for p in paths) else "no image could be read")
    return Dataset(catalog, pairs, splits, loaded.label_scheme, images, has_image, tuple(text_fields),
                   loaded.bad_rows, notes=notes)


def load_data(data: Any, *, notes: Notes | None = None, progress: bool = False) -> LoadedData:
    """Read what a ``DataConfig`` names: ``path`` (any of the formats) or ``catalog`` + ``pairs`` files.

    Both go through the same loader for a user's own files (:func:`~querylife.data.formats.load_querylife`),
    with the same column mapping, checks, image handling and messages.

    Raises:
        DataError: no data named, both ``path`` and ``catalog``/``pairs`` named, or anything the loaders raise.
    """
    report = BadRows() if data.skip_bad_rows else None
    common = dict(
        label_scheme=data.label_scheme, relevant_min=data.relevant_min, columns=dict(data.columns),
        official_split=data.official_split, split_by=data.split_by, max_title_chars=data.max_title_chars,
        images=ImageFetch.from_config(data), skip_bad=data.skip_bad_rows, report=report, notes=notes, progress=progress,
    )
    if data.path:
        if data.catalog or data.pairs:
            raise DataError("give either data.path (--data) or data.catalog and data.pairs (--catalog/--pairs), "
                            "not both")
        return load_format(data.path, format=data.format, locale=data.locale, version=data.version,
                           esci_gains=data.esci_gains, **common)
    if not data.catalog or not data.pairs:
        raise DataError("no data: set data.path (--data DIR) or data.catalog and data.pairs (--catalog/--pairs)")
    if data.format not in ("auto", "querylife"):
        raise DataError(f"data.format={data.format} needs data.path (--data); --catalog/--pairs are querylife files")
    return load_querylife(data.catalog, data.pairs, **common)


def prepare_from_config(config: Any, *, progress: bool = True, log: Callable[[str], None] | None = None) -> Dataset:
    """Build the ``Dataset`` an ``ExperimentConfig`` describes (:func:`load_data`, then :func:`to_dataset`).

    ``log``: gets every loading message (columns used, split rule, warnings...) as one line each; without it
    they go to the ``querylife.data`` logger. They are kept in ``Dataset.notes`` either way.
    """
    data, tower = config.data, config.model.tower
    image_size = tower.image_size or tower.small_cnn.image_size
    loaded = load_data(data, progress=progress)
    dataset = to_dataset(
        loaded, image_size=image_size, split=data.split, split_seed=data.split_seed, split_by=data.split_by,
        text_fields=tuple(data.text_fields), progress=progress, official_split=data.official_split,
    )
    dataset.notes.emit(log)
    return dataset


def prepare_dataset(
    catalog_path: str | os.PathLike,
    pairs_path: str | os.PathLike,
    *,
    label_scheme: str | LabelScheme = "auto",
    image_size: int = 64,
    split: tuple[float, float, float] = (0.7, 0.1, 0.2),
    split_seed: int = 0,
    split_by: str = "query",
    skip_bad: bool = False,
    text_fields: tuple[str, ...] = ("title",),
    load_pixels: bool = True,
    progress: bool = True,
    columns: dict[str, str] | None = None,
    official_split: bool = True,
    max_title_chars: int | None = MAX_TITLE_CHARS,
    images: ImageFetch | None = None,
) -> Dataset:
    """:func:`~querylife.data.formats.load_querylife` then :func:`to_dataset`, for a program with two files.

    Errors name the file, row and field (see :mod:`querylife.data.readers`).
    """
    loaded = load_querylife(
        Path(catalog_path), Path(pairs_path), columns=columns, label_scheme=label_scheme,
        official_split=official_split, split_by=split_by, max_title_chars=max_title_chars, images=images,
        skip_bad=skip_bad, report=BadRows() if skip_bad else None, progress=progress,
    )
    return to_dataset(loaded, image_size=image_size, split=split, split_seed=split_seed, split_by=split_by,
                      text_fields=text_fields, progress=progress, official_split=official_split,
                      load_pixels=load_pixels)
