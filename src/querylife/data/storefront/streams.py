"""Randomness of the storefront: independent ``numpy.random.SeedSequence`` streams derived from the seed.

Each concern draws from its own stream, so that, e.g., changing ``image_size`` never changes titles or labels,
and the same config gives byte-identical files. Never reorder the draws inside a stream: that changes the data.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

__all__ = ["CATALOG", "ICON", "IMAGE_PRESENCE", "ITEM_LOOK", "LANGUAGE", "PHOTO", "QUERIES", "pick", "rng"]

CATALOG, QUERIES, ITEM_LOOK, PHOTO = range(4)
# Streams of the features the demo storefront does not use (second languages, missing photos, shared stock icons):
# kept apart so that adding them to a storefront never moves a draw of the four above.
LANGUAGE, IMAGE_PRESENCE, ICON = range(4, 7)


def rng(seed: int, stream: int, index: int = 0) -> np.random.Generator:
    """The generator of ``stream`` (one of the constants above), sub-stream ``index``."""
    return np.random.default_rng(np.random.SeedSequence(entropy=seed, spawn_key=(stream, index)))


def pick(gen: np.random.Generator, options: Sequence[Any]) -> Any:
    """One of ``options``, uniformly."""
    return options[int(gen.integers(len(options)))]
