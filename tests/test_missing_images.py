"""Products without an image through the whole path: data, model, training, scoring, evaluation."""

import numpy as np
import pandas as pd
import pytest

from querylife.config import with_overrides
from querylife.data.prepare import prepare_dataset
from querylife.evaluate import evaluate_model
from querylife.scoring import score_pairs
from querylife.train import Trainer


@pytest.fixture(scope="module")
def partly_imageless(tiny_store, tmp_path_factory):
    """The tiny storefront with 40% of the image paths removed and one pointing at a file that does not exist."""
    out = tmp_path_factory.mktemp("imageless")
    catalog = pd.read_parquet(tiny_store.catalog_path)
    catalog["image_path"] = [str(tiny_store.out_dir / p) for p in catalog["image_path"]]
    rng = np.random.default_rng(0)
    catalog.loc[rng.random(len(catalog)) < 0.4, "image_path"] = None
    catalog.loc[catalog.index[catalog["image_path"].notna()][0], "image_path"] = str(out / "gone.png")
    catalog.to_parquet(out / "catalog.parquet")
    return out / "catalog.parquet"


def test_missing_images_train_and_evaluate_without_nans(partly_imageless, tiny_store, tiny_config, tmp_path):
    data = prepare_dataset(partly_imageless, tiny_store.pairs_path, image_size=32, skip_bad=True, progress=False)
    assert 0 < int(data.has_image.sum()) < len(data.catalog)
    assert data.bad_rows.total >= 1  # the missing file was skipped and counted, not fatal
    assert (data.images[~data.has_image] == 0).all()
    cfg = with_overrides(tiny_config, {"data.catalog": str(partly_imageless), "data.skip_bad_rows": True})
    result = Trainer(cfg, data, tmp_path / "run", progress=False).fit()
    assert all(np.isfinite(h["train_loss"]) for h in result.history)
    scores = score_pairs(result.model, data, data.splits["test"])
    assert np.isfinite(scores.score).all()
    rows = data.rows(data.splits["test"]["product_id"])
    no_image = ~data.has_image.numpy()[rows]
    # The default (missing_image="type_mean") gives a photo-less product its type's typical photo and the gate's
    # weight; without the fitted vectors the gate falls back to the title (weight 0), as missing_image="title" does.
    assert no_image.any() and (scores.image_weight[no_image] > 0).all()
    ready = result.model.fusion.missing_ready.clone()
    result.model.fusion.missing_ready.zero_()
    fallback = score_pairs(result.model, data, data.splits["test"])
    assert (fallback.image_weight[no_image] == 0).all() and np.isfinite(fallback.score).all()
    assert np.allclose(fallback.score[~no_image], scores.score[~no_image], atol=1e-6)  # photos: unchanged
    result.model.fusion.missing_ready.copy_(ready)
    result_eval, scored, _ = evaluate_model(result.model, data, n_boot=10)
    assert np.isfinite(result_eval.overall["ndcg@10"]) and np.isfinite(result_eval.overall["roc_auc"])


def test_missing_image_file_is_an_error_naming_it_without_skip(partly_imageless, tiny_store):
    from querylife.data.errors import DataError

    with pytest.raises(DataError, match="gone.png"):
        prepare_dataset(partly_imageless, tiny_store.pairs_path, image_size=32, progress=False)


def test_text_only_public_format_trains_end_to_end(tiny_config, tmp_path):
    """A CrowdFlower-format CSV (no images, no product ids, no types) through training and evaluation."""
    from querylife.data.prepare import prepare_from_config

    rows = []
    rng = np.random.default_rng(1)
    colours = ["red", "blue", "green", "black", "pink", "white"]
    things = ["dress", "shirt", "charger", "cable", "bag", "case"]
    for qi in range(30):
        colour, thing = colours[qi % 6], things[(qi // 6) % 6]
        query = f"{colour} {thing} {qi}"
        for j in range(8):
            good = j < 3
            title = f"{colour if good else colours[(qi + j) % 6]} {thing} item {qi}-{j}"
            rows.append({"id": len(rows), "query": query, "product_title": title, "product_description": "",
                         "median_relevance": int(rng.integers(3, 5) if good else rng.integers(1, 3)),
                         "relevance_variance": 0.0})
    path = tmp_path / "train.csv"
    pd.DataFrame(rows).to_csv(path, index=False, quoting=1)
    cfg = with_overrides(tiny_config, {"data.path": str(path), "data.format": "crowdflower", "data.catalog": None,
                                       "data.pairs": None, "train.epochs": 1})
    data = prepare_from_config(cfg, progress=False)
    assert not data.has_image.any()
    result = Trainer(cfg, data, tmp_path / "run", progress=False).fit()
    assert np.isfinite(result.history[0]["train_loss"])
    res, _, _ = evaluate_model(result.model, data, n_boot=10)
    assert np.isfinite(res.overall["ndcg@10"])
