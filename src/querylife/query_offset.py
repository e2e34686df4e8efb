"""Scores that compare across queries: each query's score minus the mean of its ``k`` best scores over a reference
sample of the catalogue (``model.query_offset``).

A contrastive loss compares a query's products with each other only: shifting all of one query's scores by the
same amount changes neither the loss nor that query's ranking, so nothing in training makes a score of 0.6 mean the
same for two queries. It does not: a query whose words match many titles well, or whose gate puts weight on a
photo that every product of its type shares, sits higher as a whole. Ranking metrics do not see that; a relevance
threshold (``calibrator.json``, the service's decision) and the pooled ROC-AUC do. Subtracting a per-query offset
keeps every query's ranking exactly as it was and puts the queries on one footing; the offset here is how well the
query matches its best products: the mean of its top ``k`` scores over a fixed sample of catalogue products,
fitted once after training (no labels; :func:`fit_query_offset`). A score then reads as "how far below this
query's best matches", 0 being level with them.

Reference: per-query score normalisation of metasearch (max / z-score normalisation, Montague & Aslam, CIKM 2001)
with the query's own best catalogue matches as the reference. An option (``mode="top_k"``), off by default: on the
generated storefronts, where every query has exact matches, it raised ROC-AUC for every fusion mode; on real
search data (CrowdFlower) it lowered it, since there a query that matches nothing well has mostly irrelevant
candidates and its low score level said so (docs/TUNING.md, "Scores across queries").

Example::

    fit = fit_query_offset(model, data, cache)        # after training (querylife train does it under top_k)
    model.score(q, t, v, type_ids, has_image, pairwise=True).scores   # now minus each query's offset
    model.query_offset.offsets(q, model.fusion)       # (Bq,) the offsets themselves
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import numpy as np
import torch
from pydantic import BaseModel, ConfigDict, Field
from torch import nn

__all__ = ["QueryOffset", "QueryOffsetConfig", "QueryOffsetFit", "fit_query_offset"]


class QueryOffsetConfig(BaseModel):
    """The per-query offset subtracted from every fused score (module docstring)."""

    model_config = ConfigDict(extra="forbid")
    # "top_k": subtract the mean of the query's k best reference scores; "none": raw fused scores. Rankings are
    # identical either way. On the generated storefronts, where every query has exact matches, top_k raised every
    # fused mode's dev ROC-AUC; on real search data (CrowdFlower) it lowered ROC-AUC a lot: there how well a query
    # matches anything is itself evidence of relevance, and the offset removes it (docs/TUNING.md). Hence "none".
    mode: Literal["none", "top_k"] = "none"
    # Dev ROC-AUC in type, the gate over five (storefront, sample) pairs: k = 10 and 50 tie (0.859 / 0.860), 1 is
    # lower (0.851: one product's noise); 10, the first page, is the least tied to catalogue size.
    k: int = Field(default=10, ge=1)
    # Catalogue products kept as the reference (a seeded sample when the catalogue is larger): enough that a
    # query's top 10 are near matches, small enough that the offset costs one (Bq, size) product per call.
    reference_size: int = Field(default=4096, ge=1)


@dataclass
class QueryOffsetFit:
    """What :func:`fit_query_offset` kept: ``products`` in the reference (of ``catalogue`` products) and ``k``."""

    products: int
    catalogue: int
    k: int


class QueryOffset(nn.Module):
    """The reference products (their title / image vectors, type and photo flag) and the offset they give.

    Until :func:`fit_query_offset` fills it (``ready`` False) every offset is 0, so training (which never fits it)
    and checkpoints without a reference score exactly as before.
    """

    def __init__(self, config: QueryOffsetConfig, dim: int):
        super().__init__()
        self.config = config
        n = config.reference_size
        self.register_buffer("ref_t", torch.zeros(n, dim))  # (K, D) unit title vectors (concat: its product vectors)
        self.register_buffer("ref_v", torch.zeros(n, dim))  # (K, D) image vectors, photo-less ones already filled
        self.register_buffer("ref_stv", torch.zeros(n))  # (K,) t.v, which the fused score's norm needs
        self.register_buffer("ref_type", torch.zeros(n, dtype=torch.long))  # (K,)
        self.register_buffer("ref_has", torch.zeros(n, dtype=torch.bool))  # (K,)
        self.register_buffer("ref_valid", torch.zeros(n, dtype=torch.bool))  # (K,) rows in use (small catalogues)

    @property
    def ready(self) -> bool:
        """Whether a reference has been fitted."""
        return bool(self.ref_valid.any())

    @torch.no_grad()
    def set_reference(self, t: torch.Tensor, v: torch.Tensor, type_ids: torch.Tensor, has_image: torch.Tensor,
                      fusion) -> int:  # fmt: skip
        """Keep encoded products as the reference (the first ``reference_size`` rows): title / image vectors
        (N, D) as the encoder gives them (photo-less ones already filled), type ids and has-image flags (N,).
        :func:`fit_query_offset` calls it; a store's vectors (``StoredProducts``) can be given directly.
        Returns the number of rows kept."""
        m = min(len(t), self.config.reference_size)
        if m == 0:
            raise ValueError("a query offset's reference needs at least one product")
        t, v, type_ids, has_image = t[:m], v[:m], type_ids[:m], has_image[:m].bool()
        dev = self.ref_t.device
        ref = t
        if fusion.mode == "concat":  # the concat product vectors themselves (exact: the score is q . vector)
            fdev = fusion.concat_mlp[0].weight.device
            ref = fusion.index_vectors(t.to(fdev), v.to(fdev), type_ids.to(fdev), has_image.to(fdev))
        for buf in (self.ref_t, self.ref_v, self.ref_stv, self.ref_has, self.ref_type, self.ref_valid):
            buf.zero_()
        self.ref_t[:m] = ref.float().to(dev)
        self.ref_v[:m] = v.float().to(dev)
        self.ref_stv[:m] = (t.float() * v.float()).sum(-1).to(dev)
        self.ref_type[:m] = type_ids.to(dev)
        self.ref_has[:m] = has_image.to(dev)
        self.ref_valid[:m] = True
        return m

    def offsets(self, q: torch.Tensor, fusion) -> torch.Tensor:
        """The offset of each query: q (Bq, D) -> (Bq,), the mean of its ``k`` best fused scores over the reference
        (zeros before the fit). ``fusion`` is the model's :class:`~querylife.fusion.Fusion`, so the reference is
        scored by the same formula as the products (the query-aware gate included)."""
        n = int(self.ref_valid.sum())  # the valid rows come first (set_reference)
        if n == 0:
            return torch.zeros(q.shape[0], device=q.device, dtype=q.dtype)
        t = self.ref_t[:n].to(q.dtype)  # (K', D)
        if fusion.mode == "concat":  # ref_t holds the concat product vectors: the MLP is not rerun per call
            s = q @ t.T  # (Bq, K')
        else:  # the served formula over stored parts (t.v kept): the gate once per (query, type)
            v, stv = self.ref_v[:n].to(q.dtype), self.ref_stv[:n].to(q.dtype)
            s = fusion.from_parts(q, q @ t.T, q @ v.T, stv, self.ref_type[:n], self.ref_has[:n]).scores  # (Bq, K')
        k = min(self.config.k, s.shape[1])
        return s.topk(k, dim=1).values.mean(1)  # (Bq,)

    def paired_offsets(self, q: torch.Tensor, fusion) -> torch.Tensor:
        """:meth:`offsets` for row-aligned pairs, whose query rows repeat: q (N, D) -> (N,), each distinct query
        scored against the reference once."""
        if not self.ready or q.shape[0] == 0:
            return torch.zeros(q.shape[0], device=q.device, dtype=q.dtype)
        uniq, inverse = torch.unique(q, dim=0, return_inverse=True)  # (U, D), (N,)
        return self.offsets(uniq, fusion)[inverse]  # (N,)


@torch.no_grad()
def fit_query_offset(model, data, cache=None, *, batch_size: int = 512, seed: int = 0) -> QueryOffsetFit:
    """Encode a reference sample of ``data``'s catalogue (all of it up to ``reference_size`` products, else a
    ``seed``-ed sample) with ``model`` and keep it in ``model.query_offset``. Uses no label and no query. Run it
    after everything else fitted after training (photo-less vectors, dev type weights): the reference is scored with
    them. Raises ``ValueError`` when the model has no offset (``model.query_offset.mode="none"``) or the catalogue
    is empty."""
    from .scoring import FeatureCache, encode_products  # scoring imports the model, which imports this module

    module: QueryOffset | None = getattr(model, "query_offset", None)
    if module is None:
        raise ValueError('fitting a query offset needs model.query_offset.mode="top_k"')
    n = len(data.catalog)
    if n == 0:
        raise ValueError("fitting a query offset needs catalogue products; the catalogue is empty")
    size = module.config.reference_size
    rows = np.arange(n) if n <= size else np.sort(np.random.default_rng(seed).choice(n, size, replace=False))
    module.ref_valid.zero_()  # a refit starts clean (and scores its own products raw)
    vecs = encode_products(model, data, rows, cache or FeatureCache(), batch_size)  # photo-less rows filled
    m = module.set_reference(vecs.t, vecs.v, vecs.type_ids, vecs.has_image, model.fusion)
    return QueryOffsetFit(products=m, catalogue=n, k=min(module.config.k, m))
