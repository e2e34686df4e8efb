"""The ``home_books`` storefront: home goods, books and memory cards, partly in Spanish.

Written apart from the demo, to measure fusion on a second product world with the properties of issue 14's
independent storefront:

* 3 **visual** types (rug, cushion, vase): colour, pattern and shape only in the photo; marketing titles (decor
  brand, collection, adjectives, room) that name none of them, bar the rare mention and the decoy collection name;
* 2 **textual** types (book: genre, format, author; memory card: capacity, format, speed class): every attribute
  in a spec title, and the photo is one stock icon per type, identical for every listing, so it carries no
  attribute signal at all;
* 2 **mixed** types, one attribute each way: a lamp's shade shape is drawn and its light written; a backpack's
  colour is drawn and its capacity written;
* 8% of listings without a photo; a quarter of titles and a fifth of queries in Spanish (nouns before their
  values, "alfombra terracota de lunares"), with the same intents as their English paraphrases.
"""

from __future__ import annotations

from .spec import Language, Palette, ProductTypeSpec, StorefrontSpec, TypeWords, Vocabulary

__all__ = ["HOME_BOOKS"]

_COLOURS = ("terracotta", "sage", "navy", "mustard", "cream", "charcoal")
_PATTERNS = ("plain", "striped", "dotted", "checked")

_TYPES = (
    ProductTypeSpec(
        "rug",
        "image",
        {"colour": _COLOURS, "pattern": _PATTERNS, "shape": ("round", "rectangular", "runner")},
        ("rug", "rug", "area rug", "carpet"),
        ("Rug", "Area Rug", "Carpet", "Floor Rug", "Mat"),
        ("colour", "pattern", "shape"),
        audiences=("Living Room", "Bedroom", "Home", ""),
        tails=("Non-Slip Backing", "Machine Washable", "Low Pile", "Easy Care"),
    ),
    ProductTypeSpec(
        "cushion",
        "image",
        {"colour": _COLOURS, "pattern": _PATTERNS, "shape": ("square", "round", "bolster")},
        ("cushion", "pillow", "throw pillow"),
        ("Cushion", "Throw Pillow", "Scatter Cushion", "Decorative Pillow"),
        ("colour", "pattern", "shape"),
        audiences=("Sofa", "Bed", "Outdoor", ""),
        tails=("with Insert", "Cover Only", "Soft Touch", "Zip Closure"),
    ),
    ProductTypeSpec(
        "vase",
        "image",
        {"colour": _COLOURS, "pattern": _PATTERNS, "shape": ("bottle", "bowl", "cylinder")},
        ("vase", "vase", "flower vase"),
        ("Vase", "Flower Vase", "Decorative Vase", "Table Vase"),
        ("colour", "pattern", "shape"),
        audiences=("Home Decor", "Table", "Mantel", ""),
        tails=("Handmade", "Gift Idea", "Dried Flowers", "Centrepiece"),
    ),
    ProductTypeSpec(
        "book",
        "title",
        {
            "genre": ("mystery", "romance", "fantasy", "history", "poetry"),
            "format": ("paperback", "hardcover", "large print"),
            "author": ("elena marsh", "tomas reyes", "ada whitfield", "jun okafor", "marta vidal", "leo brandt"),
        },
        ("book", "novel", "book"),
        ("Book", "Novel", "Edition", "Volume"),
        features=("Bestseller", "New Edition", "Illustrated", "Award Winner", "Book Club Pick", "Signed"),
        image_style="shared_icon",
    ),
    ProductTypeSpec(
        "memory card",
        "title",
        {
            "capacity": ("32gb", "64gb", "128gb", "256gb"),
            "format": ("microsd", "sd"),
            "speed": ("class 10", "u3", "v30"),
        },
        ("memory card", "memory card", "flash card"),
        ("Memory Card", "Flash Memory Card", "Card", "Storage Card"),
        features=("High Speed", "4K Ready", "Waterproof", "with Adapter", "for Camera", "for Phone"),
        image_style="shared_icon",
    ),
    ProductTypeSpec(
        "lamp",
        "mixed",
        {"shape": ("dome", "cone", "globe"), "light": ("warm white", "cool white", "rgb")},
        ("lamp", "table lamp", "desk lamp"),
        ("Lamp", "Table Lamp", "Desk Lamp", "Bedside Lamp"),
        ("shape",),
        features=("LED", "Touch Control", "USB Powered", "Energy Saving", "Modern", "Dimmable"),
        title_style="spec",
    ),
    ProductTypeSpec(
        "backpack",
        "mixed",
        {"colour": _COLOURS, "capacity": ("20l", "30l", "40l")},
        ("backpack", "rucksack", "daypack"),
        ("Backpack", "Rucksack", "Daypack", "Travel Backpack"),
        ("colour",),
        features=("Water Resistant", "Laptop Sleeve", "Lightweight", "Anti-Theft", "USB Port", "Hiking"),
        title_style="spec",
    ),
)

_SURFACE: dict[str, tuple[str, ...]] = {
    "terracotta": ("terracotta", "rust"),
    "sage": ("sage", "sage green"),
    "navy": ("navy", "navy blue"),
    "mustard": ("mustard", "mustard yellow"),
    "cream": ("cream", "off white", "ivory"),
    "charcoal": ("charcoal", "dark grey"),
    "plain": ("plain", "solid"),
    "striped": ("striped", "stripe"),
    "dotted": ("spotted", "polka dot"),
    "checked": ("gingham", "check", "checked"),
    "rectangular": ("rectangular", "rectangle"),
    "runner": ("runner", "hallway runner"),
    "bolster": ("bolster", "cylinder pillow"),
    "bottle": ("bottle", "bud"),
    "bowl": ("bowl", "low"),
    "cylinder": ("cylinder", "tall cylinder"),
    "mystery": ("mystery", "crime"),
    "fantasy": ("fantasy", "fantasy fiction"),
    "paperback": ("paperback", "softcover"),
    "hardcover": ("hardcover", "hardback"),
    "large print": ("large print", "large type"),
    **{f"{c}gb": (f"{c}gb", f"{c} gb") for c in ("32", "64", "128", "256")},
    "microsd": ("microsd", "micro sd"),
    "sd": ("sd", "full size sd"),
    "class 10": ("class 10", "c10"),
    "dome": ("dome", "mushroom"),
    "cone": ("cone", "conical"),
    "globe": ("globe", "ball"),
    "warm white": ("warm white", "warm light"),
    "cool white": ("cool white", "daylight"),
    "rgb": ("rgb", "colour changing"),
    **{f"{c}l": (f"{c}l", f"{c} litre", f"{c} liter") for c in ("20", "30", "40")},
}

_TITLE_FORM: dict[str, str] = {
    **{f"{c}gb": f"{c}GB" for c in ("32", "64", "128", "256")},
    "microsd": "microSD",
    "sd": "SD",
    "u3": "U3",
    "v30": "V30",
    "rgb": "RGB",
    **{f"{c}l": f"{c}L" for c in ("20", "30", "40")},
}

_SELLERS = (
    "casa_bonita", "homeworks", "the_reading_room", "deco_depot", "nest_and_co", "bookbarn", "cardzone",
    "interiores_sl", "loft_living", "pagina_uno", "megabazar", "urban_nest", "storage_world", "the_lamp_shop",
    "trail_supply", "libreria_central",
)  # fmt: skip

_VOCABULARY = Vocabulary(
    fashion_brands=(
        "Casa Lumen", "Nordlys", "Terraza", "Hygge & Co", "Olmo", "Bramble", "Albero", "Kiln House", "Saltmarsh",
        "Fenwick", "Loma", "Driftwood Home",
    ),
    fashion_lines=(
        "Siena", "Fjord", "Meadow", "Dune", "Harbour", "Ember", "Orchard", "Mesa", "Tundra", "Lagoon", "Cedar",
        "Prairie",
    ),
    fashion_adjectives=(
        "Modern", "Scandinavian", "Boho", "Rustic", "Minimalist", "Cozy", "Premium", "Handcrafted", "Nordic",
        "Farmhouse", "Elegant", "Soft", "Durable", "New",
    ),
    fashion_tails=("Free Delivery", "Best Seller", "Home Decor", "Gift Idea", ""),
    tech_brands=(
        "Paperleaf", "Inkwell", "Brightline", "Volta Home", "Nimbus", "Storix", "Trailcraft", "Lumio", "Orbis",
        "Quill & Page",
    ),
    tech_series=("One", "Pro", "Go", "Plus", "Prime", "Select", "Edge", "Lite"),
    tech_tails=("Free Delivery", "Best Seller", "Fast Dispatch", "Top Rated", ""),
    sellers=_SELLERS,
)  # fmt: skip

_SPANISH = Language(
    "es",
    title_rate=0.25,
    query_rate=0.2,
    type_words={
        "rug": TypeWords(
            ("alfombra", "alfombra", "tapete"), ("Alfombra", "Alfombra Salón", "Tapete"),
            audiences=("Salón", "Dormitorio", "Hogar", ""),
            tails=("Antideslizante", "Lavable", "Pelo Corto", "Fácil Cuidado"),
        ),
        "cushion": TypeWords(
            ("cojín", "cojin", "almohada"), ("Cojín", "Cojín Decorativo", "Almohadón"),
            audiences=("Sofá", "Cama", "Exterior", ""),
            tails=("con Relleno", "Solo Funda", "Tacto Suave", "con Cremallera"),
        ),
        "vase": TypeWords(
            ("jarrón", "jarron", "florero"), ("Jarrón", "Florero", "Jarrón Decorativo"),
            audiences=("Decoración", "Mesa", "Chimenea", ""),
            tails=("Hecho a Mano", "Idea Regalo", "Flores Secas", "Centro de Mesa"),
        ),
        "book": TypeWords(
            ("libro", "novela"), ("Libro", "Novela", "Edición", "Volumen"),
            features=("Más Vendido", "Nueva Edición", "Ilustrado", "Premiado", "Club de Lectura", "Firmado"),
        ),
        "memory card": TypeWords(
            ("tarjeta de memoria", "tarjeta memoria", "tarjeta"), ("Tarjeta de Memoria", "Tarjeta Flash", "Tarjeta"),
            features=("Alta Velocidad", "Preparada 4K", "Resistente al Agua", "con Adaptador", "para Cámara",
                      "para Móvil"),
        ),
        "lamp": TypeWords(
            ("lámpara", "lampara", "lámpara de mesa"),
            ("Lámpara", "Lámpara de Mesa", "Lámpara de Escritorio", "Lámpara de Noche"),
            features=("LED", "Control Táctil", "USB", "Bajo Consumo", "Moderna", "Regulable"),
        ),
        "backpack": TypeWords(
            ("mochila", "mochila de viaje"), ("Mochila", "Mochila de Viaje", "Mochila Urbana"),
            features=("Impermeable", "Funda Portátil", "Ligera", "Antirrobo", "Puerto USB", "Senderismo"),
        ),
    },
    surface={
        "terracotta": ("terracota",),
        "sage": ("verde salvia", "salvia"),
        "navy": ("azul marino", "marino"),
        "mustard": ("mostaza",),
        "cream": ("crema", "crudo"),
        "charcoal": ("gris antracita", "antracita"),
        "plain": ("liso", "lisa"),
        "striped": ("a rayas", "de rayas"),
        "dotted": ("de lunares", "lunares"),
        "checked": ("de cuadros", "vichy"),
        "round": ("redonda", "redondo"),
        "rectangular": ("rectangular",),
        "runner": ("de pasillo", "pasillo"),
        "square": ("cuadrado", "cuadrada"),
        "bolster": ("cilíndrico", "rulo"),
        "bottle": ("botella", "tipo botella"),
        "bowl": ("cuenco", "bajo"),
        "cylinder": ("cilindro", "tubo"),
        "mystery": ("misterio", "novela negra"),
        "romance": ("romántica", "romance"),
        "fantasy": ("fantasía", "fantasia"),
        "history": ("historia",),
        "poetry": ("poesía", "poesia"),
        "paperback": ("tapa blanda", "bolsillo"),
        "hardcover": ("tapa dura",),
        "large print": ("letra grande",),
        "class 10": ("clase 10", "class 10"),
        "dome": ("cúpula", "campana"),
        "cone": ("cónica", "cono"),
        "globe": ("globo", "esfera"),
        "warm white": ("blanco cálido", "luz cálida"),
        "cool white": ("blanco frío", "luz fría"),
        "rgb": ("rgb", "multicolor"),
        **{f"{c}l": (f"{c}l", f"{c} litros") for c in ("20", "30", "40")},
    },
    title_form={
        "mystery": "Misterio",
        "romance": "Romántica",
        "fantasy": "Fantasía",
        "history": "Historia",
        "poetry": "Poesía",
        "paperback": "Tapa Blanda",
        "hardcover": "Tapa Dura",
        "large print": "Letra Grande",
        "class 10": "Clase 10",
        "warm white": "Blanco Cálido",
        "cool white": "Blanco Frío",
    },
    vocabulary=Vocabulary(
        fashion_brands=_VOCABULARY.fashion_brands,
        fashion_lines=_VOCABULARY.fashion_lines,
        fashion_adjectives=(
            "Moderno", "Nórdico", "Boho", "Rústico", "Minimalista", "Acogedor", "Premium", "Artesanal",
            "Elegante", "Suave", "Nuevo", "Resistente",
        ),
        fashion_tails=("Envío Gratis", "Más Vendido", "Decoración Hogar", "Idea Regalo", ""),
        tech_brands=_VOCABULARY.tech_brands,
        tech_series=_VOCABULARY.tech_series,
        tech_tails=("Envío Gratis", "Más Vendido", "Envío Rápido", "Garantía 2 Años", ""),
        sellers=_SELLERS,
    ),
    for_word="para",
    noun_first=True,
)  # fmt: skip

_PALETTE = Palette(
    colour_rgb={
        "terracotta": (196, 98, 62),
        "sage": (150, 174, 134),
        "navy": (30, 45, 100),
        "mustard": (214, 168, 38),
        "cream": (236, 222, 184),
        "charcoal": (55, 58, 62),
    },
    pattern_ink={
        "terracotta": (245, 238, 225),
        "sage": (60, 70, 55),
        "navy": (240, 236, 226),
        "mustard": (70, 55, 30),
        "cream": (120, 95, 70),
        "charcoal": (230, 230, 225),
    },
    # Shade and icon colours, independent of every attribute on purpose.
    device_rgb=((235, 232, 225), (60, 60, 64), (170, 140, 100), (110, 130, 150), (200, 200, 195), (140, 60, 50)),
)

HOME_BOOKS = StorefrontSpec(
    product_types={s.name: s for s in _TYPES},
    surface=_SURFACE,
    title_form=_TITLE_FORM,
    vocabulary=_VOCABULARY,
    palette=_PALETTE,
    missing_image_rate=0.08,
    languages=(_SPANISH,),
    description=(
        "Home goods, books and memory cards: 3 visual types (rug, cushion, vase), 2 textual types whose photo is "
        "one stock icon per type (book, memory card), 2 mixed (lamp, backpack); 8% without a photo; a quarter of "
        "titles and a fifth of queries in Spanish."
    ),
)
