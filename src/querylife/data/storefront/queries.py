"""Shopper queries: a product type plus the canonical values of the attributes it names, written the way
shoppers write them. Each query is made from a real listing, so it has at least one exact match.

Different strings can mean the same thing ("20000mah power bank", "power bank 20000 mah"); a query's *intent*
(type + attributes) groups them, and splitting by intent keeps a test meaning out of training.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass

import numpy as np

from . import streams
from .catalog import Listing, draw_language
from .config import DemoConfig
from .spec import ProductTypeSpec, StorefrontSpec
from .streams import pick
from .words import surface

__all__ = ["Query", "build_queries"]


@dataclass
class Query:
    """One distinct query string."""

    text: str
    product_type: str
    attributes: dict[str, str]  # the attributes the query names (canonical values)
    language: str = "en"

    @property
    def intent(self) -> str:
        return self.product_type + "|" + json.dumps(self.attributes, sort_keys=True)


def _query_text(spec: StorefrontSpec, ptype: str, attrs: Mapping[str, str], rng: np.random.Generator) -> str:
    tspec = spec.product_types[ptype]
    words = [surface(spec, v, rng, 0.7) for v in attrs.values()]
    if len(words) > 1 and rng.random() < 0.2:
        words = [words[i] for i in rng.permutation(len(words))]
    noun = pick(rng, tspec.query_nouns)
    if tspec.for_attribute is not None and tspec.for_attribute in attrs and rng.random() < 0.3:
        target = words.pop(list(attrs).index(tspec.for_attribute))
        if spec.noun_first:
            return " ".join([noun, *words, spec.for_word, target])
        return " ".join([*words, noun, spec.for_word, target])
    if tspec.informative != "image" and words and rng.random() < 0.25:
        # the less usual order of the language ("power bank 20000mah"; "roja alfombra")
        return " ".join([*words, noun] if spec.noun_first else [noun, *words])
    return " ".join([noun, *words] if spec.noun_first else [*words, noun])


def _attribute_subset(tspec: ProductTypeSpec, rng: np.random.Generator) -> list[str]:
    names = list(tspec.attributes)
    # Mostly one or two attributes, like real queries; a few bare type queries ("dress").
    k_probs = {
        1: (0.05, 0.95),
        2: (0.04, 0.56, 0.40),
        3: (0.04, 0.36, 0.40, 0.20),
        4: (0.04, 0.36, 0.38, 0.17, 0.05),
        5: (0.04, 0.34, 0.36, 0.17, 0.06, 0.03),
    }[len(names)]
    k = int(rng.choice(len(k_probs), p=k_probs))
    if tspec.informative == "image":
        # colour is what shoppers type most; the title-only material less often
        weights = np.array([0.40 if a == "colour" else 0.20 if a in tspec.image_attributes else 0.20 for a in names])
    elif tspec.informative == "mixed":
        weights = np.ones(len(names))  # one attribute each way, asked for equally often
    else:
        # the photo-only colour of a gadget is asked for less often than its specs
        weights = np.array([0.5 if a in tspec.image_attributes else 1.0 for a in names])
    chosen = rng.choice(len(names), size=k, replace=False, p=weights / weights.sum())
    return [names[i] for i in sorted(chosen)]


def build_queries(
    config: DemoConfig, spec: StorefrontSpec, listings: list[Listing], rng: np.random.Generator
) -> tuple[list[Query], int]:
    """Up to ``config.effective_n_queries`` distinct queries, and the number of sampling attempts it took.

    In a storefront with other languages each query's language is drawn from its own stream; a query in another
    language has the same intent as its paraphrases in the main one.
    """
    lang_rng = streams.rng(config.seed, streams.LANGUAGE, 1) if spec.languages else None
    written = {code: spec.in_language(code) for code in spec.language_codes}
    by_type: dict[str, list[Listing]] = {t: [] for t in spec.product_types}
    for listing in listings:
        by_type[listing.product_type].append(listing)
    target = config.effective_n_queries
    queries: list[Query] = []
    seen: set[str] = set()
    types = list(spec.product_types)
    exhausted: set[str] = set()
    attempts, turn = 0, 0
    # Types take turns so that every type gets about the same number of queries (per-type metrics need it).
    while len(queries) < target and len(exhausted) < len(types):
        ptype = types[turn % len(types)]
        turn += 1
        if ptype in exhausted:
            continue
        tspec = spec.product_types[ptype]
        for _ in range(200):
            attempts += 1
            anchor = pick(rng, by_type[ptype])
            attrs = {a: anchor.attributes[a] for a in _attribute_subset(tspec, rng)}
            lang = draw_language(spec, lang_rng, "query")
            text = _query_text(written[lang], ptype, attrs, rng)
            if text not in seen:  # query strings are unique; a repeat would only duplicate labels
                seen.add(text)
                queries.append(Query(text, ptype, attrs, lang))
                break
        else:
            exhausted.add(ptype)
    return queries, attempts
