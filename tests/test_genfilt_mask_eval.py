"""Precision / recall of false-negative masks against known equivalents, and realistic training batches."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest

from querylife.genfilt.judges import DuplicateTitleJudge, JudgeStats
from querylife.genfilt.mask_eval import (
    evaluate_judge,
    evaluate_judges,
    known_equivalents,
    positive_flags,
    sample_batches,
)

CATALOG = pd.DataFrame(
    {
        "product_id": ["a", "a2", "b", "c", "d", "e"],
        "title": ["Red dress", "red dress", "Blue dress", "USB cable", "usb cable!", "Phone case"],
        "group_id": ["g1", "g1", "g2", None, "", ""],  # c, d, e: no group (never equal to each other)
    }
)
PAIRS = pd.DataFrame(
    {
        "query": ["red dress", "red dress", "red dress", "usb cable", "usb cable", "usb cable"],
        "product_id": ["a", "b", "e", "c", "d", "a"],
        "label": ["exact", "exact", "partial", "exact", "exact", "irrelevant"],
    }
)


def test_known_equivalents():
    truth = known_equivalents(CATALOG, PAIRS)
    assert truth("red dress", "a", "a2")  # same group: a duplicate listing
    assert truth.reason("red dress", "a", "a2") == "group"
    assert truth("red dress", "a", "b") and truth.reason("red dress", "a", "b") == "label"  # both exact
    assert not truth("red dress", "a", "e")  # partial is not positive
    assert truth("usb cable", "c", "d")  # labels, although neither has a group
    assert not truth("usb cable", "d", "e")  # empty / missing group ids never match
    assert not truth("usb cable", "c", "a")
    assert not truth("red dress", "a", "a")  # the positive itself is not a false negative


def test_positive_flags_from_labels_or_column():
    assert positive_flags(PAIRS).tolist() == [True, True, False, True, True, False]
    assert positive_flags(PAIRS.assign(positive=[1, 0, 0, 0, 0, 1])).tolist() == [True] + [False] * 4 + [True]
    with pytest.raises(ValueError, match="'positive' column"):
        positive_flags(PAIRS.drop(columns="label"))


class FixedJudge:
    """Returns a given mask per call (in order)."""

    name = "fixed"

    def __init__(self, masks):
        self.masks, self.stats = list(masks), JudgeStats()

    def mask(self, queries, product_ids, positive_ids):
        return np.array(self.masks.pop(0), dtype=bool)


BATCHES = [
    (["red dress", "usb cable"], ["a", "c", "a2", "d"], ["a", "c"]),  # Bp > B: two extra columns
    (["red dress", "usb cable", "phone case"], ["b", "d", "e"], ["b", "d", "e"]),
]


def test_evaluate_judge_by_hand():
    truth = known_equivalents(CATALOG, PAIRS)
    # True false negatives: in batch 1, (red dress, a2) by group and (usb cable, d) by label; none in batch 2.
    judge = FixedJudge(
        [
            [[0, 0, 1, 0], [0, 0, 1, 0]],  # (red, a2) right; (usb, a2) wrong; (usb, d) missed
            [[0, 0, 0], [0, 0, 1], [0, 0, 0]],  # (usb, e) wrong
        ]
    )
    r = evaluate_judge(judge, BATCHES, truth)
    assert r["n_pairs"] == (2 * 4 - 2) + (3 * 3 - 3)
    assert (r["n_true"], r["n_masked"], r["n_true_masked"]) == (2, 3, 1)
    assert r["precision"] == pytest.approx(1 / 3) and r["recall"] == pytest.approx(1 / 2)
    assert r["f1"] == pytest.approx(2 * (1 / 3) * (1 / 2) / (1 / 3 + 1 / 2))
    assert r["mask_rate"] == pytest.approx(3 / 12) and r["asked"] == 0


def test_evaluate_judge_nothing_masked_is_nan_precision():
    r = evaluate_judge(FixedJudge([np.zeros((2, 4)), np.zeros((3, 3))]), BATCHES, known_equivalents(CATALOG, PAIRS))
    assert math.isnan(r["precision"]) and r["recall"] == 0.0 and math.isnan(r["f1"])


def test_evaluate_judges_table_on_shared_batches():
    truth = known_equivalents(CATALOG, PAIRS)
    judges = {"title": DuplicateTitleJudge(CATALOG), "title_bow": DuplicateTitleJudge(CATALOG, bag_of_words=True)}
    table = evaluate_judges(judges, (b for b in BATCHES), truth)  # a generator is materialised once for all
    assert table["judge"].tolist() == ["title", "title_bow"]
    title = table.iloc[0]
    # "red dress" == "red dress" (a2, a true duplicate) and "usb cable" == "usb cable!" (d, a labelled equivalent).
    assert (title["n_masked"], title["n_true_masked"], title["n_true"]) == (2, 2, 2)
    assert title["precision"] == 1.0 and title["recall"] == 1.0
    assert {"precision", "recall", "f1", "n_masked", "n_true", "n_pairs", "seconds"} <= set(table.columns)


def test_sample_batches_are_the_training_batches(tiny_config, tiny_store):
    from querylife.batches import epoch_batches
    from querylife.config import with_overrides
    from querylife.data.prepare import prepare_dataset

    data = prepare_dataset(tiny_store.catalog_path, tiny_store.pairs_path, image_size=32, progress=False)
    cfg = with_overrides(tiny_config, {"train.batch_size": 8, "train.hard_negatives": 1, "train.seed": 3})
    steps = len(list(epoch_batches(data, cfg, 0)))
    batches = sample_batches(data, cfg, n_batches=steps + 3)
    assert len(batches) == steps + 3  # more than one epoch holds: later epochs are drawn too
    trained = [b for e in (0, 1) for b in epoch_batches(data, cfg, e) if len(b.product_rows) >= 2][: steps + 3]
    assert batches == [(b.queries, b.product_ids, b.positive_ids) for b in trained]  # exactly what training sees
    train = data.splits["train"]
    pos = train[train["positive"]]
    positives = set(zip(pos["query"], pos["product_id"], strict=True))
    for queries, product_ids, positive_ids in batches:
        assert len(positive_ids) == len(queries) <= 8 and product_ids[: len(queries)] == positive_ids
        assert len(set(queries)) == len(queries) and len(set(positive_ids)) == len(positive_ids)
        assert all((q, p) in positives for q, p in zip(queries, positive_ids, strict=True))
    assert any(len(p) > len(q) for q, p, _ in batches)  # the hard negatives are judged too
    assert sample_batches(data, cfg, steps + 3) == batches
    assert sample_batches(data, cfg, steps + 3, seed=4) != batches
    assert sample_batches(data, cfg, 0) == []


def test_sample_batches_are_what_the_trainer_passes_its_judge(tiny_config, tiny_store, tmp_path):
    """`genfilt evaluate` (sample_batches) scores the very batches a training run hands its false-negative judge:
    recorded from Trainer.fit, hard negatives included, across an epoch boundary."""
    import numpy as np
    import torch

    from querylife.config import with_overrides
    from querylife.data.prepare import prepare_dataset
    from querylife.train import Trainer

    data = prepare_dataset(tiny_store.catalog_path, tiny_store.pairs_path, image_size=32, progress=False)
    cfg = with_overrides(tiny_config, {"train.batch_size": 16, "train.hard_negatives": 1, "train.seed": 5,
                                       "train.epochs": 2, "train.patience": 0})
    ids = data.catalog["product_id"].to_numpy()
    seen: list[tuple[list[str], list[str]]] = []

    def record(queries, product_rows):
        seen.append((list(queries), [str(p) for p in ids[np.asarray(product_rows)]]))
        return torch.zeros(len(queries), len(product_rows), dtype=torch.bool)

    Trainer(cfg, data, tmp_path / "run", negative_mask_fn=record, progress=False).fit()
    sampled = sample_batches(data, cfg, n_batches=len(seen))
    assert len(seen) > 2 and len(sampled) == len(seen)
    assert [(q, cols) for q, cols, _ in sampled] == seen
    assert all(cols[: len(q)] == pos for q, cols, pos in sampled)  # the positives are the first columns
