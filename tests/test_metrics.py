"""Metrics against hand-computed values, scikit-learn references and bootstrap properties."""

from __future__ import annotations

import json
import math

import numpy as np
import pandas as pd
import pytest
from sklearn.metrics import average_precision_score, ndcg_score, roc_auc_score

from querylife.metrics import (
    RANKING_METRICS,
    EvalResult,
    _WeightedAUC,
    bootstrap_auc_ci,
    bootstrap_ci,
    classification_metrics,
    evaluate_scored,
    paired_bootstrap,
    per_query_metrics,
)

LOG2 = math.log2


def frame(query, gain, positive, score, product_type=None, query_type=None) -> pd.DataFrame:
    n = len(gain)
    return pd.DataFrame(
        {
            "query": [query] * n if isinstance(query, str) else query,
            "product_id": [f"p{i}" for i in range(n)],
            "gain": np.asarray(gain, dtype=float),
            "positive": np.asarray(positive, dtype=bool),
            "product_type": product_type if product_type is not None else ["t"] * n,
            "query_type": query_type if query_type is not None else ["t"] * n,
            "score": np.asarray(score, dtype=float),
        }
    )


def random_scored(n_queries: int, n_cand: int = 10, seed: int = 0, noise: float = 1.0) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    g = rng.integers(0, 3, size=(n_queries, n_cand))
    return pd.DataFrame(
        {
            "query": np.repeat([f"q{i}" for i in range(n_queries)], n_cand),
            "product_id": [f"p{i}" for i in range(n_queries * n_cand)],
            "gain": g.ravel().astype(float),
            "positive": (g == 2).ravel(),
            "product_type": np.where(g.ravel() > 0, "a", "b"),
            "query_type": np.repeat(["a" if i % 2 else "c" for i in range(n_queries)], n_cand),
            "score": (g + rng.normal(0, noise, size=g.shape)).ravel(),
        }
    )


# -------------------- ranking


def test_ranking_metrics_hand_example():
    # Ranked by score: p1 (gain 0), p2 (gain 1), p3 (gain 0), p0 (gain 2, the only positive) at rank 4.
    df = frame("q", gain=[2, 0, 1, 0], positive=[1, 0, 0, 0], score=[0.1, 0.9, 0.5, 0.2])
    row = per_query_metrics(df, ks=(2, 10)).iloc[0]
    dcg = 1 / LOG2(3) + 2 / LOG2(5)
    idcg = 2 / LOG2(2) + 1 / LOG2(3)
    assert row["ndcg@10"] == pytest.approx(dcg / idcg)
    assert row["ndcg@2"] == pytest.approx((1 / LOG2(3)) / idcg)
    assert row["mrr"] == pytest.approx(0.25)
    assert row["recall@2"] == 0.0
    assert row["recall@10"] == 1.0
    assert row["map"] == pytest.approx(0.25)
    assert (row["n_candidates"], row["n_positive"], row["n_relevant"]) == (4, 1, 2)


def test_map_mrr_recall_two_positives():
    # Positives at ranks 1 and 3 of 5.
    df = frame("q", gain=[2, 0, 2, 0, 0], positive=[1, 0, 1, 0, 0], score=[5, 4, 3, 2, 1])
    row = per_query_metrics(df, ks=(2, 5)).iloc[0]
    assert row["map"] == pytest.approx((1 / 1 + 2 / 3) / 2)
    assert row["mrr"] == 1.0
    assert row["recall@2"] == 0.5
    assert row["recall@5"] == 1.0


def test_all_tied_scores_use_expected_values():
    df = frame("q", gain=[0, 1, 0, 0], positive=[0, 1, 0, 0], score=[0.3] * 4)
    row = per_query_metrics(df, ks=(2, 10)).iloc[0]
    # Uniform random tie-breaking: the positive is at each rank 1..4 with probability 1/4.
    assert row["mrr"] == pytest.approx((1 + 1 / 2 + 1 / 3 + 1 / 4) / 4)
    assert row["recall@2"] == pytest.approx(0.5)
    # sklearn's tie-averaged DCG: mean gain 1/4 times the sum of the four discounts; IDCG = 1.
    assert row["ndcg@10"] == pytest.approx(0.25 * sum(1 / LOG2(i + 2) for i in range(4)))
    assert row["map"] == pytest.approx(0.25)


def test_partial_tie_group_mrr():
    # Ranks: [x] then a tie group of 3 holding 2 positives at ranks 2..4.
    df = frame("q", gain=[0, 2, 2, 0], positive=[0, 1, 1, 0], score=[0.9, 0.5, 0.5, 0.5])
    row = per_query_metrics(df).iloc[0]
    # First positive at in-group position 1 w.p. 2/3 (rank 2), position 2 w.p. 1/3 (rank 3).
    assert row["mrr"] == pytest.approx(2 / 3 * 1 / 2 + 1 / 3 * 1 / 3)


def test_matches_sklearn_on_random_queries_with_ties():
    rng = np.random.default_rng(3)
    for trial in range(60):
        n = int(rng.integers(2, 25))
        gain = rng.integers(0, 3, n).astype(float)
        score = rng.integers(0, 4, n).astype(float) if trial % 2 else rng.random(n)
        pos = gain == 2
        row = per_query_metrics(frame("q", gain, pos, score)).iloc[0]
        if gain.sum() > 0:
            assert row["ndcg@10"] == pytest.approx(ndcg_score(gain[None], score[None], k=10))
            assert row["ndcg@5"] == pytest.approx(ndcg_score(gain[None], score[None], k=5))
        if pos.any() and not pos.all():
            assert row["map"] == pytest.approx(average_precision_score(pos, score))


def test_queries_without_positive_excluded_and_counted():
    df = pd.concat(
        [
            frame("a", gain=[2, 0], positive=[1, 0], score=[0.9, 0.1]),  # mrr 1
            frame("b", gain=[1, 0], positive=[0, 0], score=[0.1, 0.9]),  # no positive, ndcg defined
            frame("c", gain=[0, 0], positive=[0, 0], score=[0.1, 0.9]),  # nothing relevant: ndcg undefined
            frame("d", gain=[0, 2], positive=[0, 1], score=[0.9, 0.1]),  # mrr 1/2
        ],
        ignore_index=True,
    )
    pq = per_query_metrics(df).set_index("query")
    assert math.isnan(pq.loc["b", "mrr"]) and math.isnan(pq.loc["b", "map"])
    assert pq.loc["b", "ndcg@10"] == pytest.approx((1 / LOG2(3)) / 1.0)
    assert math.isnan(pq.loc["c", "ndcg@10"])
    res = evaluate_scored(df, n_boot=50)
    assert res.n_queries == 4
    assert res.n_queries_no_positive == 2
    assert res.overall["mrr"] == pytest.approx(0.75)
    assert res.overall["ndcg@10"] == pytest.approx(np.mean([1.0, 1 / LOG2(3), 1 / LOG2(3) * 2 / 2]))


def test_per_query_validation_errors():
    df = frame("q", gain=[1, 0], positive=[1, 0], score=[0.5, np.nan])
    with pytest.raises(ValueError, match="score"):
        per_query_metrics(df)
    with pytest.raises(ValueError, match="lack column"):
        per_query_metrics(df.drop(columns=["gain"]))
    with pytest.raises(ValueError, match="empty"):
        per_query_metrics(df.iloc[:0])
    bad_type = frame("q", gain=[1, 0], positive=[1, 0], score=[0.5, 0.2], query_type=["x", "y"])
    with pytest.raises(ValueError, match="several query_type"):
        per_query_metrics(bad_type)


# -------------------- classification


def test_classification_at_threshold_hand_example():
    df = frame("q", gain=[2, 1, 0, 0], positive=[1, 0, 0, 0], score=[0.9, 0.6, 0.2, 0.1])
    m = classification_metrics(df, threshold=0.5)
    assert m["roc_auc"] == 1.0
    assert (m["precision"], m["recall"], m["accuracy"]) == (0.5, 1.0, 0.75)
    assert m["f1"] == pytest.approx(2 / 3)
    assert all(math.isnan(classification_metrics(df)[k]) for k in ("f1", "precision", "recall", "accuracy"))


def test_threshold_on_probability_column_and_ece():
    df = frame("q", gain=[2, 0, 1, 0], positive=[1, 0, 0, 0], score=[3.0, 1.0, 2.0, 0.0])
    df["prob"] = [0.9, 0.1, 0.4, 0.05]
    m = classification_metrics(df, threshold=0.5, prob_col="prob")
    assert (m["precision"], m["recall"], m["f1"], m["accuracy"]) == (1.0, 1.0, 1.0, 1.0)
    # ECE: bins of 0.9, 0.1, 0.4, 0.05 miss by 0.1, 0.1, 0.4, 0.05; one pair each.
    assert m["ece"] == pytest.approx((0.1 + 0.1 + 0.4 + 0.05) / 4)
    with pytest.raises(ValueError, match="prob_col"):
        classification_metrics(df, threshold=0.5, prob_col="missing")


def test_roc_auc_in_type_sees_what_all_pairs_auc_hides():
    # A dress query: two exact and two partial dresses scored alike (tied pairwise), and 98 chargers (other
    # type, irrelevant) scored low. All-pairs AUC is ~0.99 because the model tells dresses from chargers;
    # within the dresses it cannot tell exact from partial at all. (All-pairs AUC exactly 1.0 would force
    # in-type 1.0 too: the in-type comparisons are a subset of all comparisons.)
    n_other = 98
    df = frame(
        "red midi dress",
        gain=[2, 2, 1, 1] + [0] * n_other,
        positive=[1, 1, 0, 0] + [0] * n_other,
        score=[0.8, 0.6, 0.8, 0.6] + [0.1] * n_other,
        product_type=["dress"] * 4 + ["charger"] * n_other,
        query_type=["dress"] * (4 + n_other),
    )
    m = classification_metrics(df)
    assert m["roc_auc"] == pytest.approx((1 + n_other) / (2 + n_other))  # 0.99
    assert m["roc_auc_in_type"] == pytest.approx(0.5)
    assert m["n_pairs_in_type"] == 4


def test_single_class_subsets_give_nan_not_errors():
    df = frame("q", gain=[0, 0, 0], positive=[0, 0, 0], score=[0.1, 0.2, 0.3])
    m = classification_metrics(df, threshold=0.5)
    assert math.isnan(m["roc_auc"]) and math.isnan(m["pr_auc"]) and math.isnan(m["roc_auc_in_type"])
    res = evaluate_scored(df, n_boot=20)
    assert math.isnan(res.overall["mrr"]) and res.n_queries_no_positive == 1
    json.dumps(res.to_dict(), allow_nan=False)


# -------------------- bootstrap


def test_bootstrap_ci_contains_mean_narrows_and_is_deterministic():
    rng = np.random.default_rng(0)
    small = pd.DataFrame({"query": range(20), "ndcg@10": rng.random(20)})
    large = pd.DataFrame({"query": range(500), "ndcg@10": rng.random(500)})
    mean, lo, hi = bootstrap_ci(small, "ndcg@10", n_boot=1000, seed=1)
    assert lo < mean < hi and mean == pytest.approx(small["ndcg@10"].mean())
    _, lo_l, hi_l = bootstrap_ci(large, "ndcg@10", n_boot=1000, seed=1)
    assert hi_l - lo_l < (hi - lo) / 2
    assert bootstrap_ci(small, "ndcg@10", seed=1) == bootstrap_ci(small, "ndcg@10", seed=1)
    assert bootstrap_ci(small, "ndcg@10", seed=1) != bootstrap_ci(small, "ndcg@10", seed=2)


def test_bootstrap_ci_ignores_nan_and_handles_empty():
    pq = pd.DataFrame({"query": list("abc"), "mrr": [1.0, np.nan, 0.5]})
    assert bootstrap_ci(pq, "mrr", n_boot=100)[0] == 0.75
    assert all(math.isnan(v) for v in bootstrap_ci(pq.iloc[1:2], "mrr"))
    with pytest.raises(ValueError, match="not a column"):
        bootstrap_ci(pq, "ndcg@10")


def test_weighted_auc_equals_sklearn_with_query_weights():
    df = random_scored(30, seed=5)
    codes, uniques = pd.factorize(df["query"])
    y = df["positive"].to_numpy()
    s = np.round(df["score"].to_numpy(), 1)  # force ties
    auc = _WeightedAUC(codes, y, s, len(uniques))
    counts = np.random.default_rng(0).integers(0, 3, size=(4, len(uniques))).astype(float)
    counts = np.vstack([np.ones(len(uniques)), counts])
    got = auc(counts)
    for row, value in zip(counts, got, strict=True):
        assert value == pytest.approx(roc_auc_score(y, s, sample_weight=row[codes]))


def test_auc_bootstrap_ci_contains_auc_and_is_deterministic():
    df = random_scored(60, seed=2)
    auc, lo, hi = bootstrap_auc_ci(df, n_boot=300, seed=0)
    assert auc == pytest.approx(roc_auc_score(df["positive"], df["score"]))
    assert lo < auc < hi
    assert bootstrap_auc_ci(df, n_boot=300, seed=0) == (auc, lo, hi)
    auc_t, lo_t, hi_t = bootstrap_auc_ci(df, in_type=True, n_boot=300)
    assert lo_t < auc_t < hi_t


def test_paired_bootstrap_sign():
    rng = np.random.default_rng(0)
    base = rng.random(100)
    a = pd.DataFrame({"query": range(100), "ndcg@10": base + 0.05 + rng.normal(0, 0.02, 100)})
    b = pd.DataFrame({"query": range(100), "ndcg@10": base})
    better = paired_bootstrap(a, b, "ndcg@10", n_boot=1000, seed=0)
    assert better["mean_diff"] == pytest.approx(0.05, abs=0.01)
    assert 0 < better["lo"] < better["mean_diff"] < better["hi"]
    assert better["p_diff_le_0"] == 0.0
    worse = paired_bootstrap(b, a, "ndcg@10", n_boot=1000, seed=0)
    assert worse["mean_diff"] == pytest.approx(-better["mean_diff"])
    assert worse["hi"] < 0 and worse["p_diff_le_0"] == 1.0
    with pytest.raises(ValueError, match="no query"):
        paired_bootstrap(a, b.assign(query=b["query"] + 1000), "ndcg@10")


# -------------------- whole evaluation


def test_evaluate_scored_structure_and_json_round_trip():
    df = random_scored(40, seed=1)
    res = evaluate_scored(df, threshold=1.0, n_boot=200, seed=0)
    assert isinstance(res, EvalResult)
    for metric in RANKING_METRICS:
        lo, hi = res.ci[metric]
        assert lo <= res.overall[metric] <= hi
    for key in ("roc_auc", "roc_auc_in_type", "pr_auc", "f1"):
        assert 0.0 <= res.overall[key] <= 1.0
    assert set(res.ci) >= {"roc_auc", "roc_auc_in_type"}
    assert set(res.by_type) == {"a", "c"}
    assert res.by_type["a"]["n_queries"] == 20
    assert (res.n_queries, res.n_pairs) == (40, 400)
    d = json.loads(json.dumps(res.to_dict(include_per_query=True), allow_nan=False))
    back = EvalResult.from_dict(d)
    assert back.overall["ndcg@10"] == pytest.approx(res.overall["ndcg@10"])
    assert back.ci["roc_auc"] == pytest.approx(res.ci["roc_auc"])
    assert len(back.per_query) == 40
    # Same seed, same numbers.
    assert evaluate_scored(df, threshold=1.0, n_boot=200, seed=0).ci == res.ci


def test_better_scores_give_better_metrics():
    good = evaluate_scored(random_scored(50, noise=0.3), n_boot=0)
    bad = evaluate_scored(random_scored(50, noise=3.0), n_boot=0)
    for key in ("ndcg@10", "mrr", "map", "roc_auc", "roc_auc_in_type"):
        assert good.overall[key] > bad.overall[key]
