"""Writing one storefront into a fresh directory: rendered images, catalog / pairs / queries Parquet, meta.json.

meta.json is written last, so inside a directory its presence means "complete"; :mod:`.generate` adds the temp
directory and the rename that make the whole storefront appear atomically.
"""

from __future__ import annotations

import io
import json
import logging
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
from PIL import Image
from tqdm.auto import tqdm

from . import streams
from .catalog import build_catalog
from .config import DemoConfig
from .labels import build_pairs
from .meta import build_meta
from .queries import build_queries
from .render import item_look, photo_shot, render_icon, render_image
from .spec import StorefrontSpec

__all__ = ["write_storefront"]

log = logging.getLogger(__name__)


def _write_parquet(path: Path, columns: dict[str, list[str | None]]) -> None:
    table = pa.table({k: pa.array(v, type=pa.string()) for k, v in columns.items()})
    pq.write_table(table, path, compression="zstd")


def write_storefront(out: Path, config: DemoConfig, spec: StorefrontSpec, progress: bool) -> None:
    """Generate the storefront of ``config`` and ``spec`` into the existing empty directory ``out``."""
    listings = build_catalog(config, spec)
    qrng = streams.rng(config.seed, streams.QUERIES)
    queries, attempts = build_queries(config, spec, listings, qrng)
    if len(queries) < config.effective_n_queries:
        log.warning(
            "demo: only %d distinct queries could be made (asked for %d)",
            len(queries),
            config.effective_n_queries,
        )
    pairs = build_pairs(config, spec, listings, queries, qrng)

    images = out / "images"
    images.mkdir()
    look_group, look = -1, {}
    icons: dict[tuple[str, int], bytes] = {}  # encoded once, written for every listing that shows it
    # Photos are rendered in group order so that the rng streams never depend on the id shuffle.
    order = sorted(range(len(listings)), key=lambda i: (listings[i].group, listings[i].copy))
    bar = tqdm(order, total=len(order), desc="Rendering demo images", unit="img", disable=not progress)
    for i in bar:
        li = listings[i]
        if not li.has_image:
            continue
        if spec.product_types[li.product_type].image_style == "shared_icon":
            key = (li.product_type, li.icon)
            if key not in icons:
                buf = io.BytesIO()
                icon = render_icon(spec, li.product_type, li.icon, config.seed, config.image_size)
                Image.fromarray(icon).save(buf, format="PNG", compress_level=6)
                icons[key] = buf.getvalue()
            (images / f"{li.product_id}.png").write_bytes(icons[key])
            continue
        if li.group != look_group:
            look_group = li.group
            look_rng = streams.rng(config.seed, streams.ITEM_LOOK, li.group)
            look = item_look(spec, li.product_type, li.attributes, look_rng)
        shot = photo_shot(streams.rng(config.seed, streams.PHOTO, li.photo_index), config.noise_std)
        arr = render_image(spec, li.product_type, li.attributes, look, shot, config.image_size)
        Image.fromarray(arr).save(images / f"{li.product_id}.png", format="PNG", compress_level=6)
    bar.close()

    rows = sorted(listings, key=lambda li: li.product_id)
    _write_parquet(
        out / "catalog.parquet",
        {
            "product_id": [li.product_id for li in rows],
            "title": [li.title for li in rows],
            "image_path": [f"images/{li.product_id}.png" if li.has_image else None for li in rows],
            "product_type": [li.product_type for li in rows],
            "attributes": [json.dumps(li.attributes) for li in rows],
            "group_id": [f"g{li.group:06d}" for li in rows],
            "seller": [li.seller for li in rows],
            **({"language": [li.language for li in rows]} if spec.languages else {}),
        },
    )
    # "intent" lets data.split_by=intent keep every phrasing of a test meaning out of training.
    intent_of = {q.text: q.intent for q in queries}
    _write_parquet(
        out / "pairs.parquet",
        {
            "query": [p[0] for p in pairs],
            "product_id": [p[1] for p in pairs],
            "label": [p[2] for p in pairs],
            "intent": [intent_of[p[0]] for p in pairs],
        },
    )
    _write_parquet(
        out / "queries.parquet",
        {
            "query": [q.text for q in queries],
            "product_type": [q.product_type for q in queries],
            "attributes": [json.dumps(q.attributes) for q in queries],
            **({"language": [q.language for q in queries]} if spec.languages else {}),
        },
    )
    meta = build_meta(config, spec, listings, queries, pairs, attempts)
    # meta.json is written last: inside the temp dir too, its presence means "complete".
    (out / "meta.json").write_text(json.dumps(meta, indent=2) + "\n")
