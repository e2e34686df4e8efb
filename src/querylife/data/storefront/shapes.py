"""Drawings of the products, one per type, in object units (0..1, y down) before placement on the canvas.

Clothing drawings depend on the drawn attributes (a maxi dress is long, a high-top sneaker reaches the ankle);
electronics drawings are one generic icon per type, and nothing in them depends on the attributes. A new
storefront names one of these drawings per type (``ProductTypeSpec.drawing``) or adds its own to ``DRAWINGS``.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Literal

import numpy as np

__all__ = ["DRAWINGS", "Part", "Point", "shade"]

Point = tuple[float, float]


@dataclass
class Part:
    """One polygon, polyline or dot of a drawing. ``main`` parts take the item's colour and pattern."""

    kind: Literal["main", "fill", "line", "dot"]
    points: list[Point]
    rgb: tuple[int, int, int] = (0, 0, 0)
    width: float = 0.0  # line width / dot radius in object units


def shade(rgb: Sequence[float], f: float) -> tuple[int, int, int]:
    """``rgb`` darkened (f < 1) or lightened (f > 1)."""
    return tuple(int(np.clip(c * f, 0, 255)) for c in rgb)  # type: ignore[return-value]


def _rounded_rect(x0: float, y0: float, x1: float, y1: float, r: float, n: int = 5) -> list[Point]:
    pts: list[Point] = []
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


def _box(x0: float, y0: float, x1: float, y1: float) -> list[Point]:
    return [(x0, y0), (x1, y0), (x1, y1), (x0, y1)]


def _arc(cx: float, cy: float, rx: float, ry: float, a0: float, a1: float, n: int = 10) -> list[Point]:
    return [
        (
            cx + rx * math.cos(math.radians(a0 + (a1 - a0) * k / n)),
            cy + ry * math.sin(math.radians(a0 + (a1 - a0) * k / n)),
        )
        for k in range(n + 1)
    ]


def _mirror(points: Sequence[Point]) -> list[Point]:
    return [(1.0 - x, y) for x, y in points]


def _dress(attrs: Mapping[str, str], look: Mapping[str, Any]) -> list[Part]:
    top = [(0.36, 0.08), (0.42, 0.08), (0.5, 0.17), (0.58, 0.08), (0.64, 0.08), (0.63, 0.25)]
    skirt = {
        # a-line: short, strongly flared; bodycon: narrow waist, hugs the hips; maxi: long to the floor.
        "a-line": [(0.60, 0.38), (0.84, 0.76), (0.16, 0.76), (0.40, 0.38)],
        "bodycon": [(0.58, 0.38), (0.64, 0.56), (0.60, 0.76), (0.40, 0.76), (0.36, 0.56), (0.42, 0.38)],
        "maxi": [(0.60, 0.38), (0.72, 0.96), (0.28, 0.96), (0.40, 0.38)],
    }[attrs["shape"]]
    return [Part("main", [*top, *skirt, (0.37, 0.25)])]


def _t_shirt(attrs: Mapping[str, str], look: Mapping[str, Any]) -> list[Part]:
    sleeve = attrs["sleeve"]
    if sleeve == "sleeveless":
        body = [(0.40, 0.10), (0.45, 0.10), (0.5, 0.18), (0.55, 0.10), (0.60, 0.10), (0.62, 0.24),
                (0.70, 0.34), (0.70, 0.88), (0.30, 0.88), (0.30, 0.34), (0.38, 0.24)]  # fmt: skip
        return [Part("main", body)]
    body = [(0.30, 0.18), (0.42, 0.12), (0.46, 0.16), (0.5, 0.17), (0.54, 0.16), (0.58, 0.12),
            (0.70, 0.18), (0.70, 0.88), (0.30, 0.88)]  # fmt: skip
    if sleeve == "short-sleeve":
        left = [(0.31, 0.18), (0.15, 0.31), (0.22, 0.42), (0.31, 0.35)]
    else:
        left = [(0.31, 0.18), (0.12, 0.74), (0.21, 0.77), (0.31, 0.38)]
    return [Part("main", left), Part("main", _mirror(left)), Part("main", body)]


def _sneakers(attrs: Mapping[str, str], look: Mapping[str, Any]) -> list[Part]:
    style = attrs["style"]
    upper = {
        "low-top": [(0.10, 0.70), (0.09, 0.47), (0.14, 0.42), (0.34, 0.45), (0.52, 0.50), (0.78, 0.56),
                    (0.90, 0.60), (0.93, 0.70)],
        "high-top": [(0.10, 0.70), (0.09, 0.20), (0.14, 0.16), (0.36, 0.18), (0.40, 0.38), (0.56, 0.48),
                     (0.78, 0.55), (0.90, 0.60), (0.93, 0.70)],
        "slip-on": [(0.10, 0.70), (0.10, 0.54), (0.15, 0.51), (0.40, 0.56), (0.78, 0.58), (0.90, 0.62),
                    (0.93, 0.70)],
    }[style]  # fmt: skip
    parts = [Part("main", upper)]
    parts.append(
        Part("fill", [(0.07, 0.68), (0.91, 0.68), (0.95, 0.72), (0.93, 0.79), (0.07, 0.79)], look["accent_rgb"])
    )
    laces = {"low-top": ((0.40, 0.46), (0.62, 0.52)), "high-top": ((0.37, 0.24), (0.55, 0.47))}.get(style)
    if laces is not None:
        (x0, y0), (x1, y1) = laces
        for k in range(4):
            t = (k + 0.5) / 4
            x, y = x0 + (x1 - x0) * t, y0 + (y1 - y0) * t
            parts.append(Part("line", [(x - 0.04, y - 0.035), (x + 0.04, y + 0.035)], (245, 245, 245), 0.022))
    else:
        parts.append(Part("line", [(0.30, 0.56), (0.36, 0.60)], shade(look["main_rgb"], 0.55), 0.02))  # gusset
    return parts


def _handbag(attrs: Mapping[str, str], look: Mapping[str, Any]) -> list[Part]:
    shape = attrs["shape"]
    dark, accent = shade(look["main_rgb"], 0.55), look["accent_rgb"]
    if shape == "tote":
        return [
            Part("line", _arc(0.36, 0.40, 0.09, 0.24, 180, 360), accent, 0.035),
            Part("line", _arc(0.64, 0.40, 0.09, 0.24, 180, 360), accent, 0.035),
            Part("main", [(0.20, 0.38), (0.80, 0.38), (0.84, 0.88), (0.16, 0.88)]),
        ]
    if shape == "clutch":
        return [
            Part("main", _rounded_rect(0.10, 0.38, 0.90, 0.68, 0.03)),
            Part("line", [(0.10, 0.40), (0.5, 0.57), (0.90, 0.40)], dark, 0.02),
            Part("dot", [(0.5, 0.57)], (215, 190, 110), 0.035),
        ]
    return [
        Part("line", [(0.31, 0.54), (0.50, 0.04), (0.69, 0.54)], accent, 0.022),
        Part("main", _rounded_rect(0.28, 0.52, 0.72, 0.86, 0.06)),
        Part("line", [(0.28, 0.58), (0.5, 0.70), (0.72, 0.58)], dark, 0.018),
    ]


def _power_bank(attrs: Mapping[str, str], look: Mapping[str, Any]) -> list[Part]:
    # Squat brick, so it does not read as a phone case.
    parts = [Part("main", _rounded_rect(0.24, 0.24, 0.76, 0.78, 0.06))]
    parts.append(Part("fill", _box(0.42, 0.27, 0.58, 0.30), (40, 40, 45)))
    parts += [Part("dot", [(0.41 + 0.06 * k, 0.71)], look["accent_rgb"], 0.018) for k in range(4)]
    return parts


def _charger(attrs: Mapping[str, str], look: Mapping[str, Any]) -> list[Part]:
    prong = (200, 200, 205)
    return [
        Part("fill", _box(0.39, 0.14, 0.44, 0.345), prong),
        Part("fill", _box(0.56, 0.14, 0.61, 0.345), prong),
        Part("main", _rounded_rect(0.27, 0.34, 0.73, 0.86, 0.06)),
        Part("fill", _box(0.43, 0.66, 0.57, 0.71), (40, 40, 45)),
        Part("dot", [(0.5, 0.50)], look["accent_rgb"], 0.02),
    ]


def _phone_case(attrs: Mapping[str, str], look: Mapping[str, Any]) -> list[Part]:
    return [
        Part("main", _rounded_rect(0.30, 0.07, 0.70, 0.93, 0.07)),
        Part("main", _rounded_rect(0.35, 0.12, 0.51, 0.28, 0.03)),
        Part("dot", [(0.39, 0.16)], (25, 25, 28), 0.025),
        Part("dot", [(0.39, 0.24)], (25, 25, 28), 0.025),
        Part("dot", [(0.47, 0.20)], (25, 25, 28), 0.02),
    ]


def _usb_cable(attrs: Mapping[str, str], look: Mapping[str, Any]) -> list[Part]:
    curve = [(0.22 + 0.56 * t, 0.30 + 0.42 * t + 0.16 * math.sin(2 * math.pi * 1.5 * t)) for t in np.linspace(0, 1, 24)]
    plug = (200, 200, 205)
    (ax, ay), (bx, by) = curve[0], curve[-1]
    return [
        Part("line", curve, look["main_rgb"], 0.035),
        Part("fill", _box(ax - 0.05, ay - 0.12, ax + 0.05, ay), plug),
        Part("fill", _box(bx - 0.04, by, bx + 0.04, by + 0.12), plug),
        Part("fill", _box(ax - 0.03, ay - 0.18, ax + 0.03, ay - 0.12), (150, 150, 155)),
    ]  # fmt: skip


# Drawing name -> drawing(attributes, item look) -> parts.
DRAWINGS: dict[str, Callable[[Mapping[str, str], Mapping[str, Any]], list[Part]]] = {
    "dress": _dress,
    "t-shirt": _t_shirt,
    "sneakers": _sneakers,
    "handbag": _handbag,
    "power bank": _power_bank,
    "charger": _charger,
    "phone case": _phone_case,
    "usb cable": _usb_cable,
}
