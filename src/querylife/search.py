"""Relevance and search over stored product vectors: the query is encoded once, the model's own fusion does the rest.

``Searcher.relevance`` scores a query against given stored rows with ``QueryLifeModel.score(..., pairwise=False)``
in one batched call: the same function ``querylife eval`` scores labelled pairs with
(:func:`querylife.scoring.score_pairs`), so a served score equals the evaluated one. ``Searcher.search`` retrieves
candidates from the ANN index (inner product of the query vector with the type-only fused index vectors,
``Fusion.index_vectors``) and re-scores them with the query-aware gate; without an index it scores every product.

Example::

    searcher = Searcher(model, EmbeddingStore.open("store").load(), ProductIndex.load("store"))
    for hit in searcher.search("red striped sofa", k=10):
        print(hit.rank, hit.product_id, hit.title, round(hit.score, 3), round(hit.image_weight, 2))
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np
import torch

from .model import QueryLifeModel
from .store import StoredProducts

if TYPE_CHECKING:  # faiss is an optional dependency (the serve extra)
    from .index import ProductIndex

__all__ = ["Hit", "Relevance", "Searcher", "default_candidates"]

QueryEncoder = Callable[[list[str]], torch.Tensor]


def default_candidates(k: int) -> int:
    """How many ANN candidates ``search`` re-scores by default: max(10 k, 100)."""
    return max(10 * k, 100)


@dataclass
class Relevance:
    """Scores of one query against stored rows, row-aligned: ``scores`` and the gate's ``image_weight`` (NaN for
    the concat fusion, which has no gate)."""

    rows: np.ndarray  # (n,) int64 rows of the StoredProducts
    scores: np.ndarray  # (n,) float32
    image_weight: np.ndarray  # (n,) float32


@dataclass
class Hit:
    """One search result; ``retrieval_score`` is the ANN inner product (NaN when no index was used)."""

    rank: int
    row: int
    product_id: str
    title: str
    product_type: str
    score: float
    image_weight: float
    retrieval_score: float


class Searcher:
    """Query-time scoring over a :class:`~querylife.store.StoredProducts`.

    Args:
        model: the checkpoint the products were embedded with (put in eval mode here).
        products: the stored vectors (``EmbeddingStore.load()``).
        index: an ANN index over ``products.index_vectors`` (``ProductIndex.load``); None: exhaustive search.
        query_encoder: ``list[str] -> (B, D)`` projected unit query vectors (e.g. an ONNX runtime session);
            default ``model.encode_queries`` without gradients.
        chunk_size: rows per fused-scoring call in exhaustive search (bounds memory).
    """

    def __init__(
        self,
        model: QueryLifeModel,
        products: StoredProducts,
        index: ProductIndex | None = None,
        query_encoder: QueryEncoder | None = None,
        *,
        chunk_size: int = 65536,
    ) -> None:
        self.model = model.eval()
        self.products = products
        self.index = index
        self.query_encoder = query_encoder or self._torch_queries
        self.chunk_size = chunk_size
        # t.v of every stored product (n,), which the fused score's norm needs: computed once here instead of from
        # the gathered (n, D) rows at every request
        self._stv = (products.t * products.v).sum(-1)
        if products.t.shape[-1] != model.config.embed_dim:
            raise ValueError(f"the stored vectors have dimension {products.t.shape[-1]}, the model "
                             f"{model.config.embed_dim}: they were embedded with another checkpoint")
        if index is not None and index.size != len(products):
            raise ValueError(f"the index holds {index.size} vectors, the store {len(products)} products: "
                             "rebuild it with `querylife index STORE`")

    @torch.inference_mode()  # no autograd bookkeeping at all (the vectors are only ever read)
    def _torch_queries(self, queries: list[str]) -> torch.Tensor:
        return self.model.encode_queries(queries).float().cpu()  # (B, D)

    def encode_queries(self, queries: list[str]) -> torch.Tensor:
        """Projected unit query vectors (B, D) float32 on the CPU."""
        q = self.query_encoder(list(queries))
        return torch.as_tensor(q, dtype=torch.float32).cpu()

    @torch.no_grad()
    def score_vectors(self, q: torch.Tensor, products: StoredProducts, rows: np.ndarray | None = None) -> Relevance:
        """Scores of one query vector ``q`` (D,) against ``rows`` of ``products`` (all when None), in one call.

        The model's own fusion, one query against n products: :meth:`Fusion.one_query` (the gate once per product
        type, :meth:`Fusion.combine` over the cosines q.t and q.v and the stored t.v), the same formula as
        ``model.score`` and equal to the ``pairwise=False`` scores ``querylife eval`` uses to float32 rounding
        (tests check it); ``concat`` goes through ``model.score(..., pairwise=True)``. Against the
        ``model.score(..., pairwise=True)`` call it replaced: 0.8-0.9x the time (benchmarks/results/serve_scoring.md).
        """
        dev = self.model.device
        if rows is None:
            rows = np.arange(len(products), dtype=np.int64)
            t, v, type_ids, has_image = products.t, products.v, products.type_ids, products.has_image
            stv = self._stv if products is self.products else None
        else:
            rows = np.asarray(rows, dtype=np.int64)
            idx = torch.from_numpy(rows)
            # index_select: ~5x faster than t[idx] for a 1,000-row gather (no advanced-indexing machinery)
            t, v, type_ids, has_image = (x.index_select(0, idx) for x in
                                         (products.t, products.v, products.type_ids, products.has_image))
            stv = self._stv.index_select(0, idx) if products is self.products else None
        t, v, type_ids, has_image = t.to(dev), v.to(dev), type_ids.to(dev), has_image.to(dev)  # (n, D) / (n,)
        q = q.reshape(-1).to(dev)  # (D,)
        if self.model.fusion.mode == "concat":
            out = self.model.score(q.unsqueeze(0), t, v, type_ids, has_image, pairwise=True)
            scores, weight = out.scores[0], None  # (n,)
        else:
            stv = (t * v).sum(-1) if stv is None else stv.to(dev)  # (n,)
            out = self.model.fusion.one_query(q, t @ q, v @ q, stv, type_ids, has_image)
            scores, weight = out.scores, out.image_weight  # (n,)
            offset = self.model.offsets(q.unsqueeze(0))  # (1,) model.query_offset, as model.score subtracts it
            if offset is not None:
                scores = scores - offset[0]
        return Relevance(rows, scores.float().cpu().numpy(),
                         weight.float().cpu().numpy() if weight is not None
                         else np.full(len(rows), np.nan, dtype=np.float32))

    def encode_products(
        self,
        titles: list[str],
        product_types: list[str],
        images: torch.Tensor | None = None,
        has_image: torch.Tensor | None = None,
        product_ids: list[str] | None = None,
    ) -> StoredProducts:
        """Products that are not in the store (e.g. a request's inline products), encoded exactly as ``embed``
        encodes catalogue rows (:func:`querylife.encode.encode_product_rows`).

        ``titles``: the product text (the store's ``text_fields`` joined, as ``embed`` did); ``images``: uint8
        (n, 3, S, S) with S = :func:`querylife.encode.image_size_of` (None: no images); ``has_image``: (n,) bool.
        """
        from .encode import encode_product_rows, image_size_of, index_vectors_of

        n = len(titles)
        if len(product_types) != n:
            raise ValueError(f"{n} titles but {len(product_types)} product types")
        if images is None:
            size = image_size_of(self.model)
            images = torch.zeros((1, 3, size, size), dtype=torch.uint8).expand(n, 3, size, size)
            has_image = torch.zeros(n, dtype=torch.bool)
        elif has_image is None:
            has_image = torch.ones(n, dtype=torch.bool)
        vec = encode_product_rows(self.model, list(titles), list(product_types), has_image.bool(),
                                  lambda a, b: images[a:b], batch_size=max(1, n))
        return StoredProducts(
            product_ids=list(product_ids) if product_ids is not None else [f"inline-{i}" for i in range(n)],
            titles=list(titles), product_types=list(product_types), t=vec.t, v=vec.v,
            has_image=vec.has_image.bool(), type_ids=vec.type_ids, index_vectors=index_vectors_of(self.model, vec),
        )

    def relevance(self, query: str | torch.Tensor, rows: Sequence[int] | np.ndarray) -> Relevance:
        """Fused scores and image weights of ``query`` (text, or its (D,) vector) against stored ``rows``."""
        q = self.encode_queries([query])[0] if isinstance(query, str) else query
        return self.score_vectors(q, self.products, np.asarray(rows, dtype=np.int64))

    def relevance_ids(self, query: str | torch.Tensor, product_ids: Sequence[str]) -> Relevance:
        """:meth:`relevance` by product id (KeyError naming the first id not in the store)."""
        return self.relevance(query, self.products.rows(product_ids))

    def search(self, query: str | torch.Tensor, k: int = 10, candidates: int | None = None) -> list[Hit]:
        """Top ``k`` products for ``query``: ANN top ``candidates`` (default max(10 k, 100)) re-scored with the
        query-aware gate; every product is scored when there is no index."""
        if k <= 0:
            raise ValueError(f"k must be positive, got {k}")
        q = self.encode_queries([query])[0] if isinstance(query, str) else query  # (D,)
        n = len(self.products)
        if n == 0:
            return []
        if self.index is not None:
            m = min(n, max(k, candidates if candidates is not None else default_candidates(k)))
            ann_scores, ann_rows = self.index.search(q.reshape(1, -1).numpy().astype(np.float32), m)
            keep = ann_rows[0] >= 0
            rows, retrieval = ann_rows[0][keep].astype(np.int64), ann_scores[0][keep]
            rel = self.score_vectors(q, self.products, rows)
        else:
            parts = [self.score_vectors(q, self.products, np.arange(s, min(s + self.chunk_size, n)))
                     for s in range(0, n, self.chunk_size)]
            rel = Relevance(np.concatenate([p.rows for p in parts]), np.concatenate([p.scores for p in parts]),
                            np.concatenate([p.image_weight for p in parts]))
            retrieval = np.full(len(rel.rows), np.nan, dtype=np.float32)
        top = np.argsort(-rel.scores, kind="stable")[:k]
        p = self.products
        return [
            Hit(rank=i + 1, row=int(rel.rows[j]), product_id=p.product_ids[rel.rows[j]], title=p.titles[rel.rows[j]],
                product_type=p.product_types[rel.rows[j]], score=float(rel.scores[j]),
                image_weight=float(rel.image_weight[j]), retrieval_score=float(retrieval[j]))
            for i, j in enumerate(top)
        ]
