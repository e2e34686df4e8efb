"""The model side of the service: a loaded checkpoint, store, index and calibrator, and the blocking operations
the HTTP layer runs in its thread pool. No scoring formula lives here: scores come from
:class:`querylife.search.Searcher` (the model's own fusion) and products from :mod:`querylife.encode`.

Example::

    service = load_service("runs/exp1/best", "runs/exp1/store", ServeConfig())
    q = service.searcher.encode_queries(["red dress"])[0]
    scored = service.score_stored(q, ["p1", "p2"], skip_unknown=False)
"""

from __future__ import annotations

import base64
import binascii
import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ..calibrate import load_calibrator
from ..data.images import ImageDataError, decode_image_bytes
from ..encode import image_size_of
from ..model import QueryLifeModel
from ..relevance import RelevanceCalibrator
from ..search import Searcher
from ..store import StoredProducts
from .config import ServeConfig

_log = logging.getLogger("uvicorn.error")  # uvicorn's own logger: shown at its log level

__all__ = ["BadInput", "Scored", "Service", "UnknownProducts", "decode_inline_image", "load_service"]


class BadInput(ValueError):
    """A request field the service cannot use (answered 422): ``loc`` names the field, ``kind`` the reason."""

    def __init__(self, loc: tuple, message: str, kind: str = "value_error") -> None:
        super().__init__(message)
        self.loc, self.message, self.kind = loc, message, kind


class UnknownProducts(KeyError):
    """Product ids not in the store (answered 404 naming them)."""

    def __init__(self, ids: list[str]) -> None:
        super().__init__(ids)
        self.ids = ids


@dataclass
class Scored:
    """Scores of one query against candidates, in the order sent (unknown ids left out when skipped)."""

    product_ids: list[str | None]
    scores: np.ndarray  # (n,)
    image_weight: np.ndarray  # (n,) NaN for concat
    probability: np.ndarray | None  # (n,) None without a calibrator
    relevant: np.ndarray | None  # (n,) bool
    unknown: list[str] = field(default_factory=list)


def decode_inline_image(text: str, size: int, settings: ServeConfig, loc: tuple) -> np.ndarray:
    """base64 -> bytes -> ``(size, size, 3)`` uint8 through the same pipeline as catalogue files; size limits are
    checked before decoding (base64 length, then the declared pixel count)."""
    if len(text) > (settings.max_image_bytes + 2) // 3 * 4 + 4:  # base64 is 4/3 of the bytes: refuse unread
        raise BadInput(loc, f"image over max_image_bytes={settings.max_image_bytes} bytes", "image_too_large")
    try:
        raw = base64.b64decode(text, validate=True)
    except (binascii.Error, ValueError) as err:
        raise BadInput(loc, f"not valid base64: {err}", "bad_base64") from None
    if len(raw) > settings.max_image_bytes:
        raise BadInput(loc, f"image of {len(raw)} bytes over max_image_bytes={settings.max_image_bytes}",
                       "image_too_large")
    try:
        return decode_image_bytes(raw, size, max_pixels=settings.max_image_pixels)
    except ImageDataError as err:
        kind = "image_too_large" if err.kind == "too_large" else "bad_image"
        hint = " (max_image_pixels)" if kind == "image_too_large" else ""
        raise BadInput(loc, err.detail + hint, kind) from None


class Service:
    """A loaded model + store + index + calibrator; every method is blocking (run it off the event loop).

    ``info`` (for /readyz) names the checkpoint and its SHA-256 (``store.checkpoint_hash``), the store size, the
    index and the calibrator.
    """

    def __init__(
        self,
        searcher: Searcher,
        settings: ServeConfig,
        *,
        calibrator: RelevanceCalibrator | None = None,
        calibrator_note: str = "",
        info: dict[str, Any] | None = None,
    ) -> None:
        self.searcher = searcher
        self.model: QueryLifeModel = searcher.model
        self.settings = settings
        self.calibrator = calibrator
        self.info = {
            "calibrator": calibrator is not None,
            "calibrator_note": calibrator_note,
            "store_products": len(searcher.products),
            "index": "given" if searcher.index is not None else "none (exhaustive search)",
            "embed_dim": self.model.config.embed_dim,
            "fusion": self.model.config.fusion.mode,
            # the share of each query's offset the scores carry (0: raw fused scores; docs/SERVING.md)
            "query_offset_strength": _offset_strength(self.model),
            "query_encoder": "pytorch" if searcher.query_encoder == searcher._torch_queries else "custom",
            **(info or {}),
        }
        self.model_id = str(self.info.get("checkpoint_sha256", "unknown"))[:16]
        self.image_size = image_size_of(self.model)  # inline images are decoded at the size the tower was trained at

    @property
    def threshold(self) -> float | None:
        return None if self.calibrator is None else float(self.calibrator.threshold)

    def _decide(self, scores: np.ndarray) -> tuple[np.ndarray | None, np.ndarray | None]:
        if self.calibrator is None or not len(scores):
            empty = np.zeros(0) if self.calibrator is not None else None
            return empty, (empty.astype(bool) if empty is not None else None)
        prob = self.calibrator.predict_proba(scores.astype(np.float64))
        return prob, prob >= self.calibrator.threshold

    # ---- relevance ----------------------------------------------------------------------------------------
    def score_stored(self, q: torch.Tensor, product_ids: list[str], *, skip_unknown: bool) -> Scored:
        """Scores of query vector ``q`` (D,) against stored ``product_ids`` in one batched call."""
        row_of = self.searcher.products.row_of
        try:  # the usual case, every id known: one C-level pass over the ids
            rows = np.fromiter(map(row_of.__getitem__, product_ids), dtype=np.int64, count=len(product_ids))
        except KeyError:
            rows = np.array([row_of.get(p, -1) for p in product_ids], dtype=np.int64)  # -1: not in the store
        missing = rows < 0
        known: list[str | None] = list(product_ids)
        unknown: list[str] = []
        if missing.any():
            unknown = list(dict.fromkeys(p for p, m in zip(product_ids, missing.tolist(), strict=True) if m))
            if not skip_unknown:
                raise UnknownProducts(unknown)
            known = [p for p, m in zip(product_ids, missing.tolist(), strict=True) if not m]
            rows = rows[~missing]
        rel = self.searcher.relevance(q, rows)
        prob, relevant = self._decide(rel.scores)
        return Scored(known, rel.scores, rel.image_weight, prob, relevant, unknown)

    def encode_inline(self, products: list[Any]) -> StoredProducts:
        """Inline products (schemas.InlineProduct) -> stored-form vectors, encoded with the model on the fly."""
        from ..encode import encode_product_rows, index_vectors_of

        n, size = len(products), self.image_size
        images = torch.zeros((n, 3, size, size), dtype=torch.uint8)  # (n, 3, S, S)
        has = torch.zeros(n, dtype=torch.bool)
        for i, p in enumerate(products):
            if len(p.title) > self.settings.max_title_chars:
                raise BadInput(("body", "products", i, "title"),
                               f"longer than max_title_chars={self.settings.max_title_chars}", "string_too_long")
            if p.image_base64:
                arr = decode_inline_image(p.image_base64, size, self.settings, ("body", "products", i, "image_base64"))
                images[i] = torch.from_numpy(arr).permute(2, 0, 1)
                has[i] = True
        texts, types = [p.title for p in products], [p.product_type for p in products]
        vec = encode_product_rows(self.model, texts, types, has, lambda a, b: images[a:b], batch_size=max(1, n))
        return StoredProducts(
            product_ids=[p.product_id or "" for p in products], titles=texts, product_types=types, t=vec.t, v=vec.v,
            has_image=vec.has_image.bool(), type_ids=vec.type_ids, index_vectors=index_vectors_of(self.model, vec),
        )

    def score_inline(self, q: torch.Tensor, products: list[Any]) -> Scored:
        """Scores of query vector ``q`` against inline products (encoded here, in one batch)."""
        stored = self.encode_inline(products)
        rel = self.searcher.score_vectors(q, stored)
        prob, relevant = self._decide(rel.scores)
        return Scored([p.product_id for p in products], rel.scores, rel.image_weight, prob, relevant)

    # ---- search and embeddings ----------------------------------------------------------------------------
    def search(self, q: torch.Tensor, k: int, candidates: int | None) -> tuple[list, np.ndarray | None,
                                                                                np.ndarray | None]:
        """Top ``k`` hits (``querylife.search.Hit``) with their probabilities and decisions."""
        hits = self.searcher.search(q, k=k, candidates=candidates)
        prob, relevant = self._decide(np.array([h.score for h in hits], dtype=np.float64))
        return hits, prob, relevant

    def embed_stored(self, product_ids: list[str]) -> StoredProducts:
        """Stored vectors of ``product_ids`` (UnknownProducts naming the ids not in the store)."""
        row_of = self.searcher.products.row_of
        unknown = list(dict.fromkeys(p for p in product_ids if p not in row_of))
        if unknown:
            raise UnknownProducts(unknown)
        return self.searcher.products.select(self.searcher.products.rows(product_ids))


def load_service(
    checkpoint: str | Path, store: str | Path, settings: ServeConfig, *, query_encoder=None
) -> Service:
    """Load the checkpoint, its embedding store, the store's index (exhaustive search when none was built) and the
    calibrator. ``query_encoder``: ``list[str] -> (B, D)`` instead of the PyTorch query tower (e.g. onnxruntime),
    passed to :class:`~querylife.search.Searcher`.

    Raises:
        StoreError / ProductIndexError / FileNotFoundError / ValueError: naming the checkpoint, store or index that
            cannot be used: an incomplete or damaged store, a store embedded with another checkpoint, a stale index.
    """
    from ..index import INDEX_MANIFEST, ProductIndex
    from ..store import EmbeddingStore, StoreError, checkpoint_hash

    checkpoint, store = Path(checkpoint), Path(store)
    digest = checkpoint_hash(checkpoint)
    opened = EmbeddingStore.open(store)
    if opened.checkpoint_sha256 != digest:
        raise StoreError(f"{store} was embedded with checkpoint {opened.checkpoint_path} (sha256 "
                         f"{opened.checkpoint_sha256[:12]}), not {checkpoint} ({digest[:12]}): its vectors do not "
                         f"belong to this model; run `querylife embed --checkpoint {checkpoint} ...`")
    model = QueryLifeModel.from_pretrained(checkpoint)
    products = opened.load()
    index = ProductIndex.load(store, store=opened) if (store / INDEX_MANIFEST).is_file() else None
    encoder_name = "custom" if query_encoder is not None else "pytorch (eager)"
    if query_encoder is None and settings.torchscript:
        from ..traced_query import TracedQueryEncoder, TraceError

        try:
            query_encoder = TracedQueryEncoder(model)
            encoder_name = f"pytorch (torchscript, max abs diff to eager {query_encoder.max_abs_diff:.1e})"
        except TraceError as err:  # a tower the tracer cannot handle still serves, at eager speed
            _log.warning("querylife serve: %s; encoding queries with eager PyTorch", err)
            encoder_name = f"pytorch (eager: {err})"
    searcher = Searcher(model, products, index, query_encoder)
    calibrator, note = load_calibrator(checkpoint)
    info = {"checkpoint": str(checkpoint), "checkpoint_sha256": digest, "store": str(store),
            "index": index.kind if index is not None else "none (exhaustive search)", "query_encoder": encoder_name}
    return Service(searcher, settings, calibrator=calibrator, calibrator_note=note, info=info)


def _offset_strength(model: QueryLifeModel) -> float:
    """The strength the served scores subtract of each query's offset: 0 without a fitted reference."""
    module = getattr(model, "query_offset", None)
    return float(module.strength) if module is not None and module.ready else 0.0
