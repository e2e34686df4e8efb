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

Layout: the storefront is data (:mod:`.spec` the schema, :mod:`.clothing_electronics` the demo's product world);
the generator reads it in :mod:`.catalog` (listings, :mod:`.titles`), :mod:`.queries` and :mod:`.labels`; photos
are drawn by :mod:`.render` from :mod:`.shapes`; :mod:`.writer` and :mod:`.generate` write a storefront
atomically, :mod:`.meta` describes it; :mod:`.figures` makes the docs' figures. A second storefront is a second
:class:`StorefrontSpec`, not a copy of the generator: :mod:`.registry` names them (``demo``, :mod:`.home_books`,
:mod:`.media_market`), and ``DemoConfig(storefront=NAME)`` picks one.
"""

from __future__ import annotations

from .clothing_electronics import CLOTHING_ELECTRONICS
from .config import DemoConfig, DemoStorefront
from .figures import render_attribute_sheet, render_contact_sheet
from .generate import generate_demo
from .home_books import HOME_BOOKS
from .media_market import MEDIA_MARKET
from .meta import GENERATOR_VERSION
from .registry import DEFAULT_STOREFRONT, STOREFRONTS, storefront_spec
from .render import render_product_image
from .spec import Language, Palette, ProductTypeSpec, StorefrontSpec, TypeWords, Vocabulary

__all__ = [
    "CLOTHING_ELECTRONICS",
    "DEFAULT_STOREFRONT",
    "GENERATOR_VERSION",
    "HOME_BOOKS",
    "IMAGE_INFORMATIVE_TYPES",
    "MEDIA_MARKET",
    "PRODUCT_TYPES",
    "STOREFRONTS",
    "TITLE_INFORMATIVE_TYPES",
    "DemoConfig",
    "DemoStorefront",
    "Language",
    "Palette",
    "ProductTypeSpec",
    "StorefrontSpec",
    "TypeWords",
    "Vocabulary",
    "generate_demo",
    "render_attribute_sheet",
    "render_contact_sheet",
    "render_product_image",
    "storefront_spec",
]

# The demo storefront's types, by name and by the modality that carries their searched attributes.
PRODUCT_TYPES = CLOTHING_ELECTRONICS.product_types
IMAGE_INFORMATIVE_TYPES = CLOTHING_ELECTRONICS.image_informative_types
TITLE_INFORMATIVE_TYPES = CLOTHING_ELECTRONICS.title_informative_types
