"""Products without a photo, scored as if they showed a typical photo of their type
(``model.fusion.missing_image="type_mean"``).

With ``"title"`` (the behaviour before this option, and in training) a product without a photo gets image weight
0: its score is the title's cosine alone. For a type whose attributes are in the photo (a mug's colour) that score
is on another footing than the fused scores of the type's photo products: it said nothing about the colour, yet on
the `media_market` storefront it ranked the photo-less mugs above most photo mugs for a colour query
(docs/TUNING.md, "Fusion across storefronts"). Here each product type gets the mean image vector of its training
products that have a photo (normalised), computed once after training from the selected epoch's vectors; a
photo-less product of that type then takes this vector and the gate's weight like any other product. Types without
any photo in training keep the title-only fallback. Training itself is unchanged (the vectors are filled only after
it), and so is every product that has a photo.

Example::

    fit = fit_missing_images(model, data, data.splits["train"], cache)
    fit.photos  # {"mug": 312, "umbrella": 290, ...}: photos averaged per type
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd
import torch
import torch.nn.functional as F

from .data.prepare import Dataset
from .model import QueryLifeModel
from .scoring import FeatureCache, encode_products

__all__ = ["MissingImageFit", "fit_missing_images"]


@dataclass
class MissingImageFit:
    """What :func:`fit_missing_images` set: ``photos`` (product type -> photos averaged), ``title_only`` (types
    with no photo among the products, which keep the title-only fallback) and ``filled``: the catalogue's products
    without a photo that now get their type's vector (0 when every product has a photo: nothing changes)."""

    photos: dict[str, int]
    title_only: list[str]
    filled: int = 0


@torch.no_grad()
def fit_missing_images(
    model: QueryLifeModel,
    data: Dataset,
    pairs: pd.DataFrame,
    cache: FeatureCache | None = None,
    *,
    batch_size: int = 512,
) -> MissingImageFit:
    """Set each product type's vector for photo-less products to the normalised mean image vector of the distinct
    products of ``pairs`` (the training split) that have a photo, in ``model``'s fusion.

    Raises ``ValueError`` when the model was not built with ``model.fusion.missing_image="type_mean"`` or ``pairs``
    is empty. Uses no label: only which products the training pairs name.
    """
    fusion = model.fusion
    if not hasattr(fusion, "missing_ready"):
        raise ValueError('fitting photo-less products\' vectors needs model.fusion.missing_image="type_mean" and a '
                         "mode with a title part and photos (not title or image)")
    if pairs is None or not len(pairs):
        raise ValueError("fitting photo-less products' vectors needs the training pairs; none were given")
    rows = np.unique(data.rows(pairs["product_id"]))
    fusion.missing_ready.zero_()  # the photo products' own vectors, never earlier filled ones
    vecs = encode_products(model, data, rows, cache or FeatureCache(), batch_size)
    has = data.has_image[torch.from_numpy(rows)].bool()  # (N,) a real photo
    n_types = len(model.types)
    counts = torch.bincount(vecs.type_ids[has], minlength=n_types)  # (T,)
    sums = torch.zeros(n_types, vecs.v.shape[1], dtype=torch.float64)  # (T, D)
    sums.index_add_(0, vecs.type_ids[has], vecs.v[has].double())
    ready = counts > 0  # (T,)
    means = F.normalize(sums.float(), dim=-1)  # (T, D); zero rows stay zero
    fusion.missing_vector.copy_(means.to(fusion.missing_vector.device))
    fusion.missing_ready.copy_(ready.to(fusion.missing_ready.device))
    seen = set(vecs.type_ids.tolist())
    photos = {model.types[k]: int(counts[k]) for k in range(n_types) if counts[k] > 0}
    title_only = [model.types[k] for k in sorted(seen) if counts[k] == 0]
    catalogue_types = model.type_ids(data.catalog["product_type"].tolist()).cpu()  # (n_products,)
    filled = int((~data.has_image.bool() & ready[catalogue_types]).sum())
    return MissingImageFit(photos, title_only, filled)
