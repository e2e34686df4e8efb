"""kfold_by_query: cross-validation folds grouped by query (or by a coarser group)."""

from __future__ import annotations

import pandas as pd
import pytest

from querylife.data.errors import DataError
from querylife.data.splits import kfold_by_query


def make_pairs(n_queries: int, per_query: int = 3) -> pd.DataFrame:
    rows = [(f"q{q}", f"p{q}_{i}", "1" if i == 0 else "0") for q in range(n_queries) for i in range(per_query)]
    return pd.DataFrame(rows, columns=["query", "product_id", "label"])


def queries(frame: pd.DataFrame) -> set[str]:
    return set(frame["query"])


def test_every_query_is_tested_once_and_splits_partition_the_rows() -> None:
    pairs = make_pairs(23)
    folds = kfold_by_query(pairs, 5, seed=3, dev_fraction=0.1)
    assert len(folds) == 5
    tested = [q for f in folds for q in queries(f["test"])]
    assert sorted(tested) == sorted(set(pairs["query"]))  # each query in exactly one test split
    assert sorted(len(queries(f["test"])) for f in folds) == [4, 4, 5, 5, 5]  # sizes differ by at most one
    for f in folds:
        assert set(f) == {"train", "dev", "test"}
        tr, dv, te = queries(f["train"]), queries(f["dev"]), queries(f["test"])
        assert not (tr & dv or tr & te or dv & te)
        assert sum(len(f[s]) for s in f) == len(pairs)  # every row in one split, none lost or repeated
        assert len(dv) == max(1, round(0.1 * (len(tr) + len(dv))))
        assert f["test"].index.tolist() == list(range(len(f["test"])))  # index reset


def test_rows_keep_their_order_and_columns() -> None:
    pairs = make_pairs(6)
    fold = kfold_by_query(pairs, 3, seed=0)[0]
    expected = pairs[pairs["query"].isin(queries(fold["test"]))].reset_index(drop=True)
    pd.testing.assert_frame_equal(fold["test"], expected)
    assert fold["dev"].empty and list(fold["dev"].columns) == list(pairs.columns)  # no dev_fraction: no dev


def test_pinned_assignment() -> None:
    # The seeding reproduces the CrowdFlower benchmark's recorded folds (benchmarks/results/crowdflower.json):
    # a change here changes which queries every recorded fold tested.
    pairs = make_pairs(10, per_query=2)
    got = [{s: sorted(queries(f[s])) for s in f} for f in kfold_by_query(pairs, 3, seed=0, dev_fraction=0.2)]
    assert got == [
        {"train": ["q1", "q3", "q5", "q8", "q9"], "dev": ["q0"], "test": ["q2", "q4", "q6", "q7"]},
        {"train": ["q0", "q1", "q2", "q4", "q7", "q8"], "dev": ["q6"], "test": ["q3", "q5", "q9"]},
        {"train": ["q2", "q3", "q4", "q6", "q7", "q9"], "dev": ["q5"], "test": ["q0", "q1", "q8"]},
    ]


def test_depends_on_the_seed_not_on_row_order() -> None:
    pairs = make_pairs(30)
    a = kfold_by_query(pairs, 4, seed=1, dev_fraction=0.2)
    shuffled = kfold_by_query(pairs.sample(frac=1.0, random_state=9), 4, seed=1, dev_fraction=0.2)
    assert [{s: queries(f[s]) for s in f} for f in a] == [{s: queries(f[s]) for s in f} for f in shuffled]
    other = kfold_by_query(pairs, 4, seed=2, dev_fraction=0.2)
    assert [queries(f["test"]) for f in a] != [queries(f["test"]) for f in other]


def test_group_by_keeps_paraphrases_of_one_intent_together() -> None:
    pairs = make_pairs(12)
    pairs["intent"] = pairs["query"].map(lambda q: f"i{int(q[1:]) // 2}")  # two paraphrases per intent
    for f in kfold_by_query(pairs, 3, seed=0, group_by="intent", dev_fraction=0.25):
        tr, dv, te = (set(f[s]["intent"]) for s in ("train", "dev", "test"))
        assert not (tr & te or dv & te or tr & dv)
    assert sum(len(set(f["test"]["intent"])) for f in kfold_by_query(pairs, 3, group_by="intent")) == 6


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"k": 1}, "k must be between 2"),
        ({"k": 7}, r"k must be between 2 and the number of distinct 'query' values \(6\); got 7"),
        ({"k": 2, "dev_fraction": 1.0}, r"dev_fraction must be in \[0, 1\)"),
        ({"k": 2, "dev_fraction": -0.1}, r"dev_fraction must be in \[0, 1\)"),
        ({"k": 2, "group_by": "intent"}, "cannot fold by 'intent': no such column"),
    ],
)
def test_bad_arguments_raise(kwargs: dict, message: str) -> None:
    with pytest.raises(DataError, match=message):
        kfold_by_query(make_pairs(6), **kwargs)


def test_query_with_several_groups_and_missing_query_column_raise() -> None:
    pairs = make_pairs(4)
    pairs["intent"] = ["a", "b", "b"] + ["c"] * (len(pairs) - 3)  # q0 spans intents a and b
    with pytest.raises(DataError, match="query 'q0' has several 'intent' values"):
        kfold_by_query(pairs, 2, group_by="intent")
    with pytest.raises(DataError, match="no 'query' column"):
        kfold_by_query(pairs.drop(columns="query"), 2)
