"""The catalogue: items, their listings and product ids.

Some items are listed two or three times by different sellers (reworded title, re-shot photo); they share a
``group_id``. Group ids are ground truth for evaluating false-negative filtering (GenFilt) and must never be
used in training.
"""

from __future__ import annotations

from dataclasses import dataclass

from . import streams
from .config import DemoConfig
from .spec import StorefrontSpec
from .streams import pick
from .titles import fashion_title, tech_title
from .words import surface

__all__ = ["Listing", "build_catalog"]


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

    @property
    def photo_index(self) -> int:
        """Key of this listing's photo stream: (item, copy), so duplicates get fresh but reproducible photos."""
        return self.group * 8 + self.copy


def build_catalog(config: DemoConfig, spec: StorefrontSpec) -> list[Listing]:
    """``config.n_products`` listings in a shuffled order, with ids ``p000000``.. in that order."""
    rng = streams.rng(config.seed, streams.CATALOG)
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
        if tspec.informative == "image":
            line = pick(rng, vocab.fashion_lines)
            if rng.random() < config.title_decoy_rate:
                decoy_attr = pick(rng, list(tspec.image_attributes))
                wrong = [v for v in tspec.attributes[decoy_attr] if v != attrs[decoy_attr]]
                line = f"{surface(spec, pick(rng, wrong), rng, 0.8).title()} {line}"
            identity = (pick(rng, vocab.fashion_brands), line, pick(rng, tspec.audiences))
        else:
            brand, line = pick(rng, vocab.tech_brands), pick(rng, vocab.tech_series)
        for copy in range(n_copies):
            # Duplicates keep the item's identity (brand, line, audience, attributes) and reword the rest.
            if tspec.informative == "image":
                title = fashion_title(spec, ptype, attrs, identity, rng, config.title_attribute_rate)
            else:
                title = tech_title(spec, ptype, attrs, brand, line, rng)
            listings.append(Listing(group, copy, ptype, dict(attrs), title, vocab.sellers[sellers[copy]]))
        group += 1
    # Ids are assigned after a shuffle so that neither id order nor row order gives the duplicates away.
    order = rng.permutation(len(listings))
    shuffled = [listings[i] for i in order]
    for i, listing in enumerate(shuffled):
        listing.product_id = f"p{i:06d}"
    return shuffled
