"""What a storefront definition holds: product types, their attributes, which modality carries which attribute,
and the words and colours listings are made of.

A storefront is data, not code: :class:`StorefrontSpec` gathers everything the generator needs, so a second
storefront is a second spec (see :mod:`.clothing_electronics` for the demo's), never a copy of the generator. The
one thing that is code is the drawing of each type's photo (:mod:`.shapes`), named by ``ProductTypeSpec.drawing``.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, replace
from typing import Literal

__all__ = ["Language", "Palette", "ProductTypeSpec", "StorefrontSpec", "TypeWords", "Vocabulary"]

RGB = tuple[int, int, int]


@dataclass(frozen=True)
class ProductTypeSpec:
    """One product type: its attributes, where they are visible, and the words used for it.

    Two attribute names mean something to the renderer: ``colour`` (a key of ``Palette.colour_rgb``) paints the
    product, and ``pattern`` (plain / striped / dotted / checked) is drawn on image-informative types. Shapes
    read their own attribute (``shape``, ``sleeve``, ``style``) in :mod:`.shapes`.
    """

    name: str
    # The modality that carries the searched attributes; "mixed" types have about as many each way. Reports group
    # types by it (DemoStorefront.type_groups).
    informative: Literal["image", "title", "mixed"]
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
    # How titles are written: "marketing" (brand, collection, adjectives around a noun; drawn attributes rarely
    # named, sometimes wrongly) or "spec" (a spec sheet naming every attribute that is not drawn). Empty: marketing
    # for image-informative types, spec otherwise (the demo's rule).
    title_style: Literal["", "marketing", "spec"] = ""
    # How photos are made: "rendered" (the type's drawing in the item's look, one photo per listing) or
    # "shared_icon" (a stock picture of the type, identical for every listing that uses it: it carries no attribute
    # signal at all). A shared-icon type draws none of its attributes.
    image_style: Literal["rendered", "shared_icon"] = "rendered"
    # Distinct stock pictures of a shared-icon type; each listing gets one at random, independent of its attributes.
    icon_variants: int = 1

    @property
    def drawing_name(self) -> str:
        return self.drawing or self.name

    @property
    def title_kind(self) -> Literal["marketing", "spec"]:
        """The title style in force (``title_style``, or the demo's rule when it is empty)."""
        if self.title_style:
            return self.title_style
        return "marketing" if self.informative == "image" else "spec"


@dataclass(frozen=True)
class TypeWords:
    """A product type's words in another language (see :class:`Language`)."""

    query_nouns: tuple[str, ...]
    title_nouns: tuple[str, ...]
    audiences: tuple[str, ...] = ()
    tails: tuple[str, ...] = ()
    features: tuple[str, ...] = ()


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
class Language:
    """A second language some listings and queries of a storefront are written in.

    Attribute values stay canonical (in the storefront's language) in ``attributes`` and ``intent``, so a Spanish
    query and its English paraphrase share an intent and a split by intent keeps both on one side. Values not in
    ``surface`` / ``title_form`` are written as in the storefront's language ("128gb", "usb-c").

    Example::

        Language("es", title_rate=0.25, query_rate=0.2, type_words={"rug": TypeWords(("alfombra",), ("Alfombra",))},
                 surface={"red": ("rojo", "roja")}, title_form={}, noun_first=True, for_word="para")
    """

    code: str  # e.g. "es"
    title_rate: float  # chance that a listing's title is in this language (drawn per listing)
    query_rate: float  # chance that a query is (drawn per query)
    type_words: Mapping[str, TypeWords]  # every product type's words in this language
    surface: Mapping[str, tuple[str, ...]]
    title_form: Mapping[str, str]
    vocabulary: Vocabulary | None = None  # marketing words; None keeps the storefront's
    for_word: str = "for"
    # Nouns come before the values that qualify them ("alfombra roja", not "roja alfombra").
    noun_first: bool = False


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
    # How spec-sheet titles spell a value (in the main language always containing the canonical value,
    # case-insensitively; a Language may translate it); a value not listed is written title-cased.
    title_form: Mapping[str, str]
    vocabulary: Vocabulary
    palette: Palette
    # Share of listings without a photo (image_path empty), drawn per listing.
    missing_image_rate: float = 0.0
    # Spec titles: chance that each written attribute value is left out (the title is then silent about it).
    title_drop_rate: float = 0.0
    # Chance that a title has one typo (two neighbouring letters of one word swapped).
    title_typo_rate: float = 0.0
    # Other languages some titles and queries are written in.
    languages: tuple[Language, ...] = ()
    # The word before a ``for_attribute`` value, and the word order of this (the main) language.
    for_word: str = "for"
    noun_first: bool = False
    # What the storefront models, for meta.json and the docs.
    description: str = ""
    # The language code of titles and queries not in one of ``languages``.
    language: str = "en"

    def __post_init__(self) -> None:
        for name, t in self.product_types.items():
            if t.name != name:
                raise ValueError(f"product type key {name!r} names a spec called {t.name!r}")
            unknown = set(t.image_attributes) - set(t.attributes)
            if unknown:
                raise ValueError(f"{name}: image_attributes {sorted(unknown)} are not attributes of the type")
            if t.image_style == "shared_icon" and t.image_attributes:
                raise ValueError(f"{name}: a shared icon draws nothing, but image_attributes={t.image_attributes}")
            if t.informative == "image" and "colour" not in t.image_attributes:
                raise ValueError(f"{name}: an image-informative type is painted in its drawn colour; add one")
            if t.title_kind == "marketing" and not t.image_attributes:
                raise ValueError(f"{name}: marketing titles name (or decoy) drawn attributes; the type draws none")
            if t.icon_variants < 1:
                raise ValueError(f"{name}: icon_variants must be >= 1, got {t.icon_variants}")
        for lang in self.languages:
            missing = set(self.product_types) - set(lang.type_words)
            if missing:
                raise ValueError(f"language {lang.code!r} lacks the words of types {sorted(missing)}")
        for kind in ("title_rate", "query_rate"):
            rates = [getattr(lang, kind) for lang in self.languages]
            if any(r < 0 for r in rates) or sum(rates) > 1:
                raise ValueError(f"languages' {kind}s must be >= 0 and sum to at most 1, got {rates}")
        for name in ("missing_image_rate", "title_drop_rate", "title_typo_rate"):
            if not 0.0 <= getattr(self, name) < 1.0:
                raise ValueError(f"{name} must be in [0, 1), got {getattr(self, name)}")

    @property
    def image_informative_types(self) -> list[str]:
        return [n for n, s in self.product_types.items() if s.informative == "image"]

    @property
    def title_informative_types(self) -> list[str]:
        return [n for n, s in self.product_types.items() if s.informative == "title"]

    @property
    def mixed_types(self) -> list[str]:
        return [n for n, s in self.product_types.items() if s.informative == "mixed"]

    @property
    def shared_icon_types(self) -> list[str]:
        return [n for n, s in self.product_types.items() if s.image_style == "shared_icon"]

    def in_language(self, code: str) -> StorefrontSpec:
        """This storefront as written in language ``code`` (the spec itself for its main language).

        Types get that language's nouns and marketing words, values its surface and title forms (values it does
        not list keep theirs); attributes, drawings and rates are unchanged.
        """
        if code == self.language:
            return self
        lang = next((x for x in self.languages if x.code == code), None)
        if lang is None:
            raise ValueError(f"storefront has no language {code!r} (has {self.language_codes})")
        types = {
            name: replace(
                t,
                query_nouns=lang.type_words[name].query_nouns,
                title_nouns=lang.type_words[name].title_nouns,
                audiences=lang.type_words[name].audiences or t.audiences,
                tails=lang.type_words[name].tails or t.tails,
                features=lang.type_words[name].features or t.features,
            )
            for name, t in self.product_types.items()
        }
        return replace(
            self,
            product_types=types,
            surface={**self.surface, **lang.surface},
            title_form={**self.title_form, **lang.title_form},
            vocabulary=lang.vocabulary or self.vocabulary,
            for_word=lang.for_word,
            noun_first=lang.noun_first,
            language=code,
            languages=(),
        )

    @property
    def language_codes(self) -> list[str]:
        """The main language first, then the others."""
        return [self.language, *(x.code for x in self.languages)]

    def surface_forms(self, value: str) -> tuple[str, ...]:
        """Every way a value is written, canonical first."""
        return self.surface.get(value, (value,))

    def title_spelling(self, value: str) -> str:
        return self.title_form.get(value, value.title())
