"""Listing titles. Fashion-style titles (image-informative types) are brand and marketing noise around a noun:
they rarely name a drawn attribute, and their collection names may even name a wrong one. Spec-sheet titles
(title-informative types) name every attribute that is not drawn, in the spelling sellers use ("20000mAh")."""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np

from .spec import StorefrontSpec
from .streams import pick
from .words import surface

__all__ = ["add_typo", "fashion_title", "tech_title"]


def _qualify(spec: StorefrontSpec, noun: str, value: str) -> str:
    """``noun`` qualified by ``value`` in the language's word order ("Linen Dress", "Alfombra Roja")."""
    return f"{noun} {value}" if spec.noun_first else f"{value} {noun}"


def fashion_title(
    spec: StorefrontSpec,
    ptype: str,
    attrs: Mapping[str, str],
    identity: tuple[str, str, str],
    rng: np.random.Generator,
    mention_rate: float,
) -> str:
    """A fashion title for an item of ``identity`` (brand, collection line, audience)."""
    brand, line, aud = identity
    tspec = spec.product_types[ptype]
    vocab = spec.vocabulary
    noun = pick(rng, tspec.title_nouns)
    if rng.random() < mention_rate:
        # The rare title that names a true attribute, so the title is weakly (not never) informative.
        value = attrs[pick(rng, list(tspec.image_attributes))]
        noun = _qualify(spec, noun, surface(spec, value, rng, 0.6).title())
    for a in tspec.attributes:  # attributes that are not drawn are always written
        if a not in tspec.image_attributes:
            noun = _qualify(spec, noun, spec.title_spelling(attrs[a]))
    adj = rng.choice(len(vocab.fashion_adjectives), size=2, replace=False)
    adj1, adj2 = vocab.fashion_adjectives[adj[0]], vocab.fashion_adjectives[adj[1]]
    tail = pick(rng, tspec.tails + vocab.fashion_tails)
    template = int(rng.integers(5))
    if template == 0:
        parts = [brand, line, adj1, aud, noun, tail]
    elif template == 1:
        parts = [aud, adj1, adj2, noun, "-", brand, line]
    elif template == 2:
        parts = [brand, noun, f'"{line}"', adj1, tail]
    elif template == 3:
        parts = [adj1, brand, line, noun, aud, tail]
    else:
        parts = [brand, line, adj1, adj2, noun, "|", tail]
    title = " ".join(p for p in parts if p)
    return title.rstrip(" |-")


def tech_title(
    spec: StorefrontSpec, ptype: str, attrs: Mapping[str, str], brand: str, series: str, rng: np.random.Generator
) -> str:
    """A spec-sheet title for an item of ``brand`` and ``series``."""
    tspec = spec.product_types[ptype]
    values = [spec.title_spelling(attrs[a]) for a in tspec.attributes if a not in tspec.image_attributes]
    order = rng.permutation(len(values))
    values = [values[i] for i in order]
    noun = pick(rng, tspec.title_nouns)
    feats = rng.choice(len(tspec.features), size=2, replace=False)
    f1, f2 = (tspec.features[i] for i in feats)
    tail = pick(rng, spec.vocabulary.tech_tails)
    if tspec.for_attribute is not None:
        # Written "... Case for iPhone 15", the way marketplaces list cases.
        target = spec.title_spelling(attrs[tspec.for_attribute])
        rest = [v for v in values if v != target]
        if spec.title_drop_rate:  # a careless seller leaves specs out; the "for" target is always there
            rest = [v for v in rest if rng.random() >= spec.title_drop_rate]
        template = int(rng.integers(3))
        if template == 0:
            parts = [brand, series, *rest, f1, noun, spec.for_word, target, tail]
        elif template == 1:
            parts = [target, *rest, noun, "-", brand, f1, f2]
        else:
            parts = [brand, f1, f2, noun, spec.for_word, target, *rest, tail]
    else:
        if spec.title_drop_rate:
            values = [v for v in values if rng.random() >= spec.title_drop_rate]
        template = int(rng.integers(3))
        if template == 0:
            parts = [brand, series, *values, f1, noun, tail]
        elif template == 1:
            parts = [brand, f1, noun, *values, f2, tail]
        else:
            parts = [*values[:1], f1, noun, brand, series, *values[1:], tail]
    return " ".join(p for p in parts if p).rstrip(" -")


def add_typo(title: str, rng: np.random.Generator) -> str:
    """``title`` with two neighbouring letters of one of its longer words swapped ("Hadr Drive")."""
    words = title.split(" ")
    long = [i for i, w in enumerate(words) if len(w) >= 4 and w.isalpha()]
    if not long:
        return title
    i = long[int(rng.integers(len(long)))]
    w = words[i]
    j = int(rng.integers(1, len(w) - 2))  # keep the first and last letters, as typos mostly do
    words[i] = w[:j] + w[j + 1] + w[j] + w[j + 2 :]
    return " ".join(words)
