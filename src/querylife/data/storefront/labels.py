"""Graded labels: each query gets a list of candidates labelled exact (its type, every named attribute matches),
partial (its type, some named attribute differs) or irrelevant (another type; half of them "hard", sharing an
attribute value with the query, such as a red t-shirt for "red dress"). Ranking the exact above the partial needs
the attributes, hence the modality that carries them."""

from __future__ import annotations

import numpy as np

from .catalog import Listing
from .config import DemoConfig
from .queries import Query
from .spec import StorefrontSpec

__all__ = ["LABELS", "build_pairs"]

LABELS = ("exact", "partial", "irrelevant")


def build_pairs(
    config: DemoConfig, spec: StorefrontSpec, listings: list[Listing], queries: list[Query], rng: np.random.Generator
) -> list[tuple[str, str, str]]:
    """(query, product_id, label) rows, each query's candidates in a shuffled order."""
    type_index: dict[str, np.ndarray] = {}
    codes: dict[str, dict[str, np.ndarray]] = {}
    for ptype, tspec in spec.product_types.items():
        idx = np.array([i for i, li in enumerate(listings) if li.product_type == ptype], dtype=np.int64)
        type_index[ptype] = idx
        codes[ptype] = {a: np.array([listings[i].attributes[a] for i in idx], dtype=object) for a in tspec.attributes}
    # Every attribute value a listing has, for hard irrelevant candidates (a red t-shirt for "red dress").
    values_of = [set(li.attributes.values()) for li in listings]
    all_idx = np.arange(len(listings))
    type_of = np.array([li.product_type for li in listings], dtype=object)

    pairs: list[tuple[str, str, str]] = []
    for q in queries:
        idx = type_index[q.product_type]
        match = np.ones(len(idx), dtype=bool)
        for a, v in q.attributes.items():
            match &= codes[q.product_type][a] == v
        exact_pool, partial_pool = idx[match], idx[~match]
        n_cand = int(rng.integers(config.min_candidates, config.max_candidates + 1))
        n_irr = round(n_cand * rng.uniform(*config.irrelevant_share))
        n_same = n_cand - n_irr
        if q.attributes:
            n_exact = min(len(exact_pool), max(1, round(n_cand * rng.uniform(*config.exact_share))))
            n_partial = min(len(partial_pool), n_same - n_exact)
            # A small catalogue may run out of partials; fill with exact matches rather than shrink the list.
            n_exact = min(len(exact_pool), n_same - n_partial)
        else:
            n_exact, n_partial = min(len(exact_pool), n_same), 0
        exact = rng.choice(exact_pool, size=n_exact, replace=False)
        partial = rng.choice(partial_pool, size=n_partial, replace=False)

        other = all_idx[type_of != q.product_type]
        qvals = set(q.attributes.values())
        hard = np.array([i for i in other if qvals & values_of[i]], dtype=np.int64) if qvals else other[:0]
        n_hard = min(len(hard), n_irr // 2)
        irr_hard = rng.choice(hard, size=n_hard, replace=False) if n_hard else hard[:0]
        rest = np.setdiff1d(other, irr_hard, assume_unique=True)
        irr_rest = rng.choice(rest, size=min(len(rest), n_irr - n_hard), replace=False)

        cands = [(int(i), "exact") for i in exact] + [(int(i), "partial") for i in partial]
        cands += [(int(i), "irrelevant") for i in np.concatenate([irr_hard, irr_rest])]
        for j in rng.permutation(len(cands)):
            i, label = cands[j]
            pairs.append((q.text, listings[i].product_id, label))
    return pairs
