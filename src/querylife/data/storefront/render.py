"""Product photos, drawn with PIL. A photo is a pure function of (type, attributes, item look, photo shot, size).

The *item look* (shade, pattern geometry, framing) is what stays the same across an item's duplicate listings;
the *photo shot* (small reframing, background, light, pixel noise) is what changes from one listing's photo to
the next. Clothing photos show the drawn attributes (colour, pattern, shape); an electronics photo is a generic
icon whose colour is the one attribute it shows.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
from PIL import Image, ImageDraw

from . import streams
from .clothing_electronics import CLOTHING_ELECTRONICS
from .shapes import DRAWINGS, Point, shade
from .shapes_home_media import HOME_MEDIA_DRAWINGS
from .spec import StorefrontSpec
from .streams import pick

__all__ = ["item_look", "photo_shot", "render_icon", "render_image", "render_product_image"]

_DRAWINGS = {**DRAWINGS, **HOME_MEDIA_DRAWINGS}


def item_look(spec: StorefrontSpec, ptype: str, attrs: Mapping[str, str], rng: np.random.Generator) -> dict[str, Any]:
    """What stays the same across an item's duplicate listings: shade, pattern geometry, framing."""
    tspec = spec.product_types[ptype]
    palette = spec.palette
    if tspec.informative == "image":
        main = np.array(palette.colour_rgb[attrs["colour"]], dtype=float) + rng.uniform(-18, 18, size=3)
        ink = np.array(palette.pattern_ink[attrs["colour"]], dtype=float)
        accent_choices: tuple[tuple[int, int, int], ...] = ((245, 245, 240), (235, 225, 200), (200, 200, 200))
        if tspec.drawing_name == "handbag":  # straps in leather tones or the bag's own darker shade
            accent_choices = ((60, 40, 30), (150, 110, 70), tuple(shade(main, 0.55)))  # type: ignore[assignment]
    else:
        drawn_colour = "colour" in attrs and "colour" in tspec.image_attributes
        device = palette.colour_rgb[attrs["colour"]] if drawn_colour else pick(rng, palette.device_rgb)
        main = np.array(device, dtype=float) + rng.uniform(-10, 10, size=3)
        ink = main
        accent_choices = ((60, 200, 90), (80, 160, 255), (255, 255, 255))
    return {
        "main_rgb": tuple(np.clip(main, 0, 255)),
        "ink_rgb": tuple(ink),
        "accent_rgb": pick(rng, accent_choices),
        "pattern_period": 0.13 * rng.uniform(0.85, 1.2),
        "stripe_angle": (0.0 if rng.random() < 0.7 else 90.0) + rng.uniform(-10, 10),
        "pattern_phase": rng.uniform(0, 1, size=2),
        "dot_radius": rng.uniform(0.26, 0.36),
        "scale": rng.uniform(0.72, 0.95),
        "rotation": rng.uniform(-7, 7),
        "offset": rng.uniform(-1, 1, size=2),
        "flip": bool(rng.random() < 0.5),
    }


def photo_shot(rng: np.random.Generator, noise_std: tuple[float, float]) -> dict[str, Any]:
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


def render_image(
    spec: StorefrontSpec,
    ptype: str,
    attrs: Mapping[str, str],
    look: Mapping[str, Any],
    photo: Mapping[str, Any],
    size: int,
) -> np.ndarray:
    """Draw one listing photo as an (size, size, 3) uint8 array. Pure function of its arguments."""
    ss = max(1, math.ceil(128 / size))  # supersample small images so that edges and patterns anti-alias
    big = size * ss
    parts = _DRAWINGS[spec.product_types[ptype].drawing_name](attrs, look)
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

    def to_canvas(points: Sequence[Point]) -> list[Point]:
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

    main_rgb = np.asarray(look["main_rgb"], dtype=np.float32) + np.asarray(photo["colour_jitter"], dtype=np.float32)
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
    outline = shade(main_rgb, 0.55)
    px = scale * big  # object units -> supersampled pixels
    for part in mains:
        draw.polygon(to_canvas(part.points), outline=outline, width=max(1, round(0.012 * px)))
    for part in parts:
        if part.kind == "fill":
            draw.polygon(to_canvas(part.points), fill=part.rgb, outline=shade(part.rgb, 0.7))
        elif part.kind == "line":
            colour = tuple(int(c) for c in np.clip(np.asarray(part.rgb) + photo["colour_jitter"], 0, 255))
            draw.line(to_canvas(part.points), fill=colour, width=max(1, round(part.width * px)), joint="curve")
        elif part.kind == "dot":
            (cx, cy), r = to_canvas(part.points)[0], part.width * px
            draw.ellipse([cx - r, cy - r, cx + r, cy + r], fill=part.rgb)
    if ss > 1:
        img = img.resize((size, size), Image.Resampling.BOX)
    out = np.asarray(img, dtype=np.float32) * photo["brightness"]
    noise_rng = np.random.default_rng(photo["noise_seed"])
    out += noise_rng.normal(0.0, photo["noise_std"], size=out.shape).astype(np.float32)
    return np.clip(np.rint(out), 0, 255).astype(np.uint8)


def render_icon(spec: StorefrontSpec, ptype: str, variant: int, seed: int, size: int) -> np.ndarray:
    """Stock picture ``variant`` of a shared-icon type: drawn from nothing but the type, the variant and the seed,
    without pixel noise, and shown unchanged by every listing that uses it (so it says nothing about attributes)."""
    index = 1 + list(spec.product_types).index(ptype) * 64 + variant  # index 0 is the listings' icon draws
    gen = streams.rng(seed, streams.ICON, index)
    look = item_look(spec, ptype, {}, gen)
    shot = photo_shot(gen, (0.0, 0.0))
    return render_image(spec, ptype, {}, look, shot, size)


def render_product_image(
    product_type: str,
    attributes: Mapping[str, str],
    *,
    size: int = 64,
    seed: int = 0,
    photo: int = 0,
    noise_std: tuple[float, float] = (2.0, 7.0),
    spec: StorefrontSpec = CLOTHING_ELECTRONICS,
) -> Image.Image:
    """Render one product photo outside a storefront (for figures and experiments).

    ``seed`` fixes the item's look (shade, pattern geometry, framing); ``photo`` picks one of its photos.
    """
    tspec = spec.product_types[product_type]
    missing = set(tspec.image_attributes) - set(attributes)
    if missing:
        raise ValueError(f"{product_type}: missing drawn attributes {sorted(missing)}")
    look = item_look(spec, product_type, attributes, streams.rng(seed, streams.ITEM_LOOK))
    shot = photo_shot(streams.rng(seed, streams.PHOTO, photo), noise_std)
    return Image.fromarray(render_image(spec, product_type, attributes, look, shot, size))
