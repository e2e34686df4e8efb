"""How attribute values are written: shoppers (and the occasional fashion title) vary the wording of a value
("polka dot", "dotted"), so neither exact string matching nor a title copied into a query finds every match."""

from __future__ import annotations

import re
from collections.abc import Sequence

import numpy as np

from .spec import StorefrontSpec
from .streams import pick

__all__ = ["mentions", "surface"]


def surface(spec: StorefrontSpec, value: str, gen: np.random.Generator, p_canonical: float) -> str:
    """One written form of ``value``: the canonical one with probability ``p_canonical``, else another."""
    forms = spec.surface_forms(value)
    if len(forms) == 1 or gen.random() < p_canonical:
        return forms[0]
    return pick(gen, forms[1:])


def mentions(spec: StorefrontSpec, title: str, values: Sequence[str]) -> bool:
    """Whether ``title`` names any of ``values`` in any written form (as a whole word)."""
    low = title.lower()
    return any(re.search(rf"\b{re.escape(s)}\b", low) for v in values for s in spec.surface_forms(v))
