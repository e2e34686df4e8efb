"""The streaming product encoder and the Searcher: the same vectors and scores as ``querylife eval``'s path."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from store_helpers import make_checkpoint

from querylife.data.prepare import prepare_dataset
from querylife.encode import Catalogue, iter_product_batches
from querylife.model import QueryLifeModel
from querylife.scoring import FeatureCache, encode_products, score_pairs
from querylife.search import Searcher, default_candidates
from querylife.store import StoredProducts


@pytest.fixture(scope="module")
def dataset(tiny_store):
    return prepare_dataset(tiny_store.catalog_path, tiny_store.pairs_path, image_size=32, progress=False,
                           split_by="intent")


@pytest.fixture(scope="module")
def model(dataset, tiny_text_model_dir, tmp_path_factory):
    path = make_checkpoint(tiny_text_model_dir, tmp_path_factory.mktemp("ckpt"), dataset.product_types)
    return QueryLifeModel.from_pretrained(path)


def _stored(model, dataset, batch_size=32) -> StoredProducts:
    cat = Catalogue.from_frame(dataset.catalog)
    parts = [b.products for b in iter_product_batches(model, cat, batch_size=batch_size)]
    return StoredProducts.concat(parts)


def test_streaming_encoder_equals_encode_products(model, dataset):
    rows = np.arange(len(dataset.catalog))
    ref = encode_products(model, dataset, rows, FeatureCache(), batch_size=64)
    got = _stored(model, dataset, batch_size=32)
    assert got.product_ids == dataset.catalog["product_id"].tolist()
    for name in ("t", "v"):
        assert torch.allclose(getattr(got, name), getattr(ref, name), atol=2e-6), name
    assert torch.equal(got.has_image, ref.has_image) and bool(got.has_image.any())
    assert torch.equal(got.type_ids, ref.type_ids)
    dev = model.device
    expect = model.fusion.index_vectors(ref.t.to(dev), ref.v.to(dev), ref.type_ids.to(dev), ref.has_image.to(dev))
    assert torch.allclose(got.index_vectors, expect.cpu(), atol=2e-6)
    assert torch.allclose(got.index_vectors.norm(dim=-1), torch.ones(len(got)), atol=1e-5)


def test_streaming_encoder_rows_subset_and_order(model, dataset):
    cat = Catalogue.from_frame(dataset.catalog)
    rows = np.array([17, 3, 200, 5])
    batch = next(iter(iter_product_batches(model, cat, rows, batch_size=16)))
    ref = encode_products(model, dataset, rows)
    assert batch.rows.tolist() == rows.tolist()
    assert torch.allclose(batch.products.t, ref.t, atol=2e-6) and torch.allclose(batch.products.v, ref.v, atol=2e-6)


def test_searcher_relevance_equals_score_pairs(model, dataset):
    products = _stored(model, dataset)
    searcher = Searcher(model, products)
    test = dataset.splits["test"]
    query = test["query"].iloc[0]
    pairs = test[test["query"] == query]
    ref = score_pairs(model, dataset, pairs)
    got = searcher.relevance_ids(query, pairs["product_id"].tolist())
    np.testing.assert_allclose(got.scores, ref.score, atol=1e-5)
    np.testing.assert_allclose(got.image_weight, ref.image_weight, atol=1e-5)
    # The query-aware gate really varies (the test would not see a wrong gate input otherwise).
    assert np.nanstd(got.image_weight[products.has_image[got.rows].numpy()]) > 1e-3
    with pytest.raises(KeyError, match="nope"):
        searcher.relevance_ids(query, ["nope"])


def test_exhaustive_search_ranks_by_the_fused_score(model, dataset):
    products = _stored(model, dataset)
    searcher = Searcher(model, products, chunk_size=50)
    query = dataset.splits["test"]["query"].iloc[0]
    hits = searcher.search(query, k=5)
    full = searcher.relevance(query, np.arange(len(products)))
    order = np.argsort(-full.scores, kind="stable")[:5]
    assert [h.row for h in hits] == order.tolist()
    assert [h.rank for h in hits] == [1, 2, 3, 4, 5]
    assert hits[0].score == pytest.approx(float(full.scores[order[0]]))
    assert hits[0].product_id == products.product_ids[order[0]] and hits[0].title == products.titles[order[0]]
    assert default_candidates(5) == 100 and default_candidates(50) == 500


def test_searcher_takes_a_query_encoder(model, dataset):
    products = _stored(model, dataset)
    calls = []

    def encoder(texts):
        calls.append(list(texts))
        return model.encode_queries(texts).detach()

    searcher = Searcher(model, products, query_encoder=encoder)
    ref = Searcher(model, products).relevance("red dress", [0, 1, 2])
    got = searcher.relevance("red dress", [0, 1, 2])
    assert calls == [["red dress"]]
    np.testing.assert_allclose(got.scores, ref.scores, atol=1e-6)


def test_inline_products_score_like_stored_ones(model, dataset):
    products = _stored(model, dataset)
    searcher = Searcher(model, products)
    rows = np.array([0, 1, 2, 3])
    inline = searcher.encode_products(
        [products.titles[r] for r in rows], [products.product_types[r] for r in rows], dataset.images[rows],
        dataset.has_image[rows],
    )
    q = searcher.encode_queries(["red dress"])[0]
    got = searcher.score_vectors(q, inline)
    ref = searcher.relevance(q, rows)
    np.testing.assert_allclose(got.scores, ref.scores, atol=2e-6)
    text_only = searcher.encode_products(["Summer dress"], ["dress"])
    assert not bool(text_only.has_image[0]) and float(searcher.score_vectors(q, text_only).image_weight[0]) == 0.0


@pytest.mark.parametrize("mode", ["title", "image", "mean", "concat", "type_gate", "query_type_gate", "dev_type_gate"])
def test_one_query_pairwise_row_equals_paired_scores(mode):
    # The service scores one query against n products with pairwise=True (gate once per (query, type)); eval scores
    # pairs with pairwise=False. Same module, same formula: equal to float32 rounding in every fusion mode.
    from querylife.fusion import Fusion, FusionConfig

    torch.manual_seed(0)
    fusion = Fusion(FusionConfig(mode=mode), n_types=5, dim=16).eval()
    with torch.no_grad():
        for p in fusion.parameters():  # non-trivial gate values (the zero-initialised gate output would hide errors)
            p.normal_(0, 0.5)
    n = 40
    q = torch.nn.functional.normalize(torch.randn(16), dim=-1)  # (D,)
    t = torch.nn.functional.normalize(torch.randn(n, 16), dim=-1)  # (n, D)
    has = torch.rand(n) > 0.3  # (n,)
    v = torch.nn.functional.normalize(torch.randn(n, 16), dim=-1) * has.unsqueeze(-1)  # (n, D), zero without image
    types = torch.randint(0, 5, (n,))
    with torch.no_grad():
        row = fusion.pairwise(q[None], t, v, types, has)
        ref = fusion.paired(q.expand(n, -1), t, v, types, has)
    torch.testing.assert_close(row.scores[0], ref.scores, atol=1e-6, rtol=0)
    if mode == "concat":
        assert row.image_weight is None and ref.image_weight is None
        with pytest.raises(ValueError, match="concat"):
            fusion.type_weights(q[None])
    else:
        torch.testing.assert_close(row.image_weight[0], ref.image_weight, atol=1e-6, rtol=0)
        assert bool((row.image_weight[0][~has] == 0).all())
        # the serving form: the gate once per type, the cosines and t.v given as parts
        with torch.no_grad():
            one = fusion.one_query(q, t @ q, v @ q, (t * v).sum(-1), types, has)
            per_type = fusion.type_weights(torch.stack([q, -q]))  # (2, T)
        assert per_type.shape == (2, 5)
        torch.testing.assert_close(one.scores, ref.scores, atol=1e-6, rtol=0)
        torch.testing.assert_close(one.image_weight, ref.image_weight, atol=1e-6, rtol=0)
        assert bool((one.image_weight[~has] == 0).all())
        # each type's weight is its products' weight (where they have an image)
        for k in types[has].unique().tolist():
            first = int(torch.nonzero((types == k) & has)[0])
            assert float(per_type[0, k]) == pytest.approx(float(one.image_weight[first]), abs=1e-7)
        if mode == "query_type_gate":  # the query matters: another query, other weights
            assert not torch.allclose(per_type[0], per_type[1])
