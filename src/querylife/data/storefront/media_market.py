"""The ``media_market`` storefront: a text-heavy marketplace of media and accessories, partly in French.

A third product world with another balance than ``demo`` and ``home_books``, so that a fusion claim holds on more
than two storefronts:

* mostly **textual** types (6 of 10: hard drive, video game, ink cartridge, vinyl record, keyboard, battery):
  every attribute is in the title only, and the photo is one of three stock icons per type, picked at random
  (never from the attributes). Two of them name colours in the title only ("cyan ink", "red switch keyboard"),
  so a colour word is not always a photo attribute;
* 2 **visual** types (mug, umbrella: colour, pattern, shape only in the photo) and 2 **mixed** ones (a water
  bottle's colour drawn and capacity written; headphones' style drawn and connection written);
* noisier titles: each spec value is left out of a title with probability 0.15, and one title in ten has a typo;
* 20% of listings without a photo; 30% of titles and 25% of queries in French.
"""

from __future__ import annotations

from .spec import Language, Palette, ProductTypeSpec, StorefrontSpec, TypeWords, Vocabulary

__all__ = ["MEDIA_MARKET"]

_COLOURS = ("white", "black", "red", "teal", "orange", "purple")
_PATTERNS = ("plain", "striped", "dotted", "checked")


def _icon(name: str, attributes: dict[str, tuple[str, ...]], qn: tuple[str, ...], tn: tuple[str, ...], features:
          tuple[str, ...], for_attribute: str | None = None) -> ProductTypeSpec:  # fmt: skip
    """A text-carried type with three stock pictures."""
    return ProductTypeSpec(
        name, "title", attributes, qn, tn, features=features, for_attribute=for_attribute,
        image_style="shared_icon", icon_variants=3,
    )  # fmt: skip


_TYPES = (
    ProductTypeSpec(
        "mug",
        "image",
        {"colour": _COLOURS, "pattern": _PATTERNS, "shape": ("classic", "tall", "tapered")},
        ("mug", "coffee mug", "cup"),
        ("Mug", "Coffee Mug", "Tea Cup", "Ceramic Mug"),
        ("colour", "pattern", "shape"),
        audiences=("Office", "Kitchen", "Gift", ""),
        tails=("Dishwasher Safe", "Microwave Safe", "Stoneware", "Set of 1"),
    ),
    ProductTypeSpec(
        "umbrella",
        "image",
        {"colour": _COLOURS, "pattern": _PATTERNS, "shape": ("classic", "bubble", "pagoda")},
        ("umbrella", "brolly"),
        ("Umbrella", "Rain Umbrella", "Windproof Umbrella", "Stick Umbrella"),
        ("colour", "pattern", "shape"),
        audiences=("Men's", "Women's", "Kids", ""),
        tails=("Auto Open", "Windproof", "UV Protection", "Travel"),
    ),
    _icon(
        "hard drive",
        {
            "capacity": ("500gb", "1tb", "2tb", "4tb"),
            "interface": ("usb 3.0", "usb-c", "thunderbolt"),
            "kind": ("hdd", "ssd"),
        },
        ("hard drive", "external drive", "drive"),
        ("External Hard Drive", "Portable Drive", "Hard Disk", "Drive"),
        ("Portable", "Shockproof", "Plug and Play", "Backup", "Slim", "High Speed"),
    ),
    _icon(
        "video game",
        {
            "platform": ("ps5", "xbox", "switch", "pc"),
            "genre": ("racing", "rpg", "shooter", "puzzle", "sports"),
            "edition": ("standard", "deluxe"),
        },
        ("game", "video game"),
        ("Game", "Video Game", "Videogame"),
        ("Multiplayer", "Open World", "Online", "Family Friendly", "Bestseller", "New Release"),
        for_attribute="platform",
    ),
    _icon(
        "ink cartridge",
        {
            "ink": ("cyan", "magenta", "yellow", "black"),
            "printer": ("hp 305", "canon 545", "epson 603", "brother lc421"),
            "pack": ("single", "twin pack", "multipack"),
        },
        ("ink cartridge", "ink", "cartridge"),
        ("Ink Cartridge", "Cartridge", "Printer Ink", "Ink"),
        ("Compatible", "High Yield", "Remanufactured", "XL", "Original", "Eco"),
        for_attribute="printer",
    ),
    _icon(
        "vinyl record",
        {
            "genre": ("jazz", "rock", "classical", "hip-hop", "soul"),
            "format": ("lp", "ep", "7-inch"),
            "decade": ("60s", "70s", "80s", "90s"),
        },
        ("vinyl", "record", "vinyl record"),
        ("Vinyl", "Vinyl Record", "Record", "Vinyl Album"),
        ("Remastered", "180g", "Limited Edition", "Gatefold", "Original Press", "Collector's"),
    ),
    _icon(
        "keyboard",
        {
            "layout": ("qwerty", "azerty", "qwertz"),
            "switch": ("red switch", "blue switch", "brown switch"),
            "size": ("full-size", "tkl", "60%"),
        },
        ("keyboard", "mechanical keyboard", "gaming keyboard"),
        ("Keyboard", "Mechanical Keyboard", "Gaming Keyboard"),
        ("RGB Backlit", "Hot-Swappable", "USB", "Anti-Ghosting", "Ergonomic", "Programmable"),
    ),
    _icon(
        "battery",
        {
            "size": ("aa", "aaa", "9v"),
            "chemistry": ("alkaline", "rechargeable", "lithium"),
            "pack": ("4-pack", "8-pack", "16-pack"),
        },
        ("batteries", "battery"),
        ("Batteries", "Battery", "Cells"),
        ("Long Lasting", "Leak Proof", "High Capacity", "Ready to Use", "Eco", "Bulk"),
    ),
    ProductTypeSpec(
        "water bottle",
        "mixed",
        {"colour": _COLOURS, "capacity": ("500ml", "750ml", "1l")},
        ("water bottle", "bottle", "drinking bottle"),
        ("Water Bottle", "Sports Bottle", "Drinking Bottle", "Flask"),
        ("colour",),
        features=("Leak Proof", "BPA Free", "Insulated", "Stainless Steel", "Gym", "Reusable"),
        title_style="spec",
    ),
    ProductTypeSpec(
        "headphones",
        "mixed",
        {"style": ("over-ear", "on-ear", "earbuds"), "connection": ("wireless", "wired")},
        ("headphones", "headset", "earphones"),
        ("Headphones", "Headset", "Audio Headphones", "Hi-Fi Headphones"),
        ("style",),
        features=("Noise Cancelling", "Bass Boost", "Foldable", "with Mic", "Long Battery", "Hi-Res"),
        title_style="spec",
    ),
)

_SURFACE: dict[str, tuple[str, ...]] = {
    "white": ("white", "ivory"),
    "teal": ("teal", "turquoise"),
    "purple": ("purple", "violet"),
    "plain": ("plain", "solid"),
    "striped": ("striped", "stripes"),
    "dotted": ("polka dot", "spotty"),
    "checked": ("checked", "tartan"),
    "classic": ("classic", "standard shape"),
    "tall": ("tall", "latte"),
    "tapered": ("tapered", "conical"),
    "bubble": ("bubble", "dome"),
    "1tb": ("1tb", "1 tb"),
    "2tb": ("2tb", "2 tb"),
    "4tb": ("4tb", "4 tb"),
    "500gb": ("500gb", "500 gb"),
    "usb 3.0": ("usb 3.0", "usb3"),
    "usb-c": ("usb-c", "usb c", "type-c"),
    "ps5": ("ps5", "playstation 5"),
    "xbox": ("xbox", "xbox series x"),
    "switch": ("switch", "nintendo switch"),
    "rpg": ("rpg", "role playing"),
    "shooter": ("shooter", "fps"),
    "hp 305": ("hp 305", "305"),
    "twin pack": ("twin pack", "2 pack"),
    "multipack": ("multipack", "multi pack"),
    "hip-hop": ("hip-hop", "hip hop", "rap"),
    "lp": ("lp", "album", "12 inch"),
    "7-inch": ("7-inch", "7 inch", "45"),
    "60s": ("60s", "1960s", "sixties"),
    "70s": ("70s", "1970s", "seventies"),
    "80s": ("80s", "1980s", "eighties"),
    "90s": ("90s", "1990s", "nineties"),
    "red switch": ("red switch", "linear"),
    "blue switch": ("blue switch", "clicky"),
    "brown switch": ("brown switch", "tactile"),
    "full-size": ("full-size", "full size"),
    "tkl": ("tkl", "tenkeyless"),
    "60%": ("60%", "60 percent"),
    "rechargeable": ("rechargeable", "nimh"),
    **{f"{n}-pack": (f"{n}-pack", f"{n} pack", f"pack of {n}") for n in ("4", "8", "16")},
    "500ml": ("500ml", "0.5l"),
    "1l": ("1l", "1 litre", "1000ml"),
    "wireless": ("wireless", "bluetooth"),
    "over-ear": ("over-ear", "over ear"),
    "on-ear": ("on-ear", "on ear"),
    "earbuds": ("earbuds", "in-ear", "in ear"),
}

_TITLE_FORM: dict[str, str] = {
    **{c: c.upper() for c in ("500gb", "1tb", "2tb", "4tb", "hdd", "ssd", "ps5", "pc", "rpg", "lp", "ep", "tkl")},
    "usb 3.0": "USB 3.0",
    "usb-c": "USB-C",
    "hp 305": "HP 305",
    "brother lc421": "Brother LC421",
    **{k: k.upper() for k in ("qwerty", "azerty", "qwertz", "aa", "aaa", "9v")},
    "60%": "60%",
    **{f"{d}0s": f"{d}0s" for d in ("6", "7", "8", "9")},
    "500ml": "500ml",
    "750ml": "750ml",
    "1l": "1L",
}

_SELLERS = (
    "disc_hunter", "la_boutique_tech", "printzone", "gamestop_fr", "vinyl_vault", "keycap_kingdom", "power_cells",
    "bureau_direct", "rainy_days", "hydro_shop", "audio_world", "le_grenier", "mega_media", "click_depot",
    "second_spin", "the_mug_store", "marche_central", "bits_and_bytes",
)  # fmt: skip

_VOCABULARY = Vocabulary(
    fashion_brands=(
        "Kettle & Co", "Drizzle", "Potterly", "Glaze", "Skyshade", "Mornings", "Rainward", "Claymore",
        "Nimbus Goods", "Hearthware",
    ),
    fashion_lines=(
        "Tempest", "Sunday", "Monsoon", "Drift", "Hearth", "Quarry", "Canopy", "Ripple", "Ember", "Fable",
    ),
    fashion_adjectives=(
        "Modern", "Elegant", "Trendy", "Practical", "Lightweight", "Sturdy", "New", "Premium", "Designer",
        "Everyday", "Handy", "Fun",
    ),
    fashion_tails=("Free Shipping", "Best Seller", "Gift Idea", "Ships Fast", ""),
    tech_brands=(
        "Diskora", "Playforge", "Inkjetix", "Groove Hall", "Keyforge", "Cellion", "Aquaro", "Sonix", "Bitvault",
        "Tonearm",
    ),
    tech_series=("Pro", "Max", "Go", "Plus", "Neo", "Edge", "Core", "Prime", "One"),
    tech_tails=("Free Shipping", "Best Seller", "2 Year Warranty", "Fast Dispatch", ""),
    sellers=_SELLERS,
)  # fmt: skip

_FRENCH = Language(
    "fr",
    title_rate=0.3,
    query_rate=0.25,
    type_words={
        "mug": TypeWords(
            ("tasse", "mug"), ("Tasse", "Mug", "Tasse à Café"),
            audiences=("Bureau", "Cuisine", "Cadeau", ""),
            tails=("Lave-Vaisselle", "Micro-Ondes", "Grès", "Lot de 1"),
        ),
        "umbrella": TypeWords(
            ("parapluie",), ("Parapluie", "Parapluie Canne", "Parapluie Anti-Vent"),
            audiences=("Homme", "Femme", "Enfant", ""),
            tails=("Ouverture Auto", "Anti-Vent", "Anti-UV", "Voyage"),
        ),
        "hard drive": TypeWords(
            ("disque dur", "disque externe"), ("Disque Dur Externe", "Disque Portable", "Disque Dur"),
            features=("Portable", "Antichoc", "Plug and Play", "Sauvegarde", "Fin", "Haute Vitesse"),
        ),
        "video game": TypeWords(
            ("jeu", "jeu vidéo", "jeu video"), ("Jeu", "Jeu Vidéo"),
            features=("Multijoueur", "Monde Ouvert", "En Ligne", "Famille", "Meilleure Vente", "Nouveauté"),
        ),
        "ink cartridge": TypeWords(
            ("cartouche", "cartouche d'encre", "encre"), ("Cartouche d'Encre", "Cartouche", "Encre"),
            features=("Compatible", "Haut Rendement", "Reconditionnée", "XL", "Originale", "Éco"),
        ),
        "vinyl record": TypeWords(
            ("vinyle", "disque vinyle"), ("Vinyle", "Disque Vinyle", "Album Vinyle"),
            features=("Remasterisé", "180g", "Édition Limitée", "Pochette Ouvrante", "Pressage Original",
                      "Collector"),
        ),
        "keyboard": TypeWords(
            ("clavier", "clavier mécanique", "clavier gamer"), ("Clavier", "Clavier Mécanique", "Clavier Gamer"),
            features=("Rétroéclairé RGB", "Hot-Swap", "USB", "Anti-Ghosting", "Ergonomique", "Programmable"),
        ),
        "battery": TypeWords(
            ("piles", "pile"), ("Piles", "Pile", "Lot de Piles"),
            features=("Longue Durée", "Anti-Fuite", "Haute Capacité", "Prêtes à l'Emploi", "Éco", "Vrac"),
        ),
        "water bottle": TypeWords(
            ("gourde", "bouteille d'eau", "bouteille"), ("Gourde", "Bouteille d'Eau", "Gourde Sport"),
            features=("Étanche", "Sans BPA", "Isotherme", "Inox", "Sport", "Réutilisable"),
        ),
        "headphones": TypeWords(
            ("casque", "casque audio", "écouteurs"), ("Casque", "Casque Audio", "Casque Hi-Fi"),
            features=("Réduction de Bruit", "Basses Renforcées", "Pliable", "avec Micro", "Grande Autonomie",
                      "Hi-Res"),
        ),
    },
    surface={
        "white": ("blanc", "blanche"),
        "black": ("noir", "noire"),
        "red": ("rouge",),
        "teal": ("bleu canard", "turquoise"),
        "orange": ("orange",),
        "purple": ("violet", "violette"),
        "plain": ("uni", "unie"),
        "striped": ("rayé", "à rayures"),
        "dotted": ("à pois", "pois"),
        "checked": ("à carreaux", "vichy"),
        "classic": ("classique",),
        "tall": ("haute", "grande"),
        "tapered": ("conique", "évasée"),
        "bubble": ("cloche", "bulle"),
        "pagoda": ("pagode",),
        "rpg": ("rpg", "jeu de rôle"),
        "racing": ("course", "racing"),
        "shooter": ("tir", "fps"),
        "puzzle": ("réflexion", "puzzle"),
        "sports": ("sport", "sports"),
        "standard": ("édition standard", "standard"),
        "deluxe": ("édition deluxe", "deluxe"),
        "yellow": ("jaune",),
        "single": ("à l'unité", "simple"),
        "twin pack": ("lot de 2", "pack de 2"),
        "multipack": ("multipack", "lot multipack"),
        "classical": ("classique", "musique classique"),
        "hip-hop": ("hip-hop", "rap"),
        "lp": ("33 tours", "lp", "album"),
        "ep": ("ep", "maxi"),
        "7-inch": ("45 tours", "7 pouces"),
        **{f"{d}0s": (f"années {d}0", f"{d}0s") for d in ("6", "7", "8", "9")},
        "red switch": ("switch rouge", "linéaire"),
        "blue switch": ("switch bleu", "clicky"),
        "brown switch": ("switch marron", "tactile"),
        "full-size": ("complet", "taille standard"),
        "tkl": ("tkl", "sans pavé numérique"),
        "alkaline": ("alcaline", "alcalines"),
        "rechargeable": ("rechargeable", "rechargeables"),
        **{f"{n}-pack": (f"lot de {n}", f"x{n}") for n in ("4", "8", "16")},
        "500ml": ("500ml", "50cl"),
        "750ml": ("750ml", "75cl"),
        "1l": ("1l", "1 litre"),
        "wireless": ("sans fil", "bluetooth"),
        "wired": ("filaire", "avec fil"),
        "over-ear": ("circum-auriculaire", "over-ear"),
        "on-ear": ("supra-auriculaire", "on-ear"),
        "earbuds": ("intra-auriculaire", "intra"),
    },
    title_form={
        "racing": "Course",
        "shooter": "Tir",
        "puzzle": "Réflexion",
        "sports": "Sport",
        "standard": "Édition Standard",
        "deluxe": "Édition Deluxe",
        "yellow": "Jaune",
        "black": "Noir",
        "single": "à l'Unité",
        "twin pack": "Lot de 2",
        "classical": "Classique",
        "lp": "33 Tours",
        "7-inch": "45 Tours",
        **{f"{d}0s": f"Années {d}0" for d in ("6", "7", "8", "9")},
        "red switch": "Switch Rouge",
        "blue switch": "Switch Bleu",
        "brown switch": "Switch Marron",
        "full-size": "Complet",
        "alkaline": "Alcalines",
        "rechargeable": "Rechargeables",
        **{f"{n}-pack": f"Lot de {n}" for n in ("4", "8", "16")},
        "wireless": "Sans Fil",
        "wired": "Filaire",
    },
    vocabulary=Vocabulary(
        fashion_brands=_VOCABULARY.fashion_brands,
        fashion_lines=_VOCABULARY.fashion_lines,
        fashion_adjectives=(
            "Moderne", "Élégant", "Tendance", "Pratique", "Léger", "Robuste", "Nouveau", "Premium", "Design",
            "Quotidien", "Malin", "Fun",
        ),
        fashion_tails=("Livraison Gratuite", "Meilleure Vente", "Idée Cadeau", "Expédition Rapide", ""),
        tech_brands=_VOCABULARY.tech_brands,
        tech_series=_VOCABULARY.tech_series,
        tech_tails=("Livraison Gratuite", "Meilleure Vente", "Garantie 2 Ans", "Expédition Rapide", ""),
        sellers=_SELLERS,
    ),
    for_word="pour",
    noun_first=True,
)  # fmt: skip

_PALETTE = Palette(
    colour_rgb={
        "white": (246, 246, 244),
        "black": (30, 30, 32),
        "red": (200, 35, 40),
        "teal": (0, 128, 128),
        "orange": (240, 130, 30),
        "purple": (120, 60, 160),
    },
    pattern_ink={
        "white": (50, 50, 60),
        "black": (235, 235, 235),
        "red": (245, 240, 230),
        "teal": (245, 240, 230),
        "orange": (55, 55, 60),
        "purple": (245, 240, 230),
    },
    # Icon colours, independent of every attribute on purpose.
    device_rgb=((35, 35, 38), (236, 236, 232), (128, 131, 138), (30, 45, 95), (190, 192, 198), (150, 40, 45)),
)

MEDIA_MARKET = StorefrontSpec(
    product_types={s.name: s for s in _TYPES},
    surface=_SURFACE,
    title_form=_TITLE_FORM,
    vocabulary=_VOCABULARY,
    palette=_PALETTE,
    missing_image_rate=0.2,
    title_drop_rate=0.15,
    title_typo_rate=0.1,
    languages=(_FRENCH,),
    description=(
        "A text-heavy media and accessories marketplace: 6 textual types with stock icons (hard drive, video game, "
        "ink cartridge, vinyl record, keyboard, battery), 2 visual (mug, umbrella), 2 mixed (water bottle, "
        "headphones); specs left out of 15% of titles and typos in 10%; 20% without a photo; 30% of titles and "
        "25% of queries in French."
    ),
)
