"""Drawings of the home_books and media_market storefronts' products, in object units like :mod:`.shapes`.

Visual types (rug, cushion, vase, mug, umbrella) change their outline with their ``shape`` attribute and take the
item's colour and pattern; mixed types draw one attribute (a lamp's shade, headphones' style; a backpack's and a
bottle's colour through the item look); the stock icons of the text-carried types (book, memory card, hard drive,
...) read no attribute at all.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

from .shapes import Part, _arc, _box, _rounded_rect, shade

__all__ = ["HOME_MEDIA_DRAWINGS"]

_GREY = (120, 120, 125)
_DARK = (40, 40, 45)
_LIGHT = (235, 235, 230)


def _circle(cx: float, cy: float, r: float, n: int = 32) -> list[tuple[float, float]]:
    return _arc(cx, cy, r, r, 0, 360, n)[:-1]


def _fringe(x: float, y0: float, y1: float, direction: float) -> list[Part]:
    """Tassels along the short side of a rug at ``x``, pointing left (-1) or right (+1)."""
    n = 6
    return [
        Part("line", [(x, y0 + (y1 - y0) * (k + 0.5) / n), (x + 0.05 * direction, y0 + (y1 - y0) * (k + 0.5) / n)],
             (240, 232, 210), 0.012)
        for k in range(n)
    ]  # fmt: skip


# --- home_books


def _rug(attrs: Mapping[str, str], look: Mapping[str, Any]) -> list[Part]:
    shape = attrs["shape"]
    if shape == "round":
        return [Part("main", _circle(0.5, 0.5, 0.42))]
    x0, x1, y0, y1 = (0.14, 0.86, 0.24, 0.76) if shape == "rectangular" else (0.06, 0.94, 0.41, 0.59)
    return [Part("main", _box(x0, y0, x1, y1)), *_fringe(x0, y0, y1, -1), *_fringe(x1, y0, y1, 1)]


def _cushion(attrs: Mapping[str, str], look: Mapping[str, Any]) -> list[Part]:
    shape = attrs["shape"]
    dark = shade(look["main_rgb"], 0.6)
    if shape == "square":
        # Pinched corners, as a stuffed square cushion looks.
        pts = [(0.18, 0.18), (0.5, 0.24), (0.82, 0.18), (0.76, 0.5), (0.82, 0.82), (0.5, 0.76), (0.18, 0.82),
               (0.24, 0.5)]  # fmt: skip
        return [Part("main", pts)]
    if shape == "round":
        return [Part("main", _circle(0.5, 0.5, 0.34)), Part("dot", [(0.5, 0.5)], dark, 0.03)]
    return [
        Part("main", _rounded_rect(0.08, 0.38, 0.92, 0.62, 0.1)),
        Part("line", _arc(0.2, 0.5, 0.04, 0.12, -90, 90), dark, 0.012),
        Part("line", _arc(0.8, 0.5, 0.04, 0.12, 90, 270), dark, 0.012),
    ]


def _vase(attrs: Mapping[str, str], look: Mapping[str, Any]) -> list[Part]:
    shape = attrs["shape"]
    if shape == "bottle":  # round belly, long narrow neck
        belly = _arc(0.5, 0.66, 0.24, 0.24, -60, 240, 20)
        pts = [(0.45, 0.06), (0.55, 0.06), (0.55, 0.42), *belly, (0.45, 0.42)]
        return [Part("main", pts)]
    if shape == "bowl":  # wide and low
        return [Part("main", [(0.08, 0.48), (0.92, 0.48), *_arc(0.5, 0.48, 0.42, 0.28, 0, 180, 16)[1:-1]])]
    return [Part("main", _box(0.34, 0.08, 0.66, 0.92)), Part("line", [(0.34, 0.14), (0.66, 0.14)], _LIGHT, 0.012)]


def _book(attrs: Mapping[str, str], look: Mapping[str, Any]) -> list[Part]:
    return [
        Part("fill", _box(0.30, 0.12, 0.74, 0.90), _LIGHT),  # pages
        Part("main", _box(0.26, 0.10, 0.70, 0.88)),
        Part("line", [(0.32, 0.10), (0.32, 0.88)], shade(look["main_rgb"], 0.6), 0.015),
        Part("fill", _box(0.38, 0.22, 0.62, 0.30), _LIGHT),  # title plate
    ]


def _memory_card(attrs: Mapping[str, str], look: Mapping[str, Any]) -> list[Part]:
    pts = [(0.28, 0.10), (0.62, 0.10), (0.72, 0.20), (0.72, 0.90), (0.28, 0.90)]
    parts = [Part("main", pts), Part("fill", _box(0.34, 0.52, 0.66, 0.82), _LIGHT)]  # label
    parts += [Part("fill", _box(0.32 + 0.07 * k, 0.13, 0.36 + 0.07 * k, 0.24), (215, 190, 110)) for k in range(5)]
    return parts


def _lamp(attrs: Mapping[str, str], look: Mapping[str, Any]) -> list[Part]:
    shade_pts = {
        "dome": [(0.16, 0.42), *_arc(0.5, 0.42, 0.34, 0.30, 180, 360, 16)[1:-1], (0.84, 0.42)],
        "cone": [(0.40, 0.10), (0.60, 0.10), (0.80, 0.42), (0.20, 0.42)],
        "globe": _circle(0.5, 0.27, 0.21),
    }[attrs["shape"]]
    return [
        Part("line", [(0.5, 0.40), (0.5, 0.86)], _GREY, 0.025),
        Part("fill", _rounded_rect(0.34, 0.84, 0.66, 0.92, 0.02), _DARK),
        Part("main", shade_pts),
    ]


def _backpack(attrs: Mapping[str, str], look: Mapping[str, Any]) -> list[Part]:
    dark = shade(look["main_rgb"], 0.6)
    return [
        Part("line", _arc(0.5, 0.2, 0.1, 0.1, 180, 360), dark, 0.03),  # handle
        Part("main", _rounded_rect(0.24, 0.18, 0.76, 0.90, 0.12)),
        Part("main", _rounded_rect(0.32, 0.56, 0.68, 0.84, 0.05)),  # front pocket
        Part("line", [(0.32, 0.62), (0.68, 0.62)], dark, 0.015),
    ]


# --- media_market


def _mug(attrs: Mapping[str, str], look: Mapping[str, Any]) -> list[Part]:
    body = {
        "classic": [(0.22, 0.30), (0.66, 0.30), (0.66, 0.76), (0.22, 0.76)],
        "tall": [(0.28, 0.10), (0.62, 0.10), (0.62, 0.88), (0.28, 0.88)],
        "tapered": [(0.16, 0.28), (0.72, 0.28), (0.60, 0.80), (0.28, 0.80)],
    }[attrs["shape"]]
    top, bottom = body[1][1], body[2][1]
    handle = _arc(body[1][0] - 0.01, (top + bottom) / 2, 0.16, (bottom - top) * 0.3, -80, 80, 12)
    return [Part("line", handle, shade(look["main_rgb"], 0.8), 0.04), Part("main", body)]


def _umbrella(attrs: Mapping[str, str], look: Mapping[str, Any]) -> list[Part]:
    shape = attrs["shape"]
    if shape == "classic":  # wide canopy with a scalloped hem
        hem = [(0.92 - 0.84 * k / 8, 0.46 if k % 2 == 0 else 0.41) for k in range(9)]
        canopy = [*_arc(0.5, 0.46, 0.42, 0.30, 180, 360, 16), *hem[1:-1]]
    elif shape == "bubble":  # deep, narrow dome
        canopy = [*_arc(0.5, 0.58, 0.30, 0.46, 180, 360, 16)]
    else:  # pagoda: two tiers
        canopy = [(0.5, 0.08), (0.66, 0.24), (0.60, 0.26), (0.90, 0.48), (0.10, 0.48), (0.40, 0.26), (0.34, 0.24)]
    hook = [(0.5, 0.46), (0.5, 0.86), *_arc(0.56, 0.86, 0.06, 0.06, 180, 0, 6)[1:]]
    return [Part("line", hook, _DARK, 0.02), Part("main", canopy)]


def _hard_drive(attrs: Mapping[str, str], look: Mapping[str, Any]) -> list[Part]:
    cable = [(0.5, 0.84), (0.5, 0.92), (0.7, 0.95), (0.9, 0.92)]
    return [
        Part("line", cable, _DARK, 0.02),
        Part("main", _rounded_rect(0.26, 0.12, 0.74, 0.84, 0.05)),
        Part("dot", [(0.66, 0.20)], (60, 200, 90), 0.018),
    ]


def _video_game(attrs: Mapping[str, str], look: Mapping[str, Any]) -> list[Part]:
    return [
        Part("main", _box(0.28, 0.08, 0.72, 0.92)),
        Part("fill", _box(0.28, 0.08, 0.72, 0.18), _LIGHT),  # the platform band
        Part("fill", _box(0.34, 0.30, 0.66, 0.70), shade(look["main_rgb"], 0.6)),  # cover art
    ]


def _ink_cartridge(attrs: Mapping[str, str], look: Mapping[str, Any]) -> list[Part]:
    return [
        Part("main", [(0.30, 0.14), (0.70, 0.14), (0.70, 0.70), (0.60, 0.82), (0.40, 0.82), (0.30, 0.70)]),
        Part("fill", _box(0.44, 0.82, 0.56, 0.88), _DARK),  # nozzle
        Part("fill", _box(0.36, 0.26, 0.64, 0.50), _LIGHT),  # label
    ]


def _vinyl_record(attrs: Mapping[str, str], look: Mapping[str, Any]) -> list[Part]:
    grooves = [Part("line", _circle(0.5, 0.5, r, 40), (70, 70, 75), 0.006) for r in (0.30, 0.36)]
    return [
        Part("fill", _circle(0.5, 0.5, 0.42, 40), (25, 25, 28)),
        *grooves,
        Part("main", _circle(0.5, 0.5, 0.14)),  # the label takes the item colour
        Part("dot", [(0.5, 0.5)], _LIGHT, 0.018),
    ]


def _keyboard(attrs: Mapping[str, str], look: Mapping[str, Any]) -> list[Part]:
    keys = shade(look["main_rgb"], 0.7)
    parts = [Part("main", _rounded_rect(0.06, 0.34, 0.94, 0.66, 0.03))]
    for row in range(3):
        for col in range(10):
            x, y = 0.10 + 0.082 * col, 0.38 + 0.085 * row
            parts.append(Part("fill", _box(x, y, x + 0.06, y + 0.06), keys))
    return parts


def _battery(attrs: Mapping[str, str], look: Mapping[str, Any]) -> list[Part]:
    return [
        Part("fill", _box(0.45, 0.10, 0.55, 0.16), (200, 200, 205)),  # + terminal
        Part("main", _rounded_rect(0.36, 0.16, 0.64, 0.90, 0.03)),
        Part("line", [(0.46, 0.30), (0.54, 0.30)], _LIGHT, 0.015),
        Part("line", [(0.5, 0.26), (0.5, 0.34)], _LIGHT, 0.015),
    ]


def _water_bottle(attrs: Mapping[str, str], look: Mapping[str, Any]) -> list[Part]:
    return [
        Part("fill", _rounded_rect(0.42, 0.06, 0.58, 0.16, 0.02), _DARK),  # cap
        Part("main", [(0.40, 0.16), (0.60, 0.16), (0.66, 0.26), (0.66, 0.92), (0.34, 0.92), (0.34, 0.26)]),
    ]


def _headphones(attrs: Mapping[str, str], look: Mapping[str, Any]) -> list[Part]:
    style = attrs["style"]
    dark = shade(look["main_rgb"], 0.6)
    if style == "earbuds":
        cable = [(0.30, 0.40), (0.5, 0.66), (0.70, 0.40)]
        return [
            Part("line", cable, _DARK, 0.012),
            Part("line", [(0.5, 0.66), (0.5, 0.92)], _DARK, 0.012),
            Part("main", _circle(0.28, 0.34, 0.07, 16)),
            Part("main", _circle(0.72, 0.34, 0.07, 16)),
        ]
    band = _arc(0.5, 0.52, 0.34, 0.40, 180, 360, 16)
    if style == "over-ear":
        cups = [_rounded_rect(0.08, 0.42, 0.26, 0.82, 0.06), _rounded_rect(0.74, 0.42, 0.92, 0.82, 0.06)]
    else:  # on-ear: small round pads
        cups = [_circle(0.17, 0.54, 0.08, 16), _circle(0.83, 0.54, 0.08, 16)]
    return [Part("line", band, dark, 0.035), *(Part("main", c) for c in cups)]


# Drawing name -> drawing(attributes, item look) -> parts.
HOME_MEDIA_DRAWINGS: dict[str, Callable[[Mapping[str, str], Mapping[str, Any]], list[Part]]] = {
    "rug": _rug,
    "cushion": _cushion,
    "vase": _vase,
    "book": _book,
    "memory card": _memory_card,
    "lamp": _lamp,
    "backpack": _backpack,
    "mug": _mug,
    "umbrella": _umbrella,
    "hard drive": _hard_drive,
    "video game": _video_game,
    "ink cartridge": _ink_cartridge,
    "vinyl record": _vinyl_record,
    "keyboard": _keyboard,
    "battery": _battery,
    "water bottle": _water_bottle,
    "headphones": _headphones,
}
