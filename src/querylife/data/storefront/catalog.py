"""The catalogue: items, their listings and product ids.

Some items are listed two or three times by different sellers (reworded title, re-shot photo); they share a
``group_id``. Group ids are ground truth for evaluating false-negative filtering (GenFilt) and must never be
used in training.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from . import streams
from .config import DemoConfig
from .spec import StorefrontSpec
from .streams import pick
from .titles import add_typo, fashion_title, tech_title
from .words import surface

__all__ = ["Listing", "build_catalog", "draw_language"]


@dataclass
class Listing:
    """One row of the catalogue."""

    group: int  # index of the underlying item
    copy: int  # 0 for the first listing of an item, 1.. for its duplicates
    product_type: str
    attributes: dict[str, str]
    title: str
    seller: str
    product_id: str = ""
    language: str = "en"  # the language the title is written in
    has_image: bool = True
    icon: int = 0  # which stock picture a shared-icon type shows (independent of the attributes)

    @property
    def photo_index(self) -> int:
        """Key of this listing's photo stream: (item, copy), so duplicates get fresh but reproducible photos."""
        return self.group * 8 + self.copy


def draw_language(spec: StorefrontSpec, gen: np.random.Generator | None, kind: str) -> str:
    """The language of one title (``kind="title"``) or query (``"query"``); one draw when there are others."""
    if gen is None or not spec.languages:
        return spec.language
    u, acc = gen.random(), 0.0
    for lang in spec.languages:
        acc += lang.title_rate if kind == "title" else lang.query_rate
        if u < acc:
            return lang.code
    return spec.language


def build_catalog(config: DemoConfig, spec: StorefrontSpec) -> list[Listing]:
    """``config.n_products`` listings in a shuffled order, with ids ``p000000``.. in that order."""
    rng = streams.rng(config.seed, streams.CATALOG)
    lang_rng = streams.rng(config.seed, streams.LANGUAGE) if spec.languages else None
    written = {code: spec.in_language(code) for code in spec.language_codes}
    vocab = spec.vocabulary
    types = list(spec.product_types)
    listings: list[Listing] = []
    group = 0
    while len(listings) < config.n_products:
        # Round-robin types keep every type equally represented even in tiny test catalogues.
        ptype = types[group % len(types)]
        tspec = spec.product_types[ptype]
        attrs = {a: pick(rng, vals) for a, vals in tspec.attributes.items()}
        n_copies = 1
        if rng.random() < config.duplicate_rate:
            n_copies = 3 if rng.random() < config.triple_rate else 2
        n_copies = min(n_copies, config.n_products - len(listings))
        sellers = rng.choice(len(vocab.sellers), size=n_copies, replace=False)
        marketing = tspec.title_kind == "marketing"
        if marketing:
            line = pick(rng, vocab.fashion_lines)
            if rng.random() < config.title_decoy_rate:
                decoy_attr = pick(rng, list(tspec.image_attributes))
                wrong = [v for v in tspec.attributes[decoy_attr] if v != attrs[decoy_attr]]
                line = f"{surface(spec, pick(rng, wrong), rng, 0.8).title()} {line}"
            brand = pick(rng, vocab.fashion_brands)
            audience = int(rng.integers(len(tspec.audiences)))  # an index: a translated title keeps the audience
        else:
            brand, line = pick(rng, vocab.tech_brands), pick(rng, vocab.tech_series)
        for copy in range(n_copies):
            # Duplicates keep the item's identity (brand, line, audience, attributes) and reword the rest; another
            # seller may write in another language.
            lang = draw_language(spec, lang_rng, "title")
            wspec = written[lang]
            if marketing:
                auds = wspec.product_types[ptype].audiences
                identity = (brand, line, auds[audience % len(auds)])
                title = fashion_title(wspec, ptype, attrs, identity, rng, config.title_attribute_rate)
            else:
                title = tech_title(wspec, ptype, attrs, brand, line, rng)
            if spec.title_typo_rate and rng.random() < spec.title_typo_rate:
                title = add_typo(title, rng)
            listing = Listing(group, copy, ptype, dict(attrs), title, vocab.sellers[sellers[copy]], language=lang)
            listings.append(listing)
        group += 1
    _photos(config, spec, listings)
    # Ids are assigned after a shuffle so that neither id order nor row order gives the duplicates away.
    order = rng.permutation(len(listings))
    shuffled = [listings[i] for i in order]
    for i, listing in enumerate(shuffled):
        listing.product_id = f"p{i:06d}"
    return shuffled


def _photos(config: DemoConfig, spec: StorefrontSpec, listings: list[Listing]) -> None:
    """Which listings have no photo, and which stock icon a shared-icon listing shows (each from its own stream)."""
    if spec.missing_image_rate:
        gen = streams.rng(config.seed, streams.IMAGE_PRESENCE)
        for li in listings:
            li.has_image = bool(gen.random() >= spec.missing_image_rate)
    icon_rng = streams.rng(config.seed, streams.ICON)
    for li in listings:
        n = spec.product_types[li.product_type].icon_variants
        if spec.product_types[li.product_type].image_style == "shared_icon" and n > 1:
            li.icon = int(icon_rng.integers(n))
