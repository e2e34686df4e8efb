"""Pins the demo storefront's content, so that a refactor cannot silently change the demo data (and with it every
number in the README). The digest was computed with the generator as it stood before it became a package.

If you change the storefront on purpose, bump ``GENERATOR_VERSION`` and update ``PINNED`` in the same commit.
"""

from __future__ import annotations

import hashlib

import numpy as np
import pandas as pd
from PIL import Image

from querylife.data.storefront import DemoConfig, generate_demo, render_product_image

# Tables (as CSV text, so the Parquet writer's version does not matter) + decoded pixels of every tenth image +
# one stand-alone rendered photo.
PINNED = "0a6af3481cfeef834554ba7c7159d357ab65faf7f0c0dbc785f9ed45b87486c3"


def test_small_storefront_is_unchanged(tmp_path):
    store = generate_demo(tmp_path / "store", DemoConfig(n_products=80, seed=7, image_size=16), progress=False)
    digest = hashlib.sha256()
    for path in (store.catalog_path, store.pairs_path, store.queries_path):
        digest.update(pd.read_parquet(path).to_csv(index=False, lineterminator="\n").encode())
    catalog = pd.read_parquet(store.catalog_path)
    for rel in catalog.image_path.iloc[::10]:
        digest.update(np.asarray(Image.open(store.out_dir / rel).convert("RGB")).tobytes())
    photo = render_product_image(
        "dress", {"colour": "red", "pattern": "dotted", "shape": "maxi"}, size=24, seed=4, photo=1
    )
    digest.update(np.asarray(photo).tobytes())
    assert digest.hexdigest() == PINNED
