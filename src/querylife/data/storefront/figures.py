"""Figures for the docs (docs/images/demo_examples.png, demo_attributes.png): what the storefront looks like."""

from __future__ import annotations

import json
import textwrap
from pathlib import Path

from PIL import Image, ImageDraw, ImageFont

from .clothing_electronics import CLOTHING_ELECTRONICS
from .config import DemoStorefront
from .render import render_product_image
from .spec import StorefrontSpec

__all__ = ["render_attribute_sheet", "render_contact_sheet"]


def _font(size: int) -> ImageFont.FreeTypeFont | ImageFont.ImageFont:
    try:
        return ImageFont.load_default(size=size)
    except TypeError:  # Pillow without FreeType
        return ImageFont.load_default()


def _save_small(sheet: Image.Image, out_path: str | Path) -> Path:
    out = Path(out_path)
    out.parent.mkdir(parents=True, exist_ok=True)
    # A 256-colour palette keeps the figure small enough to live in the repository.
    sheet.quantize(colors=256, method=Image.Quantize.MEDIANCUT).save(out, optimize=True)
    return out


def render_contact_sheet(
    store: DemoStorefront | str | Path, out_path: str | Path, *, per_type: int = 4, zoom: int = 2
) -> Path:
    """A grid of the first ``per_type`` products of each type, with title and true attributes as captions."""
    import pandas as pd

    st = store if isinstance(store, DemoStorefront) else DemoStorefront.at(store)
    types = st.meta()["product_types"]  # name -> {"informative": ...}, in the storefront's order
    cat = pd.read_parquet(st.catalog_path)
    font, bold = _font(10), _font(12)
    first = Image.open(st.out_dir / cat.image_path.dropna().iloc[0])
    cell_w, img_px, cap_h, label_w = 176, first.width * zoom, 58, 96
    rows = list(types)
    sheet = Image.new("RGB", (label_w + per_type * cell_w, len(rows) * (img_px + cap_h)), "white")
    draw = ImageDraw.Draw(sheet)
    for r, ptype in enumerate(rows):
        y0 = r * (img_px + cap_h)
        info = types[ptype]["informative"]
        draw.text((6, y0 + img_px // 2 - 14), ptype, fill="black", font=bold)
        draw.text((6, y0 + img_px // 2 + 2), f"info in {info}", fill=(90, 90, 90), font=font)
        for c, (_, row) in enumerate(cat[cat.product_type == ptype].head(per_type).iterrows()):
            x0 = label_w + c * cell_w
            if isinstance(row.image_path, str):  # a listing without a photo leaves its cell blank
                im = Image.open(st.out_dir / row.image_path).convert("RGB")
                im = im.resize((img_px, img_px), Image.Resampling.NEAREST)
                sheet.paste(im, (x0 + (cell_w - img_px) // 2, y0 + 4))
            else:
                draw.text((x0 + cell_w // 2 - 24, y0 + img_px // 2), "no photo", fill=(150, 150, 150), font=font)
            attrs = ", ".join(json.loads(row.attributes).values())
            wrapped = textwrap.wrap(row.title, 30)
            lines = wrapped[:2] + [f"[{attrs}]"]
            if len(wrapped) > 2:
                lines[1] += " ..."
            for k, line in enumerate(lines):
                colour = (30, 30, 30) if k < len(lines) - 1 else (20, 90, 160)
                draw.text((x0 + 4, y0 + img_px + 6 + 13 * k), line, fill=colour, font=font)
    return _save_small(sheet, out_path)


def render_attribute_sheet(
    out_path: str | Path,
    *,
    size: int = 64,
    zoom: int = 2,
    seed: int = 0,
    noise: bool = False,
    storefront: StorefrontSpec = CLOTHING_ELECTRONICS,
) -> Path:
    """One row per image-informative type: every colour, then every pattern, then every shape (the rest fixed).

    Pixel noise is off by default: the figure explains the attributes, and noise-free PNGs stay small.
    """
    font = _font(10)
    rows = storefront.image_informative_types
    cols = []
    for ptype in rows:
        spec = storefront.product_types[ptype]
        colours = spec.attributes["colour"]
        base = {a: v[0] for a, v in spec.attributes.items()}
        base["pattern"] = "striped"
        shape_attr = next(a for a in spec.image_attributes if a not in ("colour", "pattern"))
        variants = [(dict(base, colour=c), c) for c in colours]
        variants += [(dict(base, colour=colours[1], pattern=p), p) for p in spec.attributes["pattern"]]
        variants += [
            (dict(base, colour=colours[0], pattern="plain", **{shape_attr: s}), s) for s in spec.attributes[shape_attr]
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
                spec=storefront,
            )
            x0 = 6 + c * (px + 6)
            sheet.paste(im.resize((px, px), Image.Resampling.NEAREST), (x0, y0 + 4))
            draw.text((x0, y0 + px + 5), label, fill=(30, 30, 30), font=font)
    return _save_small(sheet, out_path)
