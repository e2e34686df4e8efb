"""Procedurally generated demo storefront: the Query-LIFE problem in miniature, made on a laptop CPU.

Half of the product types are clothing-like: the attributes a shopper types (colour, pattern, shape) are drawn
in the product photo and only rarely named in the title, whose words are brand and marketing noise. The other
half are electronics-like: the discriminating attributes (capacity, wattage, phone model, cable length) are
only in the title and the photo is a generic device icon whose colour and placement say nothing about them.
A model that fuses title and image per product type (and query) should therefore beat either modality alone.

Some items are listed two or three times by different sellers (reworded title, re-shot photo); they share a
``group_id``. Group ids are ground truth for evaluating false-negative filtering (GenFilt) and must never be
used in training.

Everything is derived from ``DemoConfig.seed`` through ``numpy.random.SeedSequence`` streams, so the same
config gives byte-identical Parquet files and images. docs/DEMO_DATA.md describes the format and the labels.
"""

from __future__ import annotations

import argparse
import json
import logging
import math
import os
import re
import shutil
import tempfile
import textwrap
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Literal

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
from PIL import Image, ImageDraw, ImageFont
from tqdm.auto import tqdm

__all__ = [
    "DemoConfig",
    "DemoStorefront",
    "GENERATOR_VERSION",
    "IMAGE_INFORMATIVE_TYPES",
    "PRODUCT_TYPES",
    "TITLE_INFORMATIVE_TYPES",
    "ProductTypeSpec",
    "generate_demo",
    "render_attribute_sheet",
    "render_contact_sheet",
    "render_product_image",
]

log = logging.getLogger(__name__)

# Bump whenever the output for a given config changes, so that cached storefronts are regenerated.
GENERATOR_VERSION = "5"
_GENERATOR_NAME = "querylife.data.demo"

LABELS = ("exact", "partial", "irrelevant")

# ----------------------------------------------------------------------------------------------------
# Configuration and result
# ----------------------------------------------------------------------------------------------------


@dataclass
class DemoConfig:
    """Knobs of the demo storefront. Every field is recorded in meta.json and decides cache reuse."""

    n_products: int = 3000  # listings in the catalogue, duplicates included
    seed: int = 0
    image_size: int = 64  # square RGB PNGs
    # Distinct queries; 0 means n_products // 5 (600 for the default catalogue).
    n_queries: int = 0
    # Labelled candidates per query, drawn uniformly from [min, max].
    min_candidates: int = 15
    max_candidates: int = 25
    # Share of a query's candidates taken from other product types (labelled irrelevant), drawn per query.
    irrelevant_share: tuple[float, float] = (0.25, 0.35)
    # Share of a query's candidates that match every attribute the query names (labelled exact), per query.
    exact_share: tuple[float, float] = (0.13, 0.28)
    # Share of items listed more than once (2-3 listings: other sellers, reworded titles, re-shot photos).
    duplicate_rate: float = 0.12
    # Among duplicated items, share listed three times rather than twice.
    triple_rate: float = 0.3
    # Chance that a clothing title names one of the item's true attributes (the image carries the rest).
    title_attribute_rate: float = 0.1
    # Chance that a clothing item's collection name holds an attribute word that does NOT describe it ("Blue
    # Lagoon" on a red dress), as real brand and collection names do: text matching is then misleading, not just
    # silent, for these types, and a model has to learn to trust the photo.
    title_decoy_rate: float = 0.3
    # Gaussian pixel noise, standard deviation range on the 0-255 scale, drawn per listing photo.
    noise_std: tuple[float, float] = (2.0, 7.0)

    def __post_init__(self) -> None:
        # Tuples arrive as lists when a config is read back from JSON.
        self.irrelevant_share = tuple(self.irrelevant_share)  # type: ignore[assignment]
        self.exact_share = tuple(self.exact_share)  # type: ignore[assignment]
        self.noise_std = tuple(self.noise_std)  # type: ignore[assignment]
        if self.n_products < 8 * len(PRODUCT_TYPES):
            raise ValueError(f"n_products must be >= {8 * len(PRODUCT_TYPES)}, got {self.n_products}")
        if not 16 <= self.image_size <= 1024:
            raise ValueError(f"image_size must be in [16, 1024], got {self.image_size}")
        if self.n_queries < 0:
            raise ValueError(f"n_queries must be >= 0, got {self.n_queries}")
        if not 3 <= self.min_candidates <= self.max_candidates:
            raise ValueError("need 3 <= min_candidates <= max_candidates")
        for name in ("irrelevant_share", "exact_share", "noise_std"):
            lo, hi = getattr(self, name)
            if not 0 <= lo <= hi or (name != "noise_std" and hi >= 1):
                raise ValueError(f"{name} must be an increasing (low, high) pair in range, got {(lo, hi)}")
        for name in ("duplicate_rate", "triple_rate", "title_attribute_rate", "title_decoy_rate"):
            if not 0.0 <= getattr(self, name) <= 1.0:
                raise ValueError(f"{name} must be in [0, 1], got {getattr(self, name)}")

    @property
    def effective_n_queries(self) -> int:
        return self.n_queries or max(8, self.n_products // 5)

    def to_json(self) -> dict[str, Any]:
        """The config as plain JSON types (tuples become lists), as stored in meta.json."""
        return json.loads(json.dumps(asdict(self)))


@dataclass
class DemoStorefront:
    """Paths of a generated storefront (what :func:`generate_demo` returns)."""

    out_dir: Path
    catalog_path: Path  # out_dir / "catalog.parquet"
    pairs_path: Path  # out_dir / "pairs.parquet"
    meta_path: Path  # out_dir / "meta.json"
    # Extra: one row per query with its product type and the attributes it names (for per-type evaluation).
    queries_path: Path | None = None

    @classmethod
    def at(cls, out_dir: str | Path) -> DemoStorefront:
        out = Path(out_dir)
        return cls(
            out, out / "catalog.parquet", out / "pairs.parquet", out / "meta.json", out / "queries.parquet"
        )

    def meta(self) -> dict[str, Any]:
        return json.loads(self.meta_path.read_text())

    def type_groups(self) -> dict[str, list[str]]:
        """Product types grouped by the modality that carries most of their attributes (for reports)."""
        meta = self.meta()
        return {
            "image-informative": meta["image_informative_types"],
            "title-informative": meta["title_informative_types"],
        }

    def config_overrides(self) -> dict[str, str]:
        """Config overrides that point an experiment at this storefront, split by intent: the storefront phrases
        one intent several ways, and a paraphrase of a test query in training would flatter every trained method.

        Example: ``with_overrides(config, store.config_overrides())``.
        """
        return {"data.catalog": str(self.catalog_path), "data.pairs": str(self.pairs_path), "data.split_by": "intent"}


# ----------------------------------------------------------------------------------------------------
# The product world
# ----------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class ProductTypeSpec:
    """One product type: its attributes, where they are visible, and the words used for it."""

    name: str
    informative: Literal["image", "title"]  # the modality that carries the searched attributes
    attributes: dict[str, tuple[str, ...]]  # attribute -> canonical values, in the order queries name them
    query_nouns: tuple[str, ...]
    title_nouns: tuple[str, ...]
    # Attributes drawn in the photo (and only rarely, or never, written in the title); every other attribute is
    # written in the title and not drawn. Each type has some of both, so which modality matters depends on the
    # query too ("red dress" needs the photo, "linen dress" the title): the case for a query-aware gate.
    image_attributes: tuple[str, ...] = ()


PRODUCT_TYPES: dict[str, ProductTypeSpec] = {
    s.name: s
    for s in (
        ProductTypeSpec(
            "dress",
            "image",
            {
                "colour": ("red", "blue", "green", "black", "yellow", "pink"),
                "pattern": ("plain", "striped", "dotted", "checked"),
                "shape": ("a-line", "bodycon", "maxi"),
                "material": ("cotton", "linen", "silk", "chiffon"),
            },
            ("dress", "dress", "dresses"),
            ("Dress", "Dress", "Party Dress", "Day Dress", "Sundress", "Frock"),
            ("colour", "pattern", "shape"),
        ),
        ProductTypeSpec(
            "t-shirt",
            "image",
            {
                "colour": ("red", "blue", "green", "black", "yellow", "pink"),
                "pattern": ("plain", "striped", "dotted", "checked"),
                "sleeve": ("short-sleeve", "long-sleeve", "sleeveless"),
                "material": ("cotton", "linen", "polyester", "bamboo"),
            },
            ("t-shirt", "tshirt", "tee", "t shirt"),
            ("T-Shirt", "Tee", "Basic Tee", "Top", "T Shirt", "Shirt"),
            ("colour", "pattern", "sleeve"),
        ),
        ProductTypeSpec(
            "sneakers",
            "image",
            {
                "colour": ("red", "blue", "green", "black", "yellow", "pink"),
                "pattern": ("plain", "striped", "dotted", "checked"),
                "style": ("high-top", "low-top", "slip-on"),
                "material": ("leather", "canvas", "suede", "knit"),
            },
            ("sneakers", "trainers", "sneaker"),
            ("Sneakers", "Trainers", "Running Shoes", "Casual Shoes", "Sneaker", "Sports Shoes"),
            ("colour", "pattern", "style"),
        ),
        ProductTypeSpec(
            "handbag",
            "image",
            {
                "colour": ("red", "blue", "green", "black", "yellow", "pink"),
                "pattern": ("plain", "striped", "dotted", "checked"),
                "shape": ("tote", "clutch", "crossbody"),
                "material": ("leather", "canvas", "nylon", "straw"),
            },
            ("handbag", "bag", "purse"),
            ("Handbag", "Bag", "Purse", "Fashion Bag", "Ladies Bag"),
            ("colour", "pattern", "shape"),
        ),
        ProductTypeSpec(
            "power bank",
            "title",
            {
                "capacity": ("5000mah", "10000mah", "20000mah", "30000mah"),
                "output": ("20w", "45w", "65w"),
                "colour": ("black", "blue", "pink", "green"),
            },
            ("power bank", "powerbank", "battery pack"),
            ("Power Bank", "Powerbank", "Portable Power Bank", "Battery Pack", "External Battery"),
            ("colour",),
        ),
        ProductTypeSpec(
            "charger",
            "title",
            {
                "wattage": ("20w", "30w", "45w", "65w", "100w"),
                "ports": ("1-port", "2-port", "3-port"),
                "plug": ("eu plug", "uk plug", "us plug"),
                "colour": ("black", "blue", "pink", "green"),
            },
            ("charger", "wall charger", "charging adapter"),
            ("Charger", "Wall Charger", "USB Charger", "Charging Plug", "Power Adapter"),
            ("colour",),
        ),
        ProductTypeSpec(
            "phone case",
            "title",
            {
                "model": ("iphone 13", "iphone 14", "iphone 15", "galaxy s23", "galaxy s24", "pixel 8"),
                "material": ("silicone", "leather", "clear", "rugged"),
                "colour": ("black", "blue", "pink", "green"),
            },
            ("case", "phone case", "cover"),
            ("Case", "Phone Case", "Cover", "Protective Case"),
            ("colour",),
        ),
        ProductTypeSpec(
            "usb cable",
            "title",
            {
                "connector": ("usb-c", "lightning", "micro-usb"),
                "length": ("0.5m", "1m", "2m", "3m"),
                "colour": ("black", "blue", "pink", "green"),
            },
            ("cable", "usb cable", "charging cable"),
            ("Cable", "Charging Cable", "Data Cable", "Cord", "USB Cable"),
            ("colour",),
        ),
    )
}

IMAGE_INFORMATIVE_TYPES = [n for n, s in PRODUCT_TYPES.items() if s.informative == "image"]
TITLE_INFORMATIVE_TYPES = [n for n, s in PRODUCT_TYPES.items() if s.informative == "title"]
COLOURS = PRODUCT_TYPES["dress"].attributes["colour"]

# How shoppers (and the occasional clothing title) write a value; the canonical value comes first.
_SURFACE: dict[str, tuple[str, ...]] = {
    "plain": ("plain", "solid"),
    "striped": ("striped", "stripe"),
    "dotted": ("polka dot", "dotted"),
    "checked": ("checked", "plaid", "checkered"),
    "a-line": ("a-line", "a line"),
    "bodycon": ("bodycon", "fitted"),
    "maxi": ("maxi", "floor length"),
    "short-sleeve": ("short sleeve", "short-sleeve"),
    "long-sleeve": ("long sleeve", "long-sleeve"),
    "sleeveless": ("sleeveless", "tank"),
    "high-top": ("high top", "high-top"),
    "low-top": ("low top", "low-top"),
    "slip-on": ("slip on", "slip-on"),
    "crossbody": ("crossbody", "cross body"),
    **{f"{c}mah": (f"{c}mah", f"{c} mah") for c in ("5000", "10000", "20000", "30000")},
    "1-port": ("1 port", "single port", "1-port"),
    "2-port": ("2 port", "dual port", "2-port"),
    "3-port": ("3 port", "3-port"),
    "eu plug": ("eu plug", "eu"),
    "uk plug": ("uk plug", "uk"),
    "us plug": ("us plug", "us"),
    "galaxy s23": ("galaxy s23", "samsung s23", "samsung galaxy s23"),
    "galaxy s24": ("galaxy s24", "samsung s24", "samsung galaxy s24"),
    "pixel 8": ("pixel 8", "google pixel 8"),
    "clear": ("clear", "transparent"),
    "rugged": ("rugged", "heavy duty"),
    "usb-c": ("usb-c", "usb c", "type-c", "type c"),
    "micro-usb": ("micro-usb", "micro usb"),
    "0.5m": ("0.5m", "50cm"),
    "1m": ("1m", "1 meter"),
    "2m": ("2m", "2 meter"),
    "3m": ("3m", "3 meter"),
}

# How electronics titles spell a value (always containing the canonical value, case-insensitively).
_TITLE_FORM: dict[str, str] = {
    **{f"{c}mah": f"{c}mAh" for c in ("5000", "10000", "20000", "30000")},
    **{w: w.upper() for w in ("20w", "30w", "45w", "65w", "100w")},
    **{p: p.title() for p in ("1-port", "2-port", "3-port")},
    "eu plug": "EU Plug",
    "uk plug": "UK Plug",
    "us plug": "US Plug",
    "iphone 13": "iPhone 13",
    "iphone 14": "iPhone 14",
    "iphone 15": "iPhone 15",
    "galaxy s23": "Galaxy S23",
    "galaxy s24": "Galaxy S24",
    "pixel 8": "Pixel 8",
    "usb-c": "USB-C",
    "micro-usb": "Micro-USB",
    **{m: m for m in ("0.5m", "1m", "2m", "3m")},
}

# Marketing vocabulary. None of these words may name (or look like) an attribute value of any type.
_FASHION_BRANDS = (
    "Lumora", "Vestia", "Kairo", "Nordhaven", "Maison Elle", "Arden", "Solenne", "Tavi", "Brixton Lane",
    "Oaklyn", "Mirabel", "Zephyr", "Calloway", "Nomad Studio", "Velour", "Ashby", "Odette", "Marlowe",
)  # fmt: skip
_FASHION_LINES = (
    "Aurora", "Solstice", "Riviera", "Serene", "Harbor", "Luna", "Nova", "Echo", "Haven", "Alpine", "Coastal",
    "Sierra", "Willow", "Atlas", "Breeze", "Juniper", "Cove", "Vista", "Muse", "Tempo",
)  # fmt: skip
_FASHION_ADJECTIVES = (
    "Summer", "Casual", "Elegant", "Premium", "New", "Trendy", "Classic", "Lightweight", "Breathable", "Soft",
    "Everyday", "Vintage", "Modern", "Comfortable", "Stylish", "Essential", "2024", "Limited Edition", "Chic",
    "Boho", "Cozy", "Urban",
)  # fmt: skip
_FASHION_AUDIENCE = {
    "dress": ("Women's", "Ladies", "Womens", ""),
    "t-shirt": ("Men's", "Women's", "Unisex", ""),
    "sneakers": ("Men's", "Women's", "Unisex", "Kids", ""),
    "handbag": ("Women's", "Ladies", ""),
}
_FASHION_TAILS = {
    "dress": ("for Party", "for Wedding Guest", "for Work", "Size S-XL", "with Pockets", "Hot Sale"),
    "t-shirt": ("Regular Fit", "Size S-XXL", "Cotton Blend", "for Gym", "Hot Sale", "Pack of 1"),
    "sneakers": ("for Walking", "Size 36-45", "Non-Slip", "for Running", "Hot Sale", "Breathable Mesh"),
    "handbag": ("for Work", "for Travel", "Gift Idea", "Faux Leather", "Hot Sale", "with Zip"),
}
_COMMON_TAILS = ("Free Shipping", "Best Seller", "Gift Idea", "Ships Fast", "")

_TECH_BRANDS = (
    "Voltix", "Ampero", "ChargeOne", "Nexcell", "Zentro", "Powerline", "Kinetiq", "Ohmly", "Lumen Tech",
    "Aircore", "Fluxa", "Cellsmith",
)  # fmt: skip
_TECH_SERIES = ("Pro", "Max", "Lite", "Go", "Plus", "X", "Air", "Ultra", "Neo", "Mini", "S", "Edge")
_TECH_FEATURES = {
    "power bank": ("Portable", "Fast Charging", "LED Display", "Slim", "Travel", "PD", "Compact"),
    "charger": ("Fast Charger", "GaN", "Travel", "Foldable", "PD", "Compact", "Quick Charge"),
    "phone case": ("Shockproof", "Slim Fit", "Anti-Scratch", "Magnetic", "Protective", "Drop Tested"),
    "usb cable": ("Fast Charging", "Data Sync", "Durable", "Tangle-Free", "Nylon Braided", "Quick Charge"),
}
_TECH_TAILS = ("Free Shipping", "Best Seller", "2 Year Warranty", "Certified", "New Model", "")

_SELLERS = (
    "shop_sunrise", "urbanmart", "daily_deals", "the_outlet", "bestbuy_hub", "megastore_eu", "trendhouse",
    "smart_gadgets", "homestyle", "citylook", "quickship", "valuezone", "primo_shop", "eastwind_trading",
    "northstar_store", "click_and_go", "market_square", "bazaar_online", "metro_supply", "globalmart",
    "fashion_corner", "tech_depot", "bright_retail", "harbor_goods",
)  # fmt: skip

# Listing colours of the clothing attribute values, and the contrasting colour patterns are drawn in.
_COLOUR_RGB: dict[str, tuple[int, int, int]] = {
    "red": (205, 35, 40),
    "blue": (40, 80, 200),
    "green": (40, 150, 65),
    "black": (32, 32, 34),
    "yellow": (240, 205, 40),
    "pink": (245, 140, 185),
}
_PATTERN_INK: dict[str, tuple[int, int, int]] = {
    "red": (245, 240, 230),
    "blue": (245, 240, 230),
    "green": (245, 240, 230),
    "black": (235, 235, 235),
    "yellow": (55, 55, 60),
    "pink": (70, 60, 90),
}
# Electronics body colours: drawn at random, independent of every attribute on purpose.
_DEVICE_RGB = (
    (35, 35, 38), (236, 236, 232), (128, 131, 138), (30, 45, 95), (60, 110, 200), (232, 160, 180),
    (70, 140, 95), (190, 192, 198), (150, 40, 45),
)  # fmt: skip

# ----------------------------------------------------------------------------------------------------
# Randomness: independent streams so that, e.g., changing image_size never changes titles or labels
# ----------------------------------------------------------------------------------------------------

_STREAM_CATALOG, _STREAM_QUERIES, _STREAM_ITEM_LOOK, _STREAM_PHOTO = range(4)


def _rng(seed: int, stream: int, index: int = 0) -> np.random.Generator:
    return np.random.default_rng(np.random.SeedSequence(entropy=seed, spawn_key=(stream, index)))


def _pick(rng: np.random.Generator, options: Sequence[Any]) -> Any:
    return options[int(rng.integers(len(options)))]


# ----------------------------------------------------------------------------------------------------
# Catalogue: items, listings, titles
# ----------------------------------------------------------------------------------------------------


@dataclass
class _Listing:
    group: int  # index of the underlying item
    copy: int  # 0 for the first listing of an item, 1.. for its duplicates
    product_type: str
    attributes: dict[str, str]
    title: str
    seller: str
    product_id: str = ""


def _surface(value: str, rng: np.random.Generator, p_canonical: float) -> str:
    forms = _SURFACE.get(value, (value,))
    if len(forms) == 1 or rng.random() < p_canonical:
        return forms[0]
    return _pick(rng, forms[1:])


def _fashion_title(
    ptype: str,
    attrs: Mapping[str, str],
    identity: tuple[str, str, str],
    rng: np.random.Generator,
    mention_rate: float,
) -> str:
    brand, line, aud = identity
    spec = PRODUCT_TYPES[ptype]
    noun = _pick(rng, spec.title_nouns)
    if rng.random() < mention_rate:
        # The rare title that names a true attribute, so the title is weakly (not never) informative.
        value = attrs[_pick(rng, list(spec.image_attributes))]
        noun = f"{_surface(value, rng, 0.6).title()} {noun}"
    for a in spec.attributes:  # attributes that are not drawn are always written
        if a not in spec.image_attributes:
            noun = f"{_TITLE_FORM.get(attrs[a], attrs[a].title())} {noun}"
    adj = rng.choice(len(_FASHION_ADJECTIVES), size=2, replace=False)
    adj1, adj2 = _FASHION_ADJECTIVES[adj[0]], _FASHION_ADJECTIVES[adj[1]]
    tail = _pick(rng, _FASHION_TAILS[ptype] + _COMMON_TAILS)
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


def _tech_title(
    ptype: str, attrs: Mapping[str, str], brand: str, series: str, rng: np.random.Generator
) -> str:
    spec = PRODUCT_TYPES[ptype]
    values = [_TITLE_FORM.get(attrs[a], attrs[a].title()) for a in spec.attributes if a not in spec.image_attributes]
    order = rng.permutation(len(values))
    values = [values[i] for i in order]
    noun = _pick(rng, spec.title_nouns)
    feats = rng.choice(len(_TECH_FEATURES[ptype]), size=2, replace=False)
    f1, f2 = (_TECH_FEATURES[ptype][i] for i in feats)
    tail = _pick(rng, _TECH_TAILS)
    if ptype == "phone case":
        # Cases are written "... Case for iPhone 15", the way marketplaces list them.
        model = _TITLE_FORM[attrs["model"]]
        rest = [v for v in values if v != model]
        template = int(rng.integers(3))
        if template == 0:
            parts = [brand, series, *rest, f1, noun, "for", model, tail]
        elif template == 1:
            parts = [model, *rest, noun, "-", brand, f1, f2]
        else:
            parts = [brand, f1, f2, noun, "for", model, *rest, tail]
    else:
        template = int(rng.integers(3))
        if template == 0:
            parts = [brand, series, *values, f1, noun, tail]
        elif template == 1:
            parts = [brand, f1, noun, *values, f2, tail]
        else:
            parts = [*values[:1], f1, noun, brand, series, *values[1:], tail]
    return " ".join(p for p in parts if p).rstrip(" -")


def _build_catalog(config: DemoConfig) -> list[_Listing]:
    rng = _rng(config.seed, _STREAM_CATALOG)
    types = list(PRODUCT_TYPES)
    listings: list[_Listing] = []
    group = 0
    while len(listings) < config.n_products:
        # Round-robin types keep every type equally represented even in tiny test catalogues.
        ptype = types[group % len(types)]
        spec = PRODUCT_TYPES[ptype]
        attrs = {a: _pick(rng, vals) for a, vals in spec.attributes.items()}
        n_copies = 1
        if rng.random() < config.duplicate_rate:
            n_copies = 3 if rng.random() < config.triple_rate else 2
        n_copies = min(n_copies, config.n_products - len(listings))
        sellers = rng.choice(len(_SELLERS), size=n_copies, replace=False)
        if spec.informative == "image":
            line = _pick(rng, _FASHION_LINES)
            if rng.random() < config.title_decoy_rate:
                decoy_attr = _pick(rng, list(spec.image_attributes))
                wrong = [v for v in spec.attributes[decoy_attr] if v != attrs[decoy_attr]]
                line = f"{_surface(_pick(rng, wrong), rng, 0.8).title()} {line}"
            identity = (_pick(rng, _FASHION_BRANDS), line, _pick(rng, _FASHION_AUDIENCE[ptype]))
        else:
            brand, line = _pick(rng, _TECH_BRANDS), _pick(rng, _TECH_SERIES)
        for copy in range(n_copies):
            # Duplicates keep the item's identity (brand, line, audience, attributes) and reword the rest.
            if spec.informative == "image":
                title = _fashion_title(ptype, attrs, identity, rng, config.title_attribute_rate)
            else:
                title = _tech_title(ptype, attrs, brand, line, rng)
            listings.append(_Listing(group, copy, ptype, dict(attrs), title, _SELLERS[sellers[copy]]))
        group += 1
    # Ids are assigned after a shuffle so that neither id order nor row order gives the duplicates away.
    order = rng.permutation(len(listings))
    shuffled = [listings[i] for i in order]
    for i, listing in enumerate(shuffled):
        listing.product_id = f"p{i:06d}"
    return shuffled


# ----------------------------------------------------------------------------------------------------
# Queries and labelled candidates
# ----------------------------------------------------------------------------------------------------


@dataclass
class _Query:
    text: str
    product_type: str
    attributes: dict[str, str]  # the attributes the query names (canonical values)


def _query_text(ptype: str, attrs: Mapping[str, str], rng: np.random.Generator) -> str:
    spec = PRODUCT_TYPES[ptype]
    words = [_surface(v, rng, 0.7) for v in attrs.values()]
    if len(words) > 1 and rng.random() < 0.2:
        words = [words[i] for i in rng.permutation(len(words))]
    noun = _pick(rng, spec.query_nouns)
    if ptype == "phone case" and "model" in attrs and rng.random() < 0.3:
        model = words.pop(list(attrs).index("model"))
        return " ".join([*words, noun, "for", model])
    if spec.informative == "title" and words and rng.random() < 0.25:
        return " ".join([noun, *words])
    return " ".join([*words, noun])


def _attribute_subset(spec: ProductTypeSpec, rng: np.random.Generator) -> list[str]:
    names = list(spec.attributes)
    # Mostly one or two attributes, like real queries; a few bare type queries ("dress").
    k_probs = {2: (0.04, 0.56, 0.40), 3: (0.04, 0.36, 0.40, 0.20), 4: (0.04, 0.36, 0.38, 0.17, 0.05)}[len(names)]
    k = int(rng.choice(len(k_probs), p=k_probs))
    if spec.informative == "image":
        # colour is what shoppers type most; the title-only material less often
        weights = np.array([0.40 if a == "colour" else 0.20 if a in spec.image_attributes else 0.20 for a in names])
    else:
        # the photo-only colour of a gadget is asked for less often than its specs
        weights = np.array([0.5 if a in spec.image_attributes else 1.0 for a in names])
    chosen = rng.choice(len(names), size=k, replace=False, p=weights / weights.sum())
    return [names[i] for i in sorted(chosen)]


def _build_queries(
    config: DemoConfig, listings: list[_Listing], rng: np.random.Generator
) -> tuple[list[_Query], int]:
    by_type: dict[str, list[_Listing]] = {t: [] for t in PRODUCT_TYPES}
    for listing in listings:
        by_type[listing.product_type].append(listing)
    target = config.effective_n_queries
    queries: list[_Query] = []
    seen: set[str] = set()
    types = list(PRODUCT_TYPES)
    exhausted: set[str] = set()
    attempts, turn = 0, 0
    # Types take turns so that every type gets about the same number of queries (per-type metrics need it).
    while len(queries) < target and len(exhausted) < len(types):
        ptype = types[turn % len(types)]
        turn += 1
        if ptype in exhausted:
            continue
        spec = PRODUCT_TYPES[ptype]
        for _ in range(200):
            attempts += 1
            # The query is made from a real listing's attributes, so it has at least one exact match.
            anchor = _pick(rng, by_type[ptype])
            attrs = {a: anchor.attributes[a] for a in _attribute_subset(spec, rng)}
            text = _query_text(ptype, attrs, rng)
            if text not in seen:  # query strings are unique; a repeat would only duplicate labels
                seen.add(text)
                queries.append(_Query(text, ptype, attrs))
                break
        else:
            exhausted.add(ptype)
    return queries, attempts


def _build_pairs(
    config: DemoConfig, listings: list[_Listing], queries: list[_Query], rng: np.random.Generator
) -> list[tuple[str, str, str]]:
    type_index: dict[str, np.ndarray] = {}
    codes: dict[str, dict[str, np.ndarray]] = {}
    for ptype in PRODUCT_TYPES:
        idx = np.array([i for i, li in enumerate(listings) if li.product_type == ptype], dtype=np.int64)
        type_index[ptype] = idx
        codes[ptype] = {
            a: np.array([listings[i].attributes[a] for i in idx], dtype=object)
            for a in PRODUCT_TYPES[ptype].attributes
        }
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


# ----------------------------------------------------------------------------------------------------
# Images
# ----------------------------------------------------------------------------------------------------

_Point = tuple[float, float]


@dataclass
class _Part:
    kind: Literal["main", "fill", "line", "dot"]
    points: list[_Point]
    rgb: tuple[int, int, int] = (0, 0, 0)
    width: float = 0.0  # line width / dot radius in object units


def _rounded_rect(x0: float, y0: float, x1: float, y1: float, r: float, n: int = 5) -> list[_Point]:
    pts: list[_Point] = []
    for cx, cy, a0 in (
        (x1 - r, y0 + r, -90),
        (x1 - r, y1 - r, 0),
        (x0 + r, y1 - r, 90),
        (x0 + r, y0 + r, 180),
    ):
        for k in range(n + 1):
            a = math.radians(a0 + 90 * k / n)
            pts.append((cx + r * math.cos(a), cy + r * math.sin(a)))
    return pts


def _box(x0: float, y0: float, x1: float, y1: float) -> list[_Point]:
    return [(x0, y0), (x1, y0), (x1, y1), (x0, y1)]


def _arc(cx: float, cy: float, rx: float, ry: float, a0: float, a1: float, n: int = 10) -> list[_Point]:
    return [
        (
            cx + rx * math.cos(math.radians(a0 + (a1 - a0) * k / n)),
            cy + ry * math.sin(math.radians(a0 + (a1 - a0) * k / n)),
        )
        for k in range(n + 1)
    ]


def _mirror(points: Sequence[_Point]) -> list[_Point]:
    return [(1.0 - x, y) for x, y in points]


def _shade(rgb: Sequence[float], f: float) -> tuple[int, int, int]:
    return tuple(int(np.clip(c * f, 0, 255)) for c in rgb)  # type: ignore[return-value]


def _parts(ptype: str, attrs: Mapping[str, str], look: Mapping[str, Any]) -> list[_Part]:
    """The drawing of one product in object units (0..1, y down), before placement on the canvas."""
    main = look["main_rgb"]
    dark = _shade(main, 0.55)
    accent = look["accent_rgb"]
    if ptype == "dress":
        top = [(0.36, 0.08), (0.42, 0.08), (0.5, 0.17), (0.58, 0.08), (0.64, 0.08), (0.63, 0.25)]
        skirt = {
            # a-line: short, strongly flared; bodycon: narrow waist, hugs the hips; maxi: long to the floor.
            "a-line": [(0.60, 0.38), (0.84, 0.76), (0.16, 0.76), (0.40, 0.38)],
            "bodycon": [(0.58, 0.38), (0.64, 0.56), (0.60, 0.76), (0.40, 0.76), (0.36, 0.56), (0.42, 0.38)],
            "maxi": [(0.60, 0.38), (0.72, 0.96), (0.28, 0.96), (0.40, 0.38)],
        }[attrs["shape"]]
        return [_Part("main", [*top, *skirt, (0.37, 0.25)])]
    if ptype == "t-shirt":
        sleeve = attrs["sleeve"]
        if sleeve == "sleeveless":
            body = [(0.40, 0.10), (0.45, 0.10), (0.5, 0.18), (0.55, 0.10), (0.60, 0.10), (0.62, 0.24),
                    (0.70, 0.34), (0.70, 0.88), (0.30, 0.88), (0.30, 0.34), (0.38, 0.24)]  # fmt: skip
            return [_Part("main", body)]
        body = [(0.30, 0.18), (0.42, 0.12), (0.46, 0.16), (0.5, 0.17), (0.54, 0.16), (0.58, 0.12),
                (0.70, 0.18), (0.70, 0.88), (0.30, 0.88)]  # fmt: skip
        if sleeve == "short-sleeve":
            left = [(0.31, 0.18), (0.15, 0.31), (0.22, 0.42), (0.31, 0.35)]
        else:
            left = [(0.31, 0.18), (0.12, 0.74), (0.21, 0.77), (0.31, 0.38)]
        return [_Part("main", left), _Part("main", _mirror(left)), _Part("main", body)]
    if ptype == "sneakers":
        style = attrs["style"]
        upper = {
            "low-top": [(0.10, 0.70), (0.09, 0.47), (0.14, 0.42), (0.34, 0.45), (0.52, 0.50), (0.78, 0.56),
                        (0.90, 0.60), (0.93, 0.70)],
            "high-top": [(0.10, 0.70), (0.09, 0.20), (0.14, 0.16), (0.36, 0.18), (0.40, 0.38), (0.56, 0.48),
                         (0.78, 0.55), (0.90, 0.60), (0.93, 0.70)],
            "slip-on": [(0.10, 0.70), (0.10, 0.54), (0.15, 0.51), (0.40, 0.56), (0.78, 0.58), (0.90, 0.62),
                        (0.93, 0.70)],
        }[style]  # fmt: skip
        parts = [_Part("main", upper)]
        parts.append(
            _Part("fill", [(0.07, 0.68), (0.91, 0.68), (0.95, 0.72), (0.93, 0.79), (0.07, 0.79)], accent)
        )
        laces = {"low-top": ((0.40, 0.46), (0.62, 0.52)), "high-top": ((0.37, 0.24), (0.55, 0.47))}.get(style)
        if laces is not None:
            (x0, y0), (x1, y1) = laces
            for k in range(4):
                t = (k + 0.5) / 4
                x, y = x0 + (x1 - x0) * t, y0 + (y1 - y0) * t
                parts.append(
                    _Part("line", [(x - 0.04, y - 0.035), (x + 0.04, y + 0.035)], (245, 245, 245), 0.022)
                )
        else:
            parts.append(_Part("line", [(0.30, 0.56), (0.36, 0.60)], dark, 0.02))  # elastic gusset
        return parts
    if ptype == "handbag":
        shape = attrs["shape"]
        if shape == "tote":
            return [
                _Part("line", _arc(0.36, 0.40, 0.09, 0.24, 180, 360), accent, 0.035),
                _Part("line", _arc(0.64, 0.40, 0.09, 0.24, 180, 360), accent, 0.035),
                _Part("main", [(0.20, 0.38), (0.80, 0.38), (0.84, 0.88), (0.16, 0.88)]),
            ]
        if shape == "clutch":
            return [
                _Part("main", _rounded_rect(0.10, 0.38, 0.90, 0.68, 0.03)),
                _Part("line", [(0.10, 0.40), (0.5, 0.57), (0.90, 0.40)], dark, 0.02),
                _Part("dot", [(0.5, 0.57)], (215, 190, 110), 0.035),
            ]
        return [
            _Part("line", [(0.31, 0.54), (0.50, 0.04), (0.69, 0.54)], accent, 0.022),
            _Part("main", _rounded_rect(0.28, 0.52, 0.72, 0.86, 0.06)),
            _Part("line", [(0.28, 0.58), (0.5, 0.70), (0.72, 0.58)], dark, 0.018),
        ]
    # Electronics: one generic icon per type; nothing in it depends on the attributes.
    if ptype == "power bank":
        # Squat brick, so it does not read as a phone case.
        parts = [_Part("main", _rounded_rect(0.24, 0.24, 0.76, 0.78, 0.06))]
        parts.append(_Part("fill", _box(0.42, 0.27, 0.58, 0.30), (40, 40, 45)))
        parts += [_Part("dot", [(0.41 + 0.06 * k, 0.71)], accent, 0.018) for k in range(4)]
        return parts
    if ptype == "charger":
        prong = (200, 200, 205)
        return [
            _Part("fill", _box(0.39, 0.14, 0.44, 0.345), prong),
            _Part("fill", _box(0.56, 0.14, 0.61, 0.345), prong),
            _Part("main", _rounded_rect(0.27, 0.34, 0.73, 0.86, 0.06)),
            _Part("fill", _box(0.43, 0.66, 0.57, 0.71), (40, 40, 45)),
            _Part("dot", [(0.5, 0.50)], accent, 0.02),
        ]
    if ptype == "phone case":
        return [
            _Part("main", _rounded_rect(0.30, 0.07, 0.70, 0.93, 0.07)),
            _Part("main", _rounded_rect(0.35, 0.12, 0.51, 0.28, 0.03)),
            _Part("dot", [(0.39, 0.16)], (25, 25, 28), 0.025),
            _Part("dot", [(0.39, 0.24)], (25, 25, 28), 0.025),
            _Part("dot", [(0.47, 0.20)], (25, 25, 28), 0.02),
        ]
    if ptype == "usb cable":
        curve = [
            (0.22 + 0.56 * t, 0.30 + 0.42 * t + 0.16 * math.sin(2 * math.pi * 1.5 * t))
            for t in np.linspace(0, 1, 24)
        ]
        plug = (200, 200, 205)
        (ax, ay), (bx, by) = curve[0], curve[-1]
        return [
            _Part("line", curve, main, 0.035),
            _Part("fill", _box(ax - 0.05, ay - 0.12, ax + 0.05, ay), plug),
            _Part("fill", _box(bx - 0.04, by, bx + 0.04, by + 0.12), plug),
            _Part("fill", _box(ax - 0.03, ay - 0.18, ax + 0.03, ay - 0.12), (150, 150, 155)),
        ]  # fmt: skip
    raise KeyError(f"unknown product type {ptype!r}")


def _item_look(ptype: str, attrs: Mapping[str, str], rng: np.random.Generator) -> dict[str, Any]:
    """What stays the same across an item's duplicate listings: shade, pattern geometry, framing."""
    spec = PRODUCT_TYPES[ptype]
    if spec.informative == "image":
        main = np.array(_COLOUR_RGB[attrs["colour"]], dtype=float) + rng.uniform(-18, 18, size=3)
        ink = np.array(_PATTERN_INK[attrs["colour"]], dtype=float)
        accent_choices: tuple[tuple[int, int, int], ...] = ((245, 245, 240), (235, 225, 200), (200, 200, 200))
        if ptype == "handbag":
            accent_choices = ((60, 40, 30), (150, 110, 70), tuple(_shade(main, 0.55)))  # type: ignore[assignment]
    else:
        device = _COLOUR_RGB[attrs["colour"]] if "colour" in attrs else _pick(rng, _DEVICE_RGB)
        main = np.array(device, dtype=float) + rng.uniform(-10, 10, size=3)
        ink = main
        accent_choices = ((60, 200, 90), (80, 160, 255), (255, 255, 255))
    return {
        "main_rgb": tuple(np.clip(main, 0, 255)),
        "ink_rgb": tuple(ink),
        "accent_rgb": _pick(rng, accent_choices),
        "pattern_period": 0.13 * rng.uniform(0.85, 1.2),
        "stripe_angle": (0.0 if rng.random() < 0.7 else 90.0) + rng.uniform(-10, 10),
        "pattern_phase": rng.uniform(0, 1, size=2),
        "dot_radius": rng.uniform(0.26, 0.36),
        "scale": rng.uniform(0.72, 0.95),
        "rotation": rng.uniform(-7, 7),
        "offset": rng.uniform(-1, 1, size=2),
        "flip": bool(rng.random() < 0.5),
    }


def _photo(rng: np.random.Generator, noise_std: tuple[float, float]) -> dict[str, Any]:
    """What changes from one listing photo to the next: small reframing, background, light, noise."""
    base = rng.uniform(195, 250)
    return {
        "d_scale": rng.uniform(-0.04, 0.04),
        "d_rotation": rng.uniform(-3, 3),
        "d_offset": rng.uniform(-0.03, 0.03, size=2),
        "background": np.clip(base + rng.uniform(-14, 14, size=3), 0, 255),
        "gradient": rng.uniform(-16, 16),
        "colour_jitter": rng.uniform(-8, 8, size=3),
        "brightness": rng.uniform(0.92, 1.08),
        "noise_std": rng.uniform(*noise_std),
        "noise_seed": int(rng.integers(2**31)),
    }


def _render_image(
    ptype: str, attrs: Mapping[str, str], look: Mapping[str, Any], photo: Mapping[str, Any], size: int
) -> np.ndarray:
    """Draw one listing photo as an (size, size, 3) uint8 array. Pure function of its arguments."""
    ss = max(1, math.ceil(128 / size))  # supersample small images so that edges and patterns anti-alias
    big = size * ss
    parts = _parts(ptype, attrs, look)
    pts_all = np.array([p for part in parts for p in part.points])
    lo, hi = pts_all.min(axis=0), pts_all.max(axis=0)
    centre0 = (lo + hi) / 2
    extent = float((hi - lo).max())
    scale = float(np.clip(look["scale"] + photo["d_scale"], 0.6, 1.0)) / max(extent, 1e-6) * 0.9
    margin = max(0.0, (1 - scale * extent) / 2) * 0.8
    centre = 0.5 + np.asarray(look["offset"]) * margin + np.asarray(photo["d_offset"])
    theta = math.radians(look["rotation"] + photo["d_rotation"])
    cos_t, sin_t = math.cos(theta), math.sin(theta)
    flip = -1.0 if look["flip"] else 1.0

    def to_canvas(points: Sequence[_Point]) -> list[_Point]:
        p = np.asarray(points, dtype=float) - centre0
        p[:, 0] *= flip
        x = cos_t * p[:, 0] - sin_t * p[:, 1]
        y = sin_t * p[:, 0] + cos_t * p[:, 1]
        return list(
            zip(
                ((centre[0] + scale * x) * big).tolist(),
                ((centre[1] + scale * y) * big).tolist(),
                strict=True,
            )
        )

    # Background with a soft vertical light gradient.
    yy = (np.arange(big, dtype=np.float32) + 0.5) / big
    canvas = np.empty((big, big, 3), dtype=np.float32)
    canvas[:] = np.asarray(photo["background"], dtype=np.float32)
    canvas += (photo["gradient"] * (yy - 0.5))[:, None, None]

    main_rgb = np.asarray(look["main_rgb"], dtype=np.float32) + np.asarray(
        photo["colour_jitter"], dtype=np.float32
    )
    mains = [p for p in parts if p.kind == "main"]
    if mains:
        mask_img = Image.new("L", (big, big), 0)
        mdraw = ImageDraw.Draw(mask_img)
        for part in mains:
            mdraw.polygon(to_canvas(part.points), fill=255)
        mask = np.asarray(mask_img) > 127
        fill = np.empty((big, big, 3), dtype=np.float32)
        fill[:] = main_rgb
        pattern = attrs.get("pattern", "plain")
        if pattern != "plain":
            # The pattern lives in object coordinates so it moves, scales and rotates with the garment.
            u = (np.arange(big, dtype=np.float32) + 0.5) / big - centre[0]
            v = yy - centre[1]
            u, v = np.meshgrid(u, v)
            lx = (cos_t * u + sin_t * v) / scale * flip
            ly = (-sin_t * u + cos_t * v) / scale
            period = look["pattern_period"]
            ph = look["pattern_phase"]
            ink = np.asarray(look["ink_rgb"], dtype=np.float32)
            if pattern == "striped":
                a = math.radians(look["stripe_angle"])
                t = (ly * math.cos(a) + lx * math.sin(a)) / period + ph[0]
                fill[(t - np.floor(t)) < 0.42] = ink
            elif pattern == "dotted":
                gy = ly / period + ph[1]
                row = np.floor(gy)
                gx = lx / period + ph[0] + 0.5 * (row % 2)
                fx, fy = gx - np.floor(gx) - 0.5, gy - row - 0.5
                fill[fx * fx + fy * fy < look["dot_radius"] ** 2] = ink
            elif pattern == "checked":
                cell = np.floor(lx / (1.4 * period) + ph[0]) + np.floor(ly / (1.4 * period) + ph[1])
                # Gingham-like: lighter squares that keep the garment's hue, so colour stays readable.
                fill[(cell % 2) == 0] = 0.5 * main_rgb + 0.5 * ink
        canvas[mask] = fill[mask]

    img = Image.fromarray(np.clip(canvas, 0, 255).astype(np.uint8))
    draw = ImageDraw.Draw(img)
    outline = _shade(main_rgb, 0.55)
    px = scale * big  # object units -> supersampled pixels
    for part in mains:
        draw.polygon(to_canvas(part.points), outline=outline, width=max(1, round(0.012 * px)))
    for part in parts:
        if part.kind == "fill":
            draw.polygon(to_canvas(part.points), fill=part.rgb, outline=_shade(part.rgb, 0.7))
        elif part.kind == "line":
            colour = tuple(int(c) for c in np.clip(np.asarray(part.rgb) + photo["colour_jitter"], 0, 255))
            draw.line(
                to_canvas(part.points), fill=colour, width=max(1, round(part.width * px)), joint="curve"
            )
        elif part.kind == "dot":
            (cx, cy), r = to_canvas(part.points)[0], part.width * px
            draw.ellipse([cx - r, cy - r, cx + r, cy + r], fill=part.rgb)
    if ss > 1:
        img = img.resize((size, size), Image.Resampling.BOX)
    out = np.asarray(img, dtype=np.float32) * photo["brightness"]
    noise_rng = np.random.default_rng(photo["noise_seed"])
    out += noise_rng.normal(0.0, photo["noise_std"], size=out.shape).astype(np.float32)
    return np.clip(np.rint(out), 0, 255).astype(np.uint8)


def render_product_image(
    product_type: str,
    attributes: Mapping[str, str],
    *,
    size: int = 64,
    seed: int = 0,
    photo: int = 0,
    noise_std: tuple[float, float] = (2.0, 7.0),
) -> Image.Image:
    """Render one product photo outside a storefront (for figures and experiments).

    ``seed`` fixes the item's look (shade, pattern geometry, framing); ``photo`` picks one of its photos.
    """
    spec = PRODUCT_TYPES[product_type]
    missing = set(spec.image_attributes) - set(attributes)
    if missing:
        raise ValueError(f"{product_type}: missing drawn attributes {sorted(missing)}")
    look = _item_look(product_type, attributes, _rng(seed, _STREAM_ITEM_LOOK))
    shot = _photo(_rng(seed, _STREAM_PHOTO, photo), noise_std)
    return Image.fromarray(_render_image(product_type, attributes, look, shot, size))


# ----------------------------------------------------------------------------------------------------
# Writing a storefront (atomically) and reusing a cached one
# ----------------------------------------------------------------------------------------------------


def _write_parquet(path: Path, columns: dict[str, list[str]]) -> None:
    table = pa.table({k: pa.array(v, type=pa.string()) for k, v in columns.items()})
    pq.write_table(table, path, compression="zstd")


def _title_mentions(title: str, values: Sequence[str]) -> bool:
    low = title.lower()
    return any(re.search(rf"\b{re.escape(s)}\b", low) for v in values for s in _SURFACE.get(v, (v,)))


def _write_storefront(out: Path, config: DemoConfig, progress: bool) -> None:
    listings = _build_catalog(config)
    qrng = _rng(config.seed, _STREAM_QUERIES)
    queries, attempts = _build_queries(config, listings, qrng)
    if len(queries) < config.effective_n_queries:
        log.warning(
            "demo: only %d distinct queries could be made (asked for %d)",
            len(queries),
            config.effective_n_queries,
        )
    pairs = _build_pairs(config, listings, queries, qrng)

    images = out / "images"
    images.mkdir()
    look_group, look = -1, {}
    # Photos are rendered in group order so that the rng streams never depend on the id shuffle.
    order = sorted(range(len(listings)), key=lambda i: (listings[i].group, listings[i].copy))
    bar = tqdm(order, total=len(order), desc="Rendering demo images", unit="img", disable=not progress)
    for i in bar:
        li = listings[i]
        if li.group != look_group:
            look_group = li.group
            look = _item_look(li.product_type, li.attributes, _rng(config.seed, _STREAM_ITEM_LOOK, li.group))
        shot = _photo(_rng(config.seed, _STREAM_PHOTO, _photo_index(li)), config.noise_std)
        arr = _render_image(li.product_type, li.attributes, look, shot, config.image_size)
        Image.fromarray(arr).save(images / f"{li.product_id}.png", format="PNG", compress_level=6)
    bar.close()

    rows = sorted(listings, key=lambda li: li.product_id)
    _write_parquet(
        out / "catalog.parquet",
        {
            "product_id": [li.product_id for li in rows],
            "title": [li.title for li in rows],
            "image_path": [f"images/{li.product_id}.png" for li in rows],
            "product_type": [li.product_type for li in rows],
            "attributes": [json.dumps(li.attributes) for li in rows],
            "group_id": [f"g{li.group:06d}" for li in rows],
            "seller": [li.seller for li in rows],
        },
    )
    # "intent": the query's type + attributes. Different strings can mean the same thing ("20000mah power bank",
    # "power bank 20000 mah"); splitting by intent keeps a test meaning out of training (data.split_by=intent).
    intent_of = {q.text: q.product_type + "|" + json.dumps(q.attributes, sort_keys=True) for q in queries}
    _write_parquet(
        out / "pairs.parquet",
        {
            "query": [p[0] for p in pairs],
            "product_id": [p[1] for p in pairs],
            "label": [p[2] for p in pairs],
            "intent": [intent_of[p[0]] for p in pairs],
        },
    )
    _write_parquet(
        out / "queries.parquet",
        {
            "query": [q.text for q in queries],
            "product_type": [q.product_type for q in queries],
            "attributes": [json.dumps(q.attributes) for q in queries],
        },
    )
    meta = _meta(config, listings, queries, pairs, attempts)
    # meta.json is written last: inside the temp dir too, its presence means "complete".
    (out / "meta.json").write_text(json.dumps(meta, indent=2) + "\n")


def _photo_index(li: _Listing) -> int:
    # A listing's photo stream is keyed by (item, copy) so duplicates get fresh but reproducible photos.
    return li.group * 8 + li.copy


def _meta(
    config: DemoConfig,
    listings: list[_Listing],
    queries: list[_Query],
    pairs: list[tuple[str, str, str]],
    attempts: int,
) -> dict[str, Any]:
    label_counts = {lab: sum(1 for p in pairs if p[2] == lab) for lab in LABELS}
    group_sizes: dict[int, int] = {}
    for li in listings:
        group_sizes[li.group] = group_sizes.get(li.group, 0) + 1
    dup_groups = [g for g, n in group_sizes.items() if n > 1]
    pid_group = {li.product_id: li.group for li in listings}
    # Queries whose candidate list holds two listings of one item: where in-batch false negatives bite.
    per_query_groups: dict[str, list[int]] = {}
    for qtext, pid, _ in pairs:
        per_query_groups.setdefault(qtext, []).append(pid_group[pid])
    q_with_dup = sum(1 for gs in per_query_groups.values() if len(gs) != len(set(gs)))
    mention: dict[str, float] = {}
    for t in IMAGE_INFORMATIVE_TYPES:
        rows = [li for li in listings if li.product_type == t]
        mention[t] = round(
            sum(
                _title_mentions(li.title, [li.attributes[a] for a in PRODUCT_TYPES[li.product_type].image_attributes])
                for li in rows
            )
            / len(rows),
            4,
        )
    n_pairs = max(1, len(pairs))
    return {
        "generator": _GENERATOR_NAME,
        "generator_version": GENERATOR_VERSION,
        "config": config.to_json(),
        "counts": {
            "products": len(listings),
            "groups": len(group_sizes),
            "queries": len(queries),
            "pairs": len(pairs),
            "images": len(listings),
        },
        "files": {
            "catalog": "catalog.parquet",
            "pairs": "pairs.parquet",
            "queries": "queries.parquet",
            "images": "images/",
        },
        "product_types": {
            name: {
                "informative": spec.informative,
                "attributes": {a: list(v) for a, v in spec.attributes.items()},
                "image_attributes": list(spec.image_attributes),
                "products": sum(1 for li in listings if li.product_type == name),
                "queries": sum(1 for q in queries if q.product_type == name),
            }
            for name, spec in PRODUCT_TYPES.items()
        },
        "image_informative_types": IMAGE_INFORMATIVE_TYPES,
        "title_informative_types": TITLE_INFORMATIVE_TYPES,
        "label_counts": label_counts,
        "label_fractions": {k: round(v / n_pairs, 4) for k, v in label_counts.items()},
        "candidates_per_query": {
            "mean": round(len(pairs) / max(1, len(queries)), 2),
            "min": min((len(g) for g in per_query_groups.values()), default=0),
            "max": max((len(g) for g in per_query_groups.values()), default=0),
        },
        "query_attribute_counts": {
            str(k): sum(1 for q in queries if len(q.attributes) == k)
            for k in range(1 + max(len(s.attributes) for s in PRODUCT_TYPES.values()))
        },
        "query_sampling_attempts": attempts,
        "title_attribute_mention_rate": mention,
        "duplicate_stats": {
            "groups_with_duplicates": len(dup_groups),
            "item_duplicate_rate": round(len(dup_groups) / len(group_sizes), 4),
            "listings_in_duplicate_groups": sum(group_sizes[g] for g in dup_groups),
            "listing_duplicate_rate": round(sum(group_sizes[g] for g in dup_groups) / len(listings), 4),
            "group_size_counts": {str(n): sum(1 for s in group_sizes.values() if s == n) for n in (1, 2, 3)},
            "queries_with_duplicate_candidates": q_with_dup,
        },
    }


def _read_meta(out_dir: Path) -> dict[str, Any] | None:
    try:
        meta = json.loads((out_dir / "meta.json").read_text())
    except (OSError, ValueError):
        return None
    return meta if isinstance(meta, dict) and meta.get("generator") == _GENERATOR_NAME else None


def _is_current(out_dir: Path, config: DemoConfig) -> bool:
    meta = _read_meta(out_dir)
    if (
        meta is None
        or meta.get("generator_version") != GENERATOR_VERSION
        or meta.get("config") != config.to_json()
    ):
        return False
    store = DemoStorefront.at(out_dir)
    return store.catalog_path.is_file() and store.pairs_path.is_file() and (out_dir / "images").is_dir()


def _remove_stale_temp_dirs(parent: Path, name: str) -> None:
    """Delete temp dirs left by killed runs (their process is gone); live runs' dirs are left alone."""
    for path in [*parent.glob(f".{name}.tmp-*"), *parent.glob(f".{name}.old-*")]:
        m = re.match(rf"\.{re.escape(name)}\.(?:tmp|old)-(\d+)-", path.name)
        if not m or not path.is_dir():
            continue
        try:
            os.kill(int(m.group(1)), 0)
        except ProcessLookupError:
            shutil.rmtree(path, ignore_errors=True)
        except (PermissionError, OverflowError):
            continue


def generate_demo(
    out_dir: str | Path, config: DemoConfig | None = None, *, progress: bool = True, overwrite: bool = False
) -> DemoStorefront:
    """Generate the demo storefront into ``out_dir`` (or reuse it if it is already there).

    If ``out_dir/meta.json`` records the same config and generator version, nothing is regenerated unless
    ``overwrite``. Otherwise the storefront is written to a temp dir beside ``out_dir`` and renamed into
    place, so an interrupted run never leaves a storefront that looks complete. A previous storefront made by
    this generator with another config is replaced; any other non-empty directory is refused unless
    ``overwrite``.

    Example::

        store = generate_demo("demo_data", DemoConfig(n_products=3000, seed=0))
        catalog = pandas.read_parquet(store.catalog_path)
    """
    config = config or DemoConfig()
    out = Path(out_dir).expanduser().absolute()
    store = DemoStorefront.at(out)
    if not overwrite and _is_current(out, config):
        log.info("demo: reusing the storefront at %s", out)
        return store
    if out.exists():
        if not out.is_dir():
            raise FileExistsError(f"{out} exists and is not a directory")
        if not overwrite and _read_meta(out) is None and any(out.iterdir()):
            raise FileExistsError(
                f"{out} is a non-empty directory, not a demo storefront; pick another path or overwrite=True"
            )
    out.parent.mkdir(parents=True, exist_ok=True)
    _remove_stale_temp_dirs(out.parent, out.name)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.tmp-{os.getpid()}-", dir=out.parent))
    try:
        _write_storefront(tmp, config, progress)
        if out.exists():
            if not overwrite and _is_current(out, config):
                return store  # another process finished the same storefront first
            trash = Path(tempfile.mkdtemp(prefix=f".{out.name}.old-{os.getpid()}-", dir=out.parent))
            out.rename(trash / "old")
            tmp.rename(out)
            shutil.rmtree(trash, ignore_errors=True)
        else:
            tmp.rename(out)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)
    return store


# ----------------------------------------------------------------------------------------------------
# Figures for the docs
# ----------------------------------------------------------------------------------------------------


def _font(size: int) -> ImageFont.FreeTypeFont | ImageFont.ImageFont:
    try:
        return ImageFont.load_default(size=size)
    except TypeError:  # Pillow without FreeType
        return ImageFont.load_default()


def render_contact_sheet(
    store: DemoStorefront | str | Path, out_path: str | Path, *, per_type: int = 4, zoom: int = 2
) -> Path:
    """A grid of the first ``per_type`` products of each type, with title and true attributes as captions."""
    import pandas as pd

    st = store if isinstance(store, DemoStorefront) else DemoStorefront.at(store)
    cat = pd.read_parquet(st.catalog_path)
    font, bold = _font(10), _font(12)
    first = Image.open(st.out_dir / cat.image_path.iloc[0])
    cell_w, img_px, cap_h, label_w = 176, first.width * zoom, 58, 96
    rows = list(PRODUCT_TYPES)
    sheet = Image.new("RGB", (label_w + per_type * cell_w, len(rows) * (img_px + cap_h)), "white")
    draw = ImageDraw.Draw(sheet)
    for r, ptype in enumerate(rows):
        y0 = r * (img_px + cap_h)
        info = PRODUCT_TYPES[ptype].informative
        draw.text((6, y0 + img_px // 2 - 14), ptype, fill="black", font=bold)
        draw.text((6, y0 + img_px // 2 + 2), f"info in {info}", fill=(90, 90, 90), font=font)
        for c, (_, row) in enumerate(cat[cat.product_type == ptype].head(per_type).iterrows()):
            x0 = label_w + c * cell_w
            im = Image.open(st.out_dir / row.image_path).convert("RGB")
            sheet.paste(
                im.resize((img_px, img_px), Image.Resampling.NEAREST), (x0 + (cell_w - img_px) // 2, y0 + 4)
            )
            attrs = ", ".join(json.loads(row.attributes).values())
            wrapped = textwrap.wrap(row.title, 30)
            lines = wrapped[:2] + [f"[{attrs}]"]
            if len(wrapped) > 2:
                lines[1] += " ..."
            for k, line in enumerate(lines):
                colour = (30, 30, 30) if k < len(lines) - 1 else (20, 90, 160)
                draw.text((x0 + 4, y0 + img_px + 6 + 13 * k), line, fill=colour, font=font)
    out = Path(out_path)
    out.parent.mkdir(parents=True, exist_ok=True)
    # A 256-colour palette keeps the figure small enough to live in the repository.
    sheet.quantize(colors=256, method=Image.Quantize.MEDIANCUT).save(out, optimize=True)
    return out


def render_attribute_sheet(
    out_path: str | Path, *, size: int = 64, zoom: int = 2, seed: int = 0, noise: bool = False
) -> Path:
    """One row per clothing type: every colour, then every pattern, then every shape (the rest held fixed).

    Pixel noise is off by default: the figure explains the attributes, and noise-free PNGs stay small.
    """
    font = _font(10)
    rows = IMAGE_INFORMATIVE_TYPES
    cols = []
    for ptype in rows:
        spec = PRODUCT_TYPES[ptype]
        base = {a: v[0] for a, v in spec.attributes.items()}
        base["pattern"] = "striped"
        shape_attr = list(spec.attributes)[2]
        variants = [(dict(base, colour=c), c) for c in spec.attributes["colour"]]
        variants += [(dict(base, colour="blue", pattern=p), p) for p in spec.attributes["pattern"]]
        variants += [
            (dict(base, colour="red", pattern="plain", **{shape_attr: s}), s)
            for s in spec.attributes[shape_attr]
        ]
        cols.append(variants)
    px, cap = size * zoom, 16
    width = max(len(v) for v in cols) * (px + 6) + 6
    sheet = Image.new("RGB", (width, len(rows) * (px + cap + 6)), "white")
    draw = ImageDraw.Draw(sheet)
    for r, (ptype, variants) in enumerate(zip(rows, cols, strict=True)):
        y0 = r * (px + cap + 6)
        for c, (attrs, label) in enumerate(variants):
            im = render_product_image(
                ptype,
                attrs,
                size=size,
                seed=seed * 1000 + r * 50 + c,
                noise_std=(2.0, 7.0) if noise else (0.0, 0.0),
            )
            x0 = 6 + c * (px + 6)
            sheet.paste(im.resize((px, px), Image.Resampling.NEAREST), (x0, y0 + 4))
            draw.text((x0, y0 + px + 5), label, fill=(30, 30, 30), font=font)
    out = Path(out_path)
    out.parent.mkdir(parents=True, exist_ok=True)
    sheet.quantize(colors=256, method=Image.Quantize.MEDIANCUT).save(out, optimize=True)
    return out


def main(argv: Sequence[str] | None = None) -> None:
    """``python -m querylife.data.demo --out DIR``: generate a storefront (and optionally the figures)."""
    ap = argparse.ArgumentParser(description=main.__doc__)
    ap.add_argument("--out", required=True, type=Path)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--products", type=int, default=3000)
    ap.add_argument("--image-size", type=int, default=64)
    ap.add_argument("--overwrite", action="store_true")
    ap.add_argument("--figures", type=Path, default=None, help="also write docs figures into this folder")
    args = ap.parse_args(argv)
    logging.basicConfig(level=logging.INFO)
    cfg = DemoConfig(n_products=args.products, seed=args.seed, image_size=args.image_size)
    store = generate_demo(args.out, cfg, overwrite=args.overwrite)
    meta = store.meta()
    print(json.dumps({k: meta[k] for k in ("counts", "label_fractions", "duplicate_stats")}, indent=2))
    if args.figures is not None:
        print(render_contact_sheet(store, args.figures / "demo_examples.png"))
        print(render_attribute_sheet(args.figures / "demo_attributes.png", size=args.image_size))


if __name__ == "__main__":
    main()
