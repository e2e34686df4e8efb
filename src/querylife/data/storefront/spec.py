"""What a storefront definition holds: product types, their attributes, which modality carries which attribute,
and the words and colours listings are made of.

A storefront is data, not code: :class:`StorefrontSpec` gathers everything the generator needs, so a second
storefront is a second spec (see :mod:`.clothing_electronics` for the demo's), never a copy of the generator. The
one thing that is code is the drawing of each type's photo (:mod:`.shapes`), named by ``ProductTypeSpec.drawing``.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Literal

__all__ = ["Palette", "ProductTypeSpec", "StorefrontSpec", "Vocabulary"]

RGB = tuple[int, int, int]


@dataclass(frozen=True)
class ProductTypeSpec:
    """One product type: its attributes, where they are visible, and the words used for it.

    Two attribute names mean something to the renderer: ``colour`` (a key of ``Palette.colour_rgb``) paints the
    product, and ``pattern`` (plain / striped / dotted / checked) is drawn on image-informative types. Shapes
    read their own attribute (``shape``, ``sleeve``, ``style``) in :mod:`.shapes`.
    """

    name: str
    informative: Literal["image", "title"]  # the modality that carries the searched attributes
    attributes: dict[str, tuple[str, ...]]  # attribute -> canonical values, in the order queries name them
    query_nouns: tuple[str, ...]
    title_nouns: tuple[str, ...]
    # Attributes drawn in the photo (and only rarely, or never, written in the title); every other attribute is
    # written in the title and not drawn. Each type has some of both, so which modality matters depends on the
    # query too ("red dress" needs the photo, "linen dress" the title): the case for a query-aware gate.
    image_attributes: tuple[str, ...] = ()
    # The drawing in .shapes that renders this type's photo; empty means the type's own name.
    drawing: str = ""
    # Title vocabulary of this type. Image-informative (fashion-style) titles use audiences and tails;
    # title-informative (spec-sheet-style) titles use features.
    audiences: tuple[str, ...] = ()
    tails: tuple[str, ...] = ()
    features: tuple[str, ...] = ()
    # An attribute that titles and queries may write after "for" ("Case for iPhone 15"), as marketplaces do.
    for_attribute: str | None = None

    @property
    def drawing_name(self) -> str:
        return self.drawing or self.name


@dataclass(frozen=True)
class Vocabulary:
    """Marketing words shared by a storefront's titles. None may name (or look like) an attribute value."""

    fashion_brands: tuple[str, ...]
    fashion_lines: tuple[str, ...]
    fashion_adjectives: tuple[str, ...]
    fashion_tails: tuple[str, ...]  # added to each type's own tails
    tech_brands: tuple[str, ...]
    tech_series: tuple[str, ...]
    tech_tails: tuple[str, ...]
    sellers: tuple[str, ...]


@dataclass(frozen=True)
class Palette:
    """The colours photos are drawn in."""

    # Listing colour of each colour value, and the contrasting colour patterns are drawn in.
    colour_rgb: Mapping[str, RGB]
    pattern_ink: Mapping[str, RGB]
    # Device body colours, drawn at random for types without a colour attribute.
    device_rgb: tuple[RGB, ...]


@dataclass(frozen=True)
class StorefrontSpec:
    """A whole storefront definition: the generator reads nothing else about the product world."""

    product_types: Mapping[str, ProductTypeSpec]
    # How shoppers (and the occasional fashion title) write a value; the canonical value comes first.
    surface: Mapping[str, tuple[str, ...]]
    # How spec-sheet titles spell a value (always containing the canonical value, case-insensitively); a value
    # not listed is written title-cased.
    title_form: Mapping[str, str]
    vocabulary: Vocabulary
    palette: Palette

    @property
    def image_informative_types(self) -> list[str]:
        return [n for n, s in self.product_types.items() if s.informative == "image"]

    @property
    def title_informative_types(self) -> list[str]:
        return [n for n, s in self.product_types.items() if s.informative == "title"]

    def surface_forms(self, value: str) -> tuple[str, ...]:
        """Every way a value is written, canonical first."""
        return self.surface.get(value, (value,))

    def title_spelling(self, value: str) -> str:
        return self.title_form.get(value, value.title())
