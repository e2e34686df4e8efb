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
