"""model.fusion.missing_image="type_mean" (the default): training is unchanged, then each type's photo-less products
get the mean photo vector of its training products; every scoring path and a reloaded checkpoint see the filled
vectors. "title", the title / image modes and checkpoints from before the option keep the title-only fallback."""

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from querylife.config import with_overrides
from querylife.data.prepare import prepare_dataset
from querylife.fusion import Fusion, FusionConfig
from querylife.missing_image import fit_missing_images
from querylife.model import QueryLifeModel
from querylife.scoring import encode_products, score_pairs
from querylife.train import Trainer


@pytest.fixture(scope="module")
def tiny_data(tiny_store):
    data = prepare_dataset(tiny_store.catalog_path, tiny_store.pairs_path, image_size=32, progress=False)
    gone = torch.arange(0, len(data.catalog), 4)  # a quarter of the products lose their photo
    data.has_image[gone] = False
    data.images[gone] = 0
    return data


def test_fill_missing_fills_only_fitted_types_without_a_photo():
    fusion = Fusion(FusionConfig(mode="query_type_gate", missing_image="type_mean"), n_types=3, dim=4)
    v = F.normalize(torch.randn(4, 4), dim=-1)
    v[[1, 3]] = 0  # no photo
    types, has = torch.tensor([1, 1, 2, 2]), torch.tensor([True, False, True, False])
    out, has_out = fusion.fill_missing(v, types, has)
    assert torch.equal(out, v) and torch.equal(has_out, has)  # nothing fitted yet: the title-only fallback
    fusion.missing_vector[1] = torch.tensor([1.0, 0, 0, 0])
    fusion.missing_ready[1] = True
    out, has_out = fusion.fill_missing(v, types, has)
    assert torch.equal(out[1], torch.tensor([1.0, 0, 0, 0]))  # type 1 without a photo: its type's vector
    assert torch.equal(out[[0, 2, 3]], v[[0, 2, 3]])  # photos, and the unfitted type 2, unchanged
    assert has_out.tolist() == [True, True, True, False]
    for plain in (Fusion(FusionConfig(mode="query_type_gate", missing_image="title"), n_types=3, dim=4),
                  Fusion(FusionConfig(mode="image"), n_types=3, dim=4),  # no title part to add a photo to
                  Fusion(FusionConfig(mode="title"), n_types=3, dim=4)):  # fmt: skip
        assert not hasattr(plain, "missing_vector")  # no extra state
        assert plain.fill_missing(v, types, has)[0] is v


def test_type_mean_trains_as_the_title_fallback_then_fills_photo_less_products(tiny_config, tiny_data, tmp_path):
    raw = {"model.query_offset.mode": "none"}  # scores compared below without the query offset (fitted after this)
    title_cfg = with_overrides(tiny_config, {"model.fusion.missing_image": "title", **raw})
    base = Trainer(title_cfg, tiny_data, tmp_path / "base", progress=False).fit()
    run = Trainer(with_overrides(tiny_config, raw), tiny_data, tmp_path / "tm", progress=False).fit()  # type_mean
    assert run.best_epoch == base.best_epoch and run.best_dev_ndcg == base.best_dev_ndcg  # training unchanged
    sa, sb = base.model.trainable_state_dict(), run.model.trainable_state_dict()
    assert set(sb) - set(sa) == {"fusion.missing_vector", "fusion.missing_ready"}
    for k, v in sa.items():
        assert torch.equal(v, sb[k]), k
    model = run.model
    # the fitted vectors: each type's normalised mean photo vector over the training split's products
    train_rows = np.unique(tiny_data.rows(tiny_data.splits["train"]["product_id"]))
    photo_rows = train_rows[tiny_data.has_image[torch.from_numpy(train_rows)].numpy()]
    vecs = encode_products(model, tiny_data, photo_rows)
    for k in vecs.type_ids.unique():
        expected = F.normalize(vecs.v[vecs.type_ids == k].mean(0), dim=-1)
        assert torch.allclose(model.fusion.missing_vector[k], expected, atol=1e-5)
        assert bool(model.fusion.missing_ready[k])
    assert run.missing_images.photos == {model.types[int(k)]: int((vecs.type_ids == k).sum())
                                         for k in vecs.type_ids.unique()}  # fmt: skip
    assert run.missing_images.filled == int((~tiny_data.has_image).sum()) > 0  # every type has photos here
    # encoding: photo-less products take their type's vector and count as having one; photos are untouched
    all_rows = np.arange(len(tiny_data.catalog))
    filled, plain = encode_products(model, tiny_data, all_rows), encode_products(base.model, tiny_data, all_rows)
    gone = ~tiny_data.has_image
    assert bool(filled.has_image.all())
    assert torch.equal(filled.v[~gone], plain.v[~gone])
    assert torch.allclose(filled.v[gone], model.fusion.missing_vector[filled.type_ids[gone]])
    assert torch.equal(plain.v[gone], torch.zeros_like(plain.v[gone]))
    # scores: photo products as before; photo-less ones move; best/ reloads to the same scores
    test = tiny_data.splits["test"]
    s_base, s_tm = score_pairs(base.model, tiny_data, test).score, score_pairs(model, tiny_data, test).score
    no_photo = ~tiny_data.has_image[torch.from_numpy(tiny_data.rows(test["product_id"]))].numpy()
    assert no_photo.any() and (~no_photo).any()
    assert np.allclose(s_base[~no_photo], s_tm[~no_photo], atol=1e-6)
    assert not np.allclose(s_base[no_photo], s_tm[no_photo], atol=1e-4)
    import json

    summary = json.loads((tmp_path / "tm" / "best" / "summary.json").read_text())
    assert summary["missing_images"]["photos"] == run.missing_images.photos  # best/ records what was fitted
    reloaded = QueryLifeModel.from_pretrained(tmp_path / "tm" / "best")
    assert np.allclose(score_pairs(reloaded, tiny_data, test).score, s_tm, atol=1e-6)


def test_fit_needs_the_option_and_training_pairs(tiny_config, tiny_data):
    for change in ({"model.fusion.missing_image": "title"}, {"model.fusion.mode": "image"}):
        cfg = with_overrides(tiny_config, change)
        model = QueryLifeModel(cfg.model.model_copy(update={"product_types": tiny_data.product_types}))
        with pytest.raises(ValueError, match="type_mean"):
            fit_missing_images(model, tiny_data, tiny_data.splits["train"])
    model = QueryLifeModel(tiny_config.model.model_copy(update={"product_types": tiny_data.product_types}))
    with pytest.raises(ValueError, match="training pairs"):
        fit_missing_images(model, tiny_data, tiny_data.splits["train"].iloc[:0])


def test_store_and_searcher_score_photo_less_products_like_eval(tiny_store, tiny_text_model_dir, tmp_path):
    # The serving path (streamed store vectors, the Searcher's one-query scoring) sees the filled vectors too.
    import pandas as pd
    from store_helpers import make_checkpoint

    from querylife.encode import Catalogue, iter_product_batches
    from querylife.search import Searcher
    from querylife.store import StoredProducts

    cat = pd.read_parquet(tiny_store.catalog_path)
    cat.loc[cat.index % 4 == 0, "image_path"] = None
    base = tiny_store.catalog_path.parent
    cat["image_path"] = [str(base / p) if isinstance(p, str) else None for p in cat["image_path"]]
    cat.to_parquet(tmp_path / "catalog.parquet")
    data = prepare_dataset(tmp_path / "catalog.parquet", tiny_store.pairs_path, image_size=32, progress=False)
    path = make_checkpoint(tiny_text_model_dir, tmp_path / "ckpt", data.product_types, missing_image="type_mean")
    model = QueryLifeModel.from_pretrained(path)
    fit = fit_missing_images(model, data, data.splits["train"])
    assert fit.photos and not fit.title_only
    parts = [b.products for b in iter_product_batches(model, Catalogue.from_frame(data.catalog), batch_size=32)]
    products = StoredProducts.concat(parts)
    assert bool(products.has_image.all())  # every photo-less product got its type's vector
    ref = encode_products(model, data, np.arange(len(data.catalog)))
    assert torch.allclose(products.v, ref.v, atol=2e-6)
    searcher = Searcher(model, products)
    test = data.splits["test"]
    for query in test["query"].unique()[:3]:
        pairs = test[test["query"] == query]
        got = searcher.relevance_ids(query, pairs["product_id"].tolist())
        np.testing.assert_allclose(got.scores, score_pairs(model, data, pairs).score, atol=1e-5)


def test_checkpoint_from_before_the_option_keeps_the_title_fallback(tiny_text_model_dir, tiny_data, tmp_path):
    import json

    from store_helpers import make_checkpoint

    path = make_checkpoint(tiny_text_model_dir, tmp_path / "old", tiny_data.product_types, missing_image="title")
    tree = json.loads((path / "config.json").read_text())
    del tree["fusion"]["missing_image"]  # as written before the option existed (its buffers are not in the file)
    (path / "config.json").write_text(json.dumps(tree))
    old = QueryLifeModel.from_pretrained(path)
    assert old.config.fusion.missing_image == "title" and not hasattr(old.fusion, "missing_vector")
    ref = QueryLifeModel.from_pretrained(make_checkpoint(tiny_text_model_dir, tmp_path / "ref",
                                                         tiny_data.product_types, missing_image="title"))  # fmt: skip
    test = tiny_data.splits["test"]
    assert np.array_equal(score_pairs(old, tiny_data, test).score, score_pairs(ref, tiny_data, test).score)


def test_model_score_fills_like_the_encoder(tiny_config, tiny_data):
    # The README's direct use (encode_images + model.score) scores photo-less products as eval and serving do.
    model = QueryLifeModel(tiny_config.model.model_copy(update={"product_types": tiny_data.product_types})).eval()
    fit_missing_images(model, tiny_data, tiny_data.splits["train"])
    rows = np.arange(40)
    texts = tiny_data.product_texts(rows)
    has = tiny_data.has_image[rows]
    types = model.type_ids(tiny_data.catalog["product_type"].iloc[rows].tolist())
    with torch.no_grad():
        q = model.encode_queries(["red dress"])
        direct = model.score(q, model.encode_titles(texts), model.encode_images(tiny_data.images[rows], has), types,
                             has, pairwise=True).scores[0]  # fmt: skip
        vec = encode_products(model, tiny_data, rows)
        stored = model.score(q, vec.t, vec.v, vec.type_ids, vec.has_image, pairwise=True).scores[0]
    assert (~has).any()
    assert torch.allclose(direct, stored, atol=1e-5)
