"""The demo storefront's product world: four clothing types whose attributes are in the photo, four electronics
types whose attributes are in the title.

Clothing: the attributes a shopper types (colour, pattern, shape) are drawn in the product photo and only rarely
named in the title, whose words are brand and marketing noise; the material is written in the title and not drawn.
Electronics: the discriminating attributes (capacity, wattage, phone model, cable length) are only in the title,
and the photo is a generic device icon whose colour is the one attribute it shows. A model that fuses title and
image per product type (and query) should therefore beat either modality alone.
"""

from __future__ import annotations

from .spec import Palette, ProductTypeSpec, StorefrontSpec, Vocabulary

__all__ = ["CLOTHING_ELECTRONICS"]

_COLOURS = ("red", "blue", "green", "black", "yellow", "pink")
_PATTERNS = ("plain", "striped", "dotted", "checked")
_DEVICE_COLOURS = ("black", "blue", "pink", "green")
_COMMON_FASHION_TAILS = ("Free Shipping", "Best Seller", "Gift Idea", "Ships Fast", "")

_TYPES = (
    ProductTypeSpec(
        "dress",
        "image",
        {
            "colour": _COLOURS,
            "pattern": _PATTERNS,
            "shape": ("a-line", "bodycon", "maxi"),
            "material": ("cotton", "linen", "silk", "chiffon"),
        },
        ("dress", "dress", "dresses"),
        ("Dress", "Dress", "Party Dress", "Day Dress", "Sundress", "Frock"),
        ("colour", "pattern", "shape"),
        audiences=("Women's", "Ladies", "Womens", ""),
        tails=("for Party", "for Wedding Guest", "for Work", "Size S-XL", "with Pockets", "Hot Sale"),
    ),
    ProductTypeSpec(
        "t-shirt",
        "image",
        {
            "colour": _COLOURS,
            "pattern": _PATTERNS,
            "sleeve": ("short-sleeve", "long-sleeve", "sleeveless"),
            "material": ("cotton", "linen", "polyester", "bamboo"),
        },
        ("t-shirt", "tshirt", "tee", "t shirt"),
        ("T-Shirt", "Tee", "Basic Tee", "Top", "T Shirt", "Shirt"),
        ("colour", "pattern", "sleeve"),
        audiences=("Men's", "Women's", "Unisex", ""),
        tails=("Regular Fit", "Size S-XXL", "Cotton Blend", "for Gym", "Hot Sale", "Pack of 1"),
    ),
    ProductTypeSpec(
        "sneakers",
        "image",
        {
            "colour": _COLOURS,
            "pattern": _PATTERNS,
            "style": ("high-top", "low-top", "slip-on"),
            "material": ("leather", "canvas", "suede", "knit"),
        },
        ("sneakers", "trainers", "sneaker"),
        ("Sneakers", "Trainers", "Running Shoes", "Casual Shoes", "Sneaker", "Sports Shoes"),
        ("colour", "pattern", "style"),
        audiences=("Men's", "Women's", "Unisex", "Kids", ""),
        tails=("for Walking", "Size 36-45", "Non-Slip", "for Running", "Hot Sale", "Breathable Mesh"),
    ),
    ProductTypeSpec(
        "handbag",
        "image",
        {
            "colour": _COLOURS,
            "pattern": _PATTERNS,
            "shape": ("tote", "clutch", "crossbody"),
            "material": ("leather", "canvas", "nylon", "straw"),
        },
        ("handbag", "bag", "purse"),
        ("Handbag", "Bag", "Purse", "Fashion Bag", "Ladies Bag"),
        ("colour", "pattern", "shape"),
        audiences=("Women's", "Ladies", ""),
        tails=("for Work", "for Travel", "Gift Idea", "Faux Leather", "Hot Sale", "with Zip"),
    ),
    ProductTypeSpec(
        "power bank",
        "title",
        {
            "capacity": ("5000mah", "10000mah", "20000mah", "30000mah"),
            "output": ("20w", "45w", "65w"),
            "colour": _DEVICE_COLOURS,
        },
        ("power bank", "powerbank", "battery pack"),
        ("Power Bank", "Powerbank", "Portable Power Bank", "Battery Pack", "External Battery"),
        ("colour",),
        features=("Portable", "Fast Charging", "LED Display", "Slim", "Travel", "PD", "Compact"),
    ),
    ProductTypeSpec(
        "charger",
        "title",
        {
            "wattage": ("20w", "30w", "45w", "65w", "100w"),
            "ports": ("1-port", "2-port", "3-port"),
            "plug": ("eu plug", "uk plug", "us plug"),
            "colour": _DEVICE_COLOURS,
        },
        ("charger", "wall charger", "charging adapter"),
        ("Charger", "Wall Charger", "USB Charger", "Charging Plug", "Power Adapter"),
        ("colour",),
        features=("Fast Charger", "GaN", "Travel", "Foldable", "PD", "Compact", "Quick Charge"),
    ),
    ProductTypeSpec(
        "phone case",
        "title",
        {
            "model": ("iphone 13", "iphone 14", "iphone 15", "galaxy s23", "galaxy s24", "pixel 8"),
            "material": ("silicone", "leather", "clear", "rugged"),
            "colour": _DEVICE_COLOURS,
        },
        ("case", "phone case", "cover"),
        ("Case", "Phone Case", "Cover", "Protective Case"),
        ("colour",),
        features=("Shockproof", "Slim Fit", "Anti-Scratch", "Magnetic", "Protective", "Drop Tested"),
        for_attribute="model",
    ),
    ProductTypeSpec(
        "usb cable",
        "title",
        {
            "connector": ("usb-c", "lightning", "micro-usb"),
            "length": ("0.5m", "1m", "2m", "3m"),
            "colour": _DEVICE_COLOURS,
        },
        ("cable", "usb cable", "charging cable"),
        ("Cable", "Charging Cable", "Data Cable", "Cord", "USB Cable"),
        ("colour",),
        features=("Fast Charging", "Data Sync", "Durable", "Tangle-Free", "Nylon Braided", "Quick Charge"),
    ),
)

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

_VOCABULARY = Vocabulary(
    fashion_brands=(
        "Lumora", "Vestia", "Kairo", "Nordhaven", "Maison Elle", "Arden", "Solenne", "Tavi", "Brixton Lane",
        "Oaklyn", "Mirabel", "Zephyr", "Calloway", "Nomad Studio", "Velour", "Ashby", "Odette", "Marlowe",
    ),
    fashion_lines=(
        "Aurora", "Solstice", "Riviera", "Serene", "Harbor", "Luna", "Nova", "Echo", "Haven", "Alpine", "Coastal",
        "Sierra", "Willow", "Atlas", "Breeze", "Juniper", "Cove", "Vista", "Muse", "Tempo",
    ),
    fashion_adjectives=(
        "Summer", "Casual", "Elegant", "Premium", "New", "Trendy", "Classic", "Lightweight", "Breathable", "Soft",
        "Everyday", "Vintage", "Modern", "Comfortable", "Stylish", "Essential", "2024", "Limited Edition", "Chic",
        "Boho", "Cozy", "Urban",
    ),
    fashion_tails=_COMMON_FASHION_TAILS,
    tech_brands=(
        "Voltix", "Ampero", "ChargeOne", "Nexcell", "Zentro", "Powerline", "Kinetiq", "Ohmly", "Lumen Tech",
        "Aircore", "Fluxa", "Cellsmith",
    ),
    tech_series=("Pro", "Max", "Lite", "Go", "Plus", "X", "Air", "Ultra", "Neo", "Mini", "S", "Edge"),
    tech_tails=("Free Shipping", "Best Seller", "2 Year Warranty", "Certified", "New Model", ""),
    sellers=(
        "shop_sunrise", "urbanmart", "daily_deals", "the_outlet", "bestbuy_hub", "megastore_eu", "trendhouse",
        "smart_gadgets", "homestyle", "citylook", "quickship", "valuezone", "primo_shop", "eastwind_trading",
        "northstar_store", "click_and_go", "market_square", "bazaar_online", "metro_supply", "globalmart",
        "fashion_corner", "tech_depot", "bright_retail", "harbor_goods",
    ),
)  # fmt: skip

_PALETTE = Palette(
    colour_rgb={
        "red": (205, 35, 40),
        "blue": (40, 80, 200),
        "green": (40, 150, 65),
        "black": (32, 32, 34),
        "yellow": (240, 205, 40),
        "pink": (245, 140, 185),
    },
    pattern_ink={
        "red": (245, 240, 230),
        "blue": (245, 240, 230),
        "green": (245, 240, 230),
        "black": (235, 235, 235),
        "yellow": (55, 55, 60),
        "pink": (70, 60, 90),
    },
    # Independent of every attribute on purpose.
    device_rgb=(
        (35, 35, 38), (236, 236, 232), (128, 131, 138), (30, 45, 95), (60, 110, 200), (232, 160, 180),
        (70, 140, 95), (190, 192, 198), (150, 40, 45),
    ),
)  # fmt: skip

CLOTHING_ELECTRONICS = StorefrontSpec(
    product_types={s.name: s for s in _TYPES},
    surface=_SURFACE,
    title_form=_TITLE_FORM,
    vocabulary=_VOCABULARY,
    palette=_PALETTE,
)
