"""Load, validate and split a catalogue + labelled pairs into the in-memory form training and evaluation use."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd
import torch

from .images import load_images
from .readers import BadRows, load_catalog, load_pairs
from .schemas import LabelScheme
from .splits import split_by_query


@dataclass
class Dataset:
    """A validated catalogue, its images and query-grouped splits of the labelled pairs.

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
        cat = self.catalog if rows is None else self.catalog.iloc[rows]
        if self.text_fields == ("title",):
            return cat["title"].tolist()
        cols = [cat[f].fillna("").astype(str) for f in self.text_fields]
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


def prepare_dataset(
    catalog_path: str | Path,
    pairs_path: str | Path,
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
) -> Dataset:
    """Read, validate, split and load images. Errors name the file, row and field (see ``data.readers``)."""
    report = BadRows() if skip_bad else None
    catalog = load_catalog(catalog_path, skip_bad=skip_bad, report=report)
    pairs, scheme = load_pairs(pairs_path, catalog=catalog, label_scheme=label_scheme, skip_bad=skip_bad, report=report)
    for f in text_fields:
        if f not in catalog.columns:
            raise ValueError(f"{catalog_path}: text field {f!r} is not a catalogue column ({list(catalog.columns)})")
    catalog = catalog.reset_index(drop=True)
    pairs = pairs.copy()
    pairs["product_type"] = pairs["product_id"].map(
        dict(zip(catalog["product_id"], catalog["product_type"], strict=True))
    )
    pairs["query_type"] = assign_query_types(pairs)
    splits = split_by_query(pairs, fractions=split, seed=split_seed, group_by=split_by)
    paths = catalog["image_path"].tolist() if "image_path" in catalog.columns else [None] * len(catalog)
    if load_pixels:
        images, has_image = load_images(paths, image_size, skip_bad=skip_bad, report=report, progress=progress)
    else:
        images = torch.zeros((len(catalog), 3, image_size, image_size), dtype=torch.uint8)
        has_image = torch.zeros(len(catalog), dtype=torch.bool)
    return Dataset(catalog, pairs, splits, scheme, images, has_image, tuple(text_fields), report)


def prepare_from_config(config, *, progress: bool = True) -> Dataset:
    """Build the ``Dataset`` an ``ExperimentConfig`` describes: catalog + pairs files, or a public data set."""
    data, tower = config.data, config.model.tower
    image_size = tower.image_size or tower.small_cnn.image_size
    if data.path:
        from .formats import load_format, to_dataset

        report = BadRows() if data.skip_bad_rows else None
        loaded = load_format(
            data.path,
            format=data.format,
            locale=data.locale,
            version=data.version,
            esci_gains=data.esci_gains,
            relevant_min=data.relevant_min,
            label_scheme=data.label_scheme,
            skip_bad=data.skip_bad_rows,
            report=report,
        )
        return to_dataset(
            loaded, image_size=image_size, split=data.split, split_seed=data.split_seed, split_by=data.split_by,
            text_fields=tuple(data.text_fields), progress=progress, official_split=data.official_split,
        )
    if not data.catalog or not data.pairs:
        raise ValueError("no data: set data.path (a public data set) or data.catalog and data.pairs")
    return prepare_dataset(
        data.catalog,
        data.pairs,
        label_scheme=data.label_scheme,
        image_size=image_size,
        split=data.split,
        split_seed=data.split_seed,
        split_by=data.split_by,
        skip_bad=data.skip_bad_rows,
        text_fields=tuple(data.text_fields),
        progress=progress,
    )
