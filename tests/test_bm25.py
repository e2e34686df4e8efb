"""BM25 baseline: ranking sanity, alignment with the input order, errors."""

from __future__ import annotations

import numpy as np
import pytest

from querylife.bm25 import BM25Scorer, tokenize

CATALOG = {
    "p-dress": "Red floral midi dress",
    "p-shirt": "Blue cotton shirt, slim fit",
    "p-charger": "USB-C fast phone charger 20W",
    "p-case": "Phone case for the iPhone 15, red",
    "p-boots": "Leather boots size 5",
}


@pytest.fixture(scope="module")
def scorer() -> BM25Scorer:
    return BM25Scorer(CATALOG)


def test_matching_title_ranks_first(scorer):
    pids = list(CATALOG)
    for query, expected in [
        ("red midi dress", "p-dress"),
        ("fast charger", "p-charger"),
        ("iphone case", "p-case"),
    ]:
        scores = scorer.score_pairs([query] * len(pids), pids)
        assert pids[int(np.argmax(scores))] == expected
    # Words shared with no title score 0.
    assert scorer.score_pairs(["red midi dress"], ["p-boots"])[0] == 0.0


def test_scores_are_aligned_with_input_order(scorer):
    queries = ["red dress", "phone charger", "red dress", "boots size 5", "phone charger"]
    pids = ["p-case", "p-charger", "p-dress", "p-boots", "p-dress"]
    scores = scorer.score_pairs(queries, pids)
    expected = [
        scorer.score_query(q)[scorer.product_ids.index(p)] for q, p in zip(queries, pids, strict=True)
    ]
    np.testing.assert_allclose(scores, expected)
    order = np.random.default_rng(0).permutation(len(queries))
    shuffled = scorer.score_pairs([queries[i] for i in order], [pids[i] for i in order])
    np.testing.assert_allclose(shuffled, scores[order])


def test_unknown_product_and_length_mismatch_raise(scorer):
    with pytest.raises(KeyError, match="p-missing"):
        scorer.score_pairs(["red dress"], ["p-missing"])
    with pytest.raises(ValueError, match="differ in length"):
        scorer.score_pairs(["red dress", "boots"], ["p-dress"])


def test_stopword_or_unknown_queries_score_zero(scorer):
    assert scorer.score_pairs(["the of and", "zzz qqq", ""], ["p-dress"] * 3).tolist() == [0.0, 0.0, 0.0]


def test_tokenizer_keeps_sizes_and_is_shared():
    assert tokenize("The Leather Boots, size 5 / M") == ["leather", "boots", "size", "5", "m"]
    assert tokenize("The boots", stopwords=None) == ["the", "boots"]
    # Lower-casing applies to queries as to titles.
    s = BM25Scorer(CATALOG)
    assert s.score_pairs(["RED DRESS"], ["p-dress"])[0] == pytest.approx(
        s.score_pairs(["red dress"], ["p-dress"])[0]
    )
    s_none = BM25Scorer(CATALOG, stopwords=None)
    assert s_none.score_pairs(["the"], ["p-case"])[0] > 0  # "the" is a term again


def test_bad_construction_raises():
    with pytest.raises(ValueError, match="empty"):
        BM25Scorer({})
    with pytest.raises(ValueError, match="method"):
        BM25Scorer(CATALOG, method="tfidf")
    with pytest.raises(ValueError, match="stopword"):
        BM25Scorer(CATALOG, stopwords="klingon")


def test_bm25_pair_scores_over_a_dataset_uses_its_text_fields_or_the_given_ones():
    import pandas as pd
    import torch

    from querylife.bm25 import bm25_pair_scores
    from querylife.data.prepare import Dataset

    catalog = pd.DataFrame(
        {
            "product_id": ["a", "b"],
            "title": ["blue jacket", "red boots"],
            "description": ["waterproof denim", None],
        }
    )
    pairs = pd.DataFrame({"query": ["denim", "denim", "red boots"], "product_id": ["a", "b", "b"]})
    data = Dataset(
        catalog=catalog,
        pairs=pairs,
        splits={},
        label_scheme=None,  # not used by BM25
        images=torch.zeros(2, 3, 1, 1, dtype=torch.uint8),
        has_image=torch.zeros(2, dtype=torch.bool),
        text_fields=("title", "description"),
    )
    both = bm25_pair_scores(data, pairs)
    expected = BM25Scorer({"a": "blue jacket | waterproof denim", "b": "red boots"}).score_pairs(
        pairs["query"], pairs["product_id"]
    )
    np.testing.assert_array_equal(both, expected)
    assert both[0] > 0 and both[1] == 0.0
    title_only = bm25_pair_scores(data, pairs, ("title",))
    assert title_only[0] == 0.0 and title_only[2] > 0  # "denim" is only in a description
    assert data.text_fields == ("title", "description")  # the dataset itself is not changed
