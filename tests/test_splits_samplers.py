"""Query-grouped splits and the batch sampler without duplicate queries / products / groups."""

from __future__ import annotations

import random
from collections import Counter

import pandas as pd
import pytest
from torch.utils.data import DataLoader

from querylife.data.errors import DataError
from querylife.data.samplers import UniqueBatchSampler
from querylife.data.splits import split_by_query


def make_pairs(n_queries: int = 50, per_query: int = 4) -> pd.DataFrame:
    rows = [
        (f"q{q}", f"p{q}_{i}", "1" if i == 0 else "0") for q in range(n_queries) for i in range(per_query)
    ]
    return pd.DataFrame(rows, columns=["query", "product_id", "label"])


# ---------------------------------------------------------------------------------------------------------
# splits


def test_split_disjoint_complete_and_sized() -> None:
    pairs = make_pairs(100)
    splits = split_by_query(pairs, (0.7, 0.1, 0.2), seed=0)
    assert list(splits) == ["train", "dev", "test"]
    qs = {k: set(v["query"]) for k, v in splits.items()}
    assert not (qs["train"] & qs["dev"]) and not (qs["train"] & qs["test"]) and not (qs["dev"] & qs["test"])
    assert sum(len(v) for v in splits.values()) == len(pairs)
    assert [len(qs[k]) for k in ("train", "dev", "test")] == [70, 10, 20]
    assert all(v.index.tolist() == list(range(len(v))) for v in splits.values())


def test_split_deterministic_and_seeded() -> None:
    pairs = make_pairs(60)
    a = split_by_query(pairs, seed=1)
    b = split_by_query(pairs, seed=1)
    for k in a:
        pd.testing.assert_frame_equal(a[k], b[k])
    shuffled = pairs.sample(frac=1.0, random_state=3)
    c = split_by_query(shuffled, seed=1)
    assert {k: set(v["query"]) for k, v in a.items()} == {k: set(v["query"]) for k, v in c.items()}
    d = split_by_query(pairs, seed=2)
    assert set(a["test"]["query"]) != set(d["test"]["query"])


def test_split_small_and_zero_fractions() -> None:
    pairs = make_pairs(3)
    s = split_by_query(pairs, (0.98, 0.01, 0.01))
    assert [s[k]["query"].nunique() for k in ("train", "dev", "test")] == [1, 1, 1]
    s = split_by_query(make_pairs(10), (0.8, 0.0, 0.2))
    assert len(s["dev"]) == 0 and s["test"]["query"].nunique() == 2
    s = split_by_query(make_pairs(5), (0.0, 0.1, 0.9))
    assert len(s["train"]) == 0 and sum(len(v) for v in s.values()) == 20


@pytest.mark.parametrize(
    ("fractions", "match"),
    [((0.5, 0.5), "three"), ((0.7, 0.2, 0.2), "sum to 1"), ((1.2, -0.1, -0.1), "non-negative")],
)
def test_split_bad_fractions(fractions, match) -> None:
    with pytest.raises(DataError, match=match):
        split_by_query(make_pairs(10), fractions)


def test_split_too_few_queries() -> None:
    with pytest.raises(DataError, match="at least 3 distinct queries"):
        split_by_query(make_pairs(2), (0.7, 0.1, 0.2))
    with pytest.raises(DataError, match="query"):
        split_by_query(pd.DataFrame({"q": [1]}))


# ---------------------------------------------------------------------------------------------------------
# sampler


def check_batches(batches, queries, products, groups, n, drop_last=False, batch_size=None) -> None:
    seen = [i for b in batches for i in b]
    assert len(seen) == len(set(seen))  # never a duplicate
    if not drop_last:
        assert sorted(seen) == list(range(n))  # every row once
    for b in batches:
        assert len({queries[i] for i in b}) == len(b)
        assert len({products[i] for i in b}) == len(b)
        if groups is not None:
            g = [groups[i] for i in b if groups[i] is not None]
            assert len(set(g)) == len(g)
        if batch_size is not None:
            assert len(b) <= batch_size
            if drop_last:
                assert len(b) == batch_size


def test_sampler_invariants_on_random_inputs() -> None:
    rnd = random.Random(0)
    for trial in range(200):
        n = rnd.randint(0, 60)
        nq, npr, ng = rnd.randint(1, 15), rnd.randint(1, 40), rnd.randint(1, 10)
        queries = [f"q{rnd.randrange(nq)}" for _ in range(n)]
        products = [f"p{rnd.randrange(npr)}" for _ in range(n)]
        groups = None
        if trial % 2:
            groups = [None if rnd.random() < 0.3 else f"g{rnd.randrange(ng)}" for _ in range(n)]
        bs = rnd.randint(1, 12)
        s = UniqueBatchSampler(queries, products, bs, seed=trial, groups=groups)
        for epoch in (0, 1):
            s.set_epoch(epoch)
            batches = list(s)
            assert len(batches) == len(s)
            check_batches(batches, queries, products, groups, n, batch_size=bs)


def test_sampler_drop_last_only_full_batches() -> None:
    pairs = make_pairs(40, 3)
    q, p = pairs["query"].tolist(), pairs["product_id"].tolist()
    s = UniqueBatchSampler(q, p, 16, drop_last=True, seed=1)
    batches = list(s)
    check_batches(batches, q, p, None, len(q), drop_last=True, batch_size=16)
    assert len(batches) >= 6
    with pytest.raises(ValueError, match="every batch would be"):
        UniqueBatchSampler(q, p, 64, drop_last=True)  # only 40 distinct queries


def test_sampler_deterministic_per_seed_and_epoch() -> None:
    pairs = make_pairs(30, 3)
    q, p = pairs["query"].tolist(), pairs["product_id"].tolist()
    a = UniqueBatchSampler(q, p, 8, seed=5)
    b = UniqueBatchSampler(q, p, 8, seed=5)
    assert list(a) == list(b)
    a.set_epoch(3)
    b.set_epoch(3)
    assert list(a) == list(b)
    e3 = list(a)
    a.set_epoch(4)
    assert list(a) != e3
    a.set_epoch(3)
    assert list(a) == e3  # going back reproduces the epoch
    assert list(UniqueBatchSampler(q, p, 8, seed=6)) != list(UniqueBatchSampler(q, p, 8, seed=5))


def test_sampler_hot_query_gets_extra_batches() -> None:
    # One query with 10 rows, 10 other rows, batch size 8: the hot query needs 10 batches.
    q = ["hot"] * 10 + [f"q{i}" for i in range(10)]
    p = [f"p{i}" for i in range(20)]
    s = UniqueBatchSampler(q, p, 8, seed=0)
    batches = list(s)
    check_batches(batches, q, p, None, 20, batch_size=8)
    assert len(batches) == 10
    assert Counter(q[i] for b in batches for i in b)["hot"] == 10


def test_sampler_same_product_two_queries_and_groups() -> None:
    q = ["a", "b", "c", "d"]
    p = ["x", "x", "y", "z"]
    g = ["g1", None, "g1", None]
    batches = list(UniqueBatchSampler(q, p, 4, groups=g))
    check_batches(batches, q, p, g, 4)
    assert len(batches) == 2


def test_sampler_in_dataloader_and_errors() -> None:
    pairs = make_pairs(20, 2)
    s = UniqueBatchSampler(pairs["query"], pairs["product_id"], 5, seed=0)
    loader = DataLoader(list(range(len(pairs))), batch_sampler=s)
    got = sorted(int(i) for batch in loader for i in batch)
    assert got == list(range(len(pairs))) and len(loader) == len(s)
    with pytest.raises(ValueError, match="batch_size"):
        UniqueBatchSampler(["a"], ["b"], 0)
    with pytest.raises(ValueError, match="differ in length"):
        UniqueBatchSampler(["a", "b"], ["x"], 2)
    with pytest.raises(ValueError, match="differ in length"):
        UniqueBatchSampler(["a"], ["x"], 2, groups=["g", "h"])
    assert list(UniqueBatchSampler([], [], 4)) == [] and len(UniqueBatchSampler([], [], 4)) == 0
