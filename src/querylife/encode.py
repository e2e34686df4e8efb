"""Streaming product encoding: catalogue rows in batches -> projected vectors, images decoded per batch.

Memory stays flat in the catalogue size: only the catalogue's text columns are held (read by the one loading path,
:mod:`querylife.data`), and each batch's images are decoded, encoded and dropped before the next batch. The same
batch step (:func:`encode_product_rows`) serves ``querylife eval`` (through :func:`querylife.scoring.encode_products`,
over a ``Dataset``'s already decoded images), ``querylife embed`` and the service's inline products, so the three
give the same vectors. Index vectors come from the model's own fusion (``Fusion.index_vectors``), never a copy.

Example::

    catalogue = load_catalogue(cfg.data)                     # the catalogue only: no pairs, no images yet
    for batch in iter_product_batches(model, catalogue, batch_size=256):
        batch.products.t                                     # (B, D) title vectors of rows batch.rows
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch

from .data.errors import BadRows, DataError
from .data.formats import detect_format, load_format, querylife_dir_files
from .data.image_urls import ImageFetch, localise_image_urls
from .data.images import load_images
from .data.notes import Notes
from .data.prepare import join_text_fields
from .data.readers import read_catalog
from .model import QueryLifeModel
from .store import StoredProducts

__all__ = [
    "Catalogue",
    "ProductBatch",
    "ProductVectors",
    "encode_product_rows",
    "image_size_of",
    "iter_product_batches",
    "load_catalogue",
    "product_input_hashes",
]


@dataclass
class ProductVectors:
    """Projected product vectors for catalogue rows: t, v (N, D), has_image (N,), type_ids (N,). ``has_image`` says
    whether ``v`` is an image vector: a photo's, or under ``model.fusion.missing_image="type_mean"`` its type's mean."""

    t: torch.Tensor
    v: torch.Tensor
    has_image: torch.Tensor
    type_ids: torch.Tensor


@dataclass
class Catalogue:
    """A catalogue's products as the encoder reads them (text only; images are decoded per batch).

    ``table``: the normalised catalogue (``product_id``, ``title``, ``product_type``, ``image_path``, extras);
    ``texts``: the product text the title tower reads (``text_fields`` joined); ``file_rows``: the 1-based data
    row in ``source`` of each product, for messages (None for the public formats, whose rows come from several
    files).
    """

    table: pd.DataFrame
    texts: list[str]
    source: str
    text_fields: tuple[str, ...] = ("title",)
    file_rows: np.ndarray | None = None
    notes: Notes = field(default_factory=Notes)
    bad_rows: BadRows | None = None
    _paths: list[str | None] | None = field(default=None, repr=False)

    def __len__(self) -> int:
        return len(self.table)

    @property
    def product_ids(self) -> list[str]:
        return self.table["product_id"].tolist()

    @property
    def image_paths(self) -> list[str | None]:
        """One image path (or None) per product; computed once (every batch indexes it)."""
        if self._paths is None:
            col = self.table["image_path"] if "image_path" in self.table.columns else [None] * len(self.table)
            self._paths = [p if isinstance(p, str) and p else None for p in col]
        return self._paths

    def file_row(self, r: int) -> int:
        """The 1-based row of product ``r`` in the catalogue file (its position + 1 when unknown)."""
        return int(self.file_rows[r]) if self.file_rows is not None else r + 1

    @classmethod
    def from_frame(
        cls, table: pd.DataFrame, *, text_fields: Sequence[str] = ("title",), source: str = "<frame>",
        file_rows: np.ndarray | None = None, notes: Notes | None = None, bad_rows: BadRows | None = None,
    ) -> Catalogue:
        """Wrap an already normalised catalogue table (e.g. ``Dataset.catalog``)."""
        fields = tuple(text_fields)
        for f in fields:
            if f not in table.columns:
                raise DataError(f"text field {f!r} (data.text_fields) is not a catalogue column; columns: "
                                f"{list(table.columns)}", file=source, field=f)
        table = table.reset_index(drop=True)
        return cls(table, join_text_fields(table, fields), source, fields, file_rows, notes or Notes(), bad_rows)


def load_catalogue(data: Any, *, text_fields: Sequence[str] | None = None, progress: bool = False) -> Catalogue:
    """Read the catalogue a ``DataConfig`` names (``catalog`` file, or ``path`` in any format), without pairs.

    The same readers, column mapping (``data.columns`` and aliases), title normalisation, image path resolution
    and image URL handling as :func:`querylife.data.prepare.load_data`; a ``path`` in querylife's layout reads
    only its ``catalog.*``, a public data set goes through its format reader.

    Raises:
        DataError: no catalogue named, or anything the readers raise (naming file, row, field).
    """
    fields = tuple(text_fields or data.text_fields)
    notes = Notes()
    report = BadRows() if data.skip_bad_rows else None
    catalog_file: Path | None = None
    if data.path:
        if data.catalog:
            raise DataError("give either data.path (--data) or data.catalog (--catalog), not both")
        fmt = data.format if data.format != "auto" else detect_format(data.path)
        if fmt == "querylife":
            catalog_file, _ = querylife_dir_files(Path(data.path).expanduser())
        else:
            loaded = load_format(data.path, format=fmt, locale=data.locale, version=data.version,
                                 esci_gains=data.esci_gains, max_title_chars=data.max_title_chars,
                                 skip_bad=data.skip_bad_rows, report=report, notes=notes)
            return Catalogue.from_frame(loaded.catalog, text_fields=fields, source=str(data.path), notes=notes,
                                        bad_rows=loaded.bad_rows)
    elif data.catalog:
        catalog_file = Path(data.catalog)
    else:
        raise DataError("no catalogue: give --catalog FILE or --data PATH (data.catalog / data.path)")
    cat = read_catalog(catalog_file, columns=dict(data.columns), skip_bad=data.skip_bad_rows, report=report,
                       notes=notes, max_title_chars=data.max_title_chars)
    table = cat.table
    paths = localise_image_urls(
        table["image_path"].tolist(), fetch=ImageFetch.from_config(data), file=cat.file,
        column=cat.columns.column("image_path"), rows=cat.rows.tolist(), skip_bad=data.skip_bad_rows,
        report=report, notes=notes, progress=progress,
    )
    table["image_path"] = pd.Series(paths, index=table.index, dtype=object)
    return Catalogue.from_frame(table, text_fields=fields, source=cat.file, file_rows=np.asarray(cat.rows),
                                notes=notes, bad_rows=report)


def image_size_of(model: QueryLifeModel) -> int:
    """The image side the model's vision tower reads (as :func:`prepare_from_config` loaded them for training): 224
    for EfficientNet-Lite0, 64 for the small CNN, ``model.tower.image_size`` when set. Loading images at any other
    size would make the tower resize them again, so served vectors would differ from trained ones."""
    return int(model.vision_tower.image_size)


def _file_digest(path: str | None) -> str:
    if not path:
        return "-"
    try:
        h = hashlib.blake2b(digest_size=16)
        with open(path, "rb") as fh:
            for block in iter(lambda: fh.read(1 << 20), b""):
                h.update(block)
        return h.hexdigest()
    except OSError as err:  # a missing file is an input too: it changes when the file appears
        return f"unreadable:{type(err).__name__}"


def product_input_hashes(catalogue: Catalogue, *, threads: int | None = None) -> list[str]:
    """One content hash per product of what its vectors depend on: product text, type, image path and bytes.

    ``querylife embed --update`` re-embeds exactly the products whose hash changed.
    """
    from concurrent.futures import ThreadPoolExecutor

    paths = catalogue.image_paths
    workers = threads or min(8, os.cpu_count() or 1)
    if sum(p is not None for p in paths) >= 64 and workers > 1:
        with ThreadPoolExecutor(max_workers=workers) as pool:  # file reads release the GIL
            digests = list(pool.map(_file_digest, paths, chunksize=64))
    else:
        digests = [_file_digest(p) for p in paths]
    out = []
    for text, ptype, path, digest in zip(catalogue.texts, catalogue.table["product_type"], paths, digests,
                                         strict=True):
        h = hashlib.blake2b(digest_size=16)
        for part in (text, str(ptype), path or "", digest):
            h.update(part.encode("utf-8"))
            h.update(b"\x00")
        out.append(h.hexdigest())
    return out


@torch.no_grad()
def encode_product_rows(
    model: QueryLifeModel,
    texts: list[str],
    product_types: list[str],
    has_image: torch.Tensor,
    images: Callable[[int, int], torch.Tensor],
    *,
    cache: Any = None,
    batch_size: int = 512,
    progress: bool = False,
    image_features: Callable[[], torch.Tensor] | None = None,
) -> ProductVectors:
    """Encode N products (text, type, images) into the model's space, in chunks of ``batch_size``.

    ``images(start, stop)``: the uint8 images (stop - start, 3, S, S) of products ``start:stop`` (decoded on
    demand, so that only a chunk's images are ever held). ``cache``: a :class:`~querylife.scoring.FeatureCache`
    for frozen text towers (a fresh one when None). ``image_features``: when given, returns the vision tower's
    features (N, d_v) of all N products (a frozen tower's cached features); only the image head then runs.
    """
    from .scoring import FeatureCache

    cache = cache or FeatureCache()
    was_training = model.training
    model.eval()
    n = len(texts)
    try:
        tf = cache.text(model, texts, batch_size=batch_size, progress=progress)
        t = torch.cat([model.project_titles(c) for c in tf.split(batch_size)]) if n else tf  # (N, D)
        v_parts = []
        vf = image_features() if image_features is not None else None  # (N, d_v)
        for start in range(0, n, batch_size):
            stop = min(start + batch_size, n)
            if vf is not None:
                v_parts.append(model.project_images(vf[start:stop], has_image[start:stop]).cpu())  # (b, D)
            else:
                v_parts.append(model.encode_images(images(start, stop), has_image[start:stop]).cpu())  # (b, D)
        v = torch.cat(v_parts) if v_parts else torch.empty(0, model.config.embed_dim)
        types = model.type_ids(product_types).cpu()
        v, has_image = model.fusion.fill_missing(v, types, has_image.cpu())  # model.fusion.missing_image
    finally:
        model.train(was_training)
    return ProductVectors(t.cpu(), v, has_image, types)


@torch.no_grad()
def index_vectors_of(model: QueryLifeModel, vectors: ProductVectors) -> torch.Tensor:
    """``Fusion.index_vectors`` of encoded products (N, D'): the model's own formula."""
    dev = model.device
    out = model.fusion.index_vectors(vectors.t.to(dev), vectors.v.to(dev), vectors.type_ids.to(dev),
                                     vectors.has_image.to(dev))
    return out.float().cpu()


@dataclass
class ProductBatch:
    """One encoded batch of catalogue rows: ``rows`` (catalogue row numbers) and their stored vectors."""

    rows: np.ndarray
    products: StoredProducts


def _decode_batch(catalogue: Catalogue, rows: np.ndarray, size: int, skip_bad: bool
                  ) -> tuple[torch.Tensor, torch.Tensor]:
    paths = catalogue.image_paths
    sub = [paths[r] for r in rows]
    if not any(sub):  # one zero image broadcast: no memory per product
        blank = torch.zeros((1, 3, size, size), dtype=torch.uint8).expand(len(rows), 3, size, size)
        return blank, torch.zeros(len(rows), dtype=torch.bool)
    local = BadRows() if skip_bad else None
    try:
        images, has = load_images(sub, size, skip_bad=skip_bad, report=local)
    except DataError as err:
        # load_images counts rows within the batch; name the catalogue's own row and the product instead.
        pos = (err.row or 1) - 1
        r = int(rows[pos]) if 0 <= pos < len(rows) else None
        pid = catalogue.table["product_id"].iloc[r] if r is not None else None
        raise DataError(f"{err.detail} (product_id {pid!r}, catalogue {catalogue.source})", file=err.file,
                        row=None if r is None else catalogue.file_row(r), field=err.field) from None
    if local:
        if catalogue.bad_rows is None:
            catalogue.bad_rows = BadRows()
        shown: dict[str, int] = {}
        for ex in local.examples:
            r = int(rows[ex["row"] - 1])
            shown[ex["reason"]] = shown.get(ex["reason"], 0) + 1
            catalogue.bad_rows.add(ex["reason"], file=ex["file"], row=catalogue.file_row(r), field=ex["field"],
                                   message=f"{ex['message']} (product_id {catalogue.table['product_id'].iloc[r]!r})")
        for reason, n in local.counts.items():  # beyond the examples kept: counted only
            for _ in range(n - shown.get(reason, 0)):
                catalogue.bad_rows.add(reason)
    return images, has


def _text_lengths(model: QueryLifeModel, texts: list[str]) -> np.ndarray:
    """Token count of each text as the text tower truncates it (characters when it has no tokenizer)."""
    tower = getattr(model, "text_tower", None)
    tokenizer = getattr(tower, "tokenizer", None)
    if tokenizer is None or not callable(tokenizer):
        return np.fromiter((len(t) for t in texts), dtype=np.int64, count=len(texts))
    ids = tokenizer(list(texts), truncation=True, max_length=getattr(tower, "max_length", None))["input_ids"]
    return np.fromiter((len(x) for x in ids), dtype=np.int64, count=len(texts))


def iter_product_batches(
    model: QueryLifeModel,
    catalogue: Catalogue,
    rows: np.ndarray | None = None,
    *,
    batch_size: int = 256,
    skip_bad: bool = False,
    image_size: int | None = None,
    length_sorted: bool = False,
) -> Iterator[ProductBatch]:
    """Encode catalogue ``rows`` (default: all, in order) batch by batch; images are decoded per batch.

    ``length_sorted``: batch the given ``rows`` longest text first (a stable sort by the text tower's token count,
    characters for a tower without a tokenizer), so that each batch pads its texts to a similar length
    (sentence-transformers ``encode`` sorts by characters; tokens pad less); each batch's ``rows``
    say which products it holds, and the caller restores its order (``embed`` does, per shard). Vectors differ
    from unsorted batches only by float rounding (padding is masked out); the same ``rows`` give the same
    batches, so a resumed ``embed`` still matches an uninterrupted one.

    Each batch uses a fresh feature cache, so its vectors depend only on its own rows: an interrupted and resumed
    ``embed`` gives the same vectors as an uninterrupted one. ``skip_bad``: an unreadable image leaves its
    product without an image (counted in ``catalogue.bad_rows``) instead of raising a ``DataError`` that names
    the file, catalogue row and product.
    """
    from concurrent.futures import ThreadPoolExecutor

    from .scoring import FeatureCache

    rows = np.arange(len(catalogue), dtype=np.int64) if rows is None else np.asarray(rows, dtype=np.int64)
    if length_sorted and len(rows):
        rows = rows[np.argsort(-_text_lengths(model, [catalogue.texts[r] for r in rows]), kind="stable")]
    size = image_size or image_size_of(model)
    table = catalogue.table
    starts = list(range(0, len(rows), batch_size))
    # The next batch's images are decoded while this one is encoded (PIL and torch both release the GIL), so
    # at most two batches of images are held.
    with ThreadPoolExecutor(max_workers=1, thread_name_prefix="decode") as pool:
        pending = pool.submit(_decode_batch, catalogue, rows[:batch_size], size, skip_bad) if starts else None
        for start in starts:
            sub = rows[start : start + batch_size]
            images, has = pending.result()  # (b, 3, S, S) uint8, (b,)
            nxt = rows[start + batch_size : start + 2 * batch_size]
            pending = pool.submit(_decode_batch, catalogue, nxt, size, skip_bad) if len(nxt) else None
            texts = [catalogue.texts[r] for r in sub]
            types = table["product_type"].iloc[sub].tolist()
            vec = encode_product_rows(model, texts, types, has, lambda a, b, im=images: im[a:b],
                                      cache=FeatureCache(), batch_size=batch_size)
            products = StoredProducts(
                product_ids=table["product_id"].iloc[sub].tolist(), titles=table["title"].iloc[sub].tolist(),
                product_types=types, t=vec.t, v=vec.v, has_image=vec.has_image.bool(), type_ids=vec.type_ids,
                index_vectors=index_vectors_of(model, vec),
            )
            yield ProductBatch(sub, products)
