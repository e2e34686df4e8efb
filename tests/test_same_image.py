"""loss.mask_same_image: products whose photo has the positive's pixels are not negatives in the image terms."""

import numpy as np
import pytest
import torch

from querylife.batches import NegativeMasks, same_image_groups
from querylife.config import with_overrides
from querylife.data.prepare import prepare_dataset
from querylife.losses import LossConfig
from querylife.train import Trainer


def _images(values: list[int]) -> torch.Tensor:
    return torch.stack([torch.full((3, 4, 4), v, dtype=torch.uint8) for v in values])  # (N, 3, 4, 4)


def test_groups_are_equal_exactly_for_equal_tower_inputs():
    images = _images([5, 5, 7, 0, 0, 0])
    images[2, 0, 0, 0] = 8  # one pixel differs: another photo
    has = torch.tensor([True, True, True, True, False, False])  # row 3: a black photo; 4 and 5: no photo
    g = same_image_groups(images, has)
    assert g.shape == (6,) and g.dtype == np.int64
    assert g[0] == g[1] and g[4] == g[5]
    assert len({g[0], g[2], g[3], g[4]}) == 4  # a black photo is not "no photo"
    with pytest.raises(ValueError, match="has_image"):
        same_image_groups(images, has[:5])


def _masks(groups=None, **loss) -> NegativeMasks:
    ids = np.array([f"p{i}" for i in range(5)])
    return NegativeMasks(LossConfig(**loss), ids, {("q0", "p1")}, image_groups=groups)


def test_masks_leave_same_photo_products_out_of_the_image_terms_only():
    groups = np.array([0, 0, 1, 1, 2])  # p0/p1 share a photo, p2/p3 another
    rows, cols = np.array([0, 2]), np.array([0, 2, 1, 3, 4])
    m = _masks(groups).masks(["q0", "q2"], rows, cols)
    plain = _masks().masks(["q0", "q2"], rows, cols)
    assert plain.image_ignore is None and torch.equal(m.ignore, plain.ignore)
    assert m.ignore.tolist() == [[True, False, True, False, False], [False, True, False, False, False]]
    # Row 0 (p0): p1 is labelled positive and shows its photo; row 1 (p2): p3 shows its photo.
    assert m.image_ignore.tolist() == [[True, False, True, False, False], [False, True, False, True, False]]
    same = torch.from_numpy(groups[cols][:, None] == groups[cols][None, :])
    assert torch.equal(m.product_ignore, same | plain.product_ignore) and not torch.equal(same, plain.product_ignore)
    with pytest.raises(ValueError, match="image groups"):
        _masks(groups[:3])


def test_the_note_counts_products_sharing_a_photo():
    assert _masks().image_note() is None
    note = _masks(np.array([0, 0, 0, 1, 2])).image_note()
    assert "3 of 5 products (60.0%)" in note and "1 shared photos, the largest on 3" in note


@pytest.fixture(scope="module")
def shared_data(tiny_store):
    """The tiny storefront with one photo shown by every product of its first type."""
    data = prepare_dataset(tiny_store.catalog_path, tiny_store.pairs_path, image_size=32, progress=False)
    rows = np.flatnonzero(data.catalog["product_type"].to_numpy() == data.product_types[0])
    data.images[torch.from_numpy(rows)] = data.images[rows[0]].clone()
    data.has_image[torch.from_numpy(rows)] = True
    return data, rows


def test_a_training_step_masks_the_image_terms_and_nothing_else(tiny_config, shared_data, tmp_path, capsys):
    data, rows = shared_data
    cfg = with_overrides(tiny_config, {"train.batch_size": 64})
    off = Trainer(cfg, data, tmp_path / "off", progress=False)
    on = Trainer(with_overrides(cfg, {"loss.mask_same_image": True}), data, tmp_path / "on", progress=True)
    batch = next(off.batches.epoch(0))
    m = on.masks(batch)
    shared = np.isin(batch.product_rows, rows)
    expect = torch.from_numpy(shared[: batch.size, None] & shared[None, :]) | off.masks(batch).ignore
    assert shared[: batch.size].sum() >= 2 and torch.equal(m.image_ignore, expect)
    a, b = off.training_step(batch), on.training_step(batch)
    assert a.query_fused == b.query_fused and a.query_title == b.query_title  # same start, same batch
    assert b.query_image < a.query_image and b.title_image < a.title_image  # fewer (identical) negatives
    on.fit()
    assert f"{len(rows)} of {len(data.catalog)} products" in capsys.readouterr().out
