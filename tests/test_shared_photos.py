"""benchmarks/fusion_storefronts.py --shared-photo-as-missing: a photo shown by K+ distinct products is treated as
missing (has_image False, zero pixels), so every later step (feature cache, training, scoring) sees no image there."""

from __future__ import annotations

import sys
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pandas as pd
import pytest
import torch

BENCHMARKS = Path(__file__).resolve().parents[1] / "benchmarks"


@pytest.fixture(scope="module")
def rule():
    sys.path.insert(0, str(BENCHMARKS))
    try:
        import fusion_storefronts

        yield fusion_storefronts.shared_photos_as_missing
    finally:
        sys.path.remove(str(BENCHMARKS))


def _data(group_ids: list[str] | None = None) -> SimpleNamespace:
    """Seven products: an icon on books b1-b3 (three groups), one photo on a duplicate listing pair (one group),
    two photos of their own, one product without a photo."""
    colours = [1, 1, 1, 2, 2, 3, 0]  # pixel value of each product's photo; 0: none
    images = torch.stack([torch.full((3, 4, 4), c, dtype=torch.uint8) for c in colours])  # (7, 3, 4, 4)
    catalog = pd.DataFrame(
        {
            "product_id": [f"p{i}" for i in range(7)],
            "product_type": ["book", "book", "book", "dress", "dress", "dress", "book"],
        }
    )
    if group_ids is not None:
        catalog["group_id"] = group_ids
    return SimpleNamespace(catalog=catalog, images=images, has_image=torch.tensor([True] * 6 + [False]))


def test_icon_shared_by_distinct_products_becomes_missing(rule) -> None:
    data = _data(["g1", "g2", "g3", "g4", "g4", "g5", "g6"])
    got = rule(data, 3)
    assert got.flagged.tolist() == [True, True, True, False, False, False, False]
    assert data.has_image.tolist() == [False, False, False, True, True, True, False]
    assert int(data.images[:3].sum()) == 0 and int(data.images[3].sum()) == 2 * 48  # others keep their pixels
    assert got.photos == 1
    assert got.by_type["book"] == {"products": 4, "flagged": 3, "share": 0.75, "photos": 1}
    assert got.by_type["dress"]["flagged"] == 0
    assert "book: 3/4 products (75.0%)" in "\n".join(got.lines())


def test_duplicate_listings_count_once_per_group(rule) -> None:
    data = _data(["g1", "g2", "g3", "g4", "g4", "g5", "g6"])
    assert rule(data, 2).flagged.tolist() == [True, True, True, False, False, False, False]  # g4's pair: one product


def test_without_group_ids_products_are_counted(rule) -> None:
    data = _data()
    assert rule(data, 2).flagged.tolist() == [True, True, True, True, True, False, False]
    assert not rule(_data(), 4).flagged.any()


def test_threshold_below_two_is_refused(rule) -> None:
    with pytest.raises(ValueError, match="at least 2"):
        rule(_data(), 1)


def test_nothing_shared_changes_nothing(rule) -> None:
    data = _data(["g1", "g2", "g3", "g4", "g4", "g5", "g6"])
    before = data.images.clone(), data.has_image.clone()
    assert rule(data, 4).photos == 0
    assert torch.equal(data.images, before[0]) and torch.equal(data.has_image, before[1])
    assert np.array_equal(rule(data, 4).flagged, np.zeros(7, bool))
