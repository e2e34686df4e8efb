"""Fusion of a product's title vector ``t`` and image vector ``v`` into one product representation.

Every mode is a convex combination ``p = (1 - w) * t + w * v`` with an *image weight* ``w`` in [0, 1], except
``concat`` (an MLP over ``[t; v]``). The image weight is returned as data (``FusionOutput.image_weight``) so that
reports can show where each product type puts its trust.

=================  ===========================================  =====================================
mode               image weight w                                query-aware / indexable
=================  ===========================================  =====================================
``title``          0                                            no / yes
``image``          1 (0 when the product has no image)          no / yes
``mean``           0.5                                          no / yes
``concat``         n/a: ``p = MLP([t; v; has_image])``          no / yes
``type_gate``      sigmoid(gate(type))                          no / yes
``query_type_gate`` sigmoid(gate(type) + MLP(q, type))             yes / its type-only part is indexable
``dev_type_gate``  one weight per type, chosen on the dev split    no / yes
=================  ===========================================  =====================================

``gate(type)`` is one learned scalar per product type. ``dev_type_gate`` trains as ``mean`` (its per-type weights
get no gradient) and then picks each type's weight on the dev split (:mod:`querylife.gate_fit`): the contrastive
loss's in-batch negatives are mostly of other types, where any photo helps, so a gradient-trained gate keeps image
weight on types whose photo says nothing within the type; dev NDCG@10 ranks within the query's candidates.

A product without an image gets ``w = 0``: the gate falls back to the title, never to a zero vector; after
training, ``missing_image="type_mean"`` (the default) gives it its type's mean photo vector instead
(:meth:`Fusion.fill_missing`, :mod:`querylife.missing_image`). The
score is the cosine of ``q`` and the fused vector ``p`` (``FusionConfig.normalize``; off: ``(1 - w) q.t + w q.v``).

Because ``w`` depends on the query in ``query_type_gate``, a batch of ``Bq`` queries and ``Bp`` products has
``Bq x Bp`` fused vectors. They are never materialised: with unit ``q, t, v``
``q . p_ij = (1 - w_ij) q.t_j + w_ij q.v_j`` and ``|p_ij|^2 = (1 - w)^2 + w^2 + 2 w (1 - w) t_j.v_j``, so the
score matrix costs two matrix products plus element-wise work. The same path serves training and serving.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import torch
import torch.nn.functional as F
from pydantic import BaseModel, ConfigDict, Field
from torch import nn

from .compat import removed_options_validator

FusionMode = Literal["title", "image", "mean", "concat", "type_gate", "query_type_gate", "dev_type_gate"]
FUSION_MODES: tuple[str, ...] = ("title", "image", "mean", "concat", "type_gate", "query_type_gate", "dev_type_gate")
#: Modes whose image weight is one number per product type (the ANN index vectors are then exact).
TYPE_GATED_MODES: tuple[str, ...] = ("type_gate", "query_type_gate", "dev_type_gate")
#: The image weight of the modes where it is a constant (before the has-image mask).
CONSTANT_IMAGE_WEIGHT: dict[str, float] = {"title": 0.0, "image": 1.0, "mean": 0.5}


class FusionConfig(BaseModel):
    """How title and image vectors are combined."""

    model_config = ConfigDict(extra="forbid")
    mode: FusionMode = "query_type_gate"  # the modes measured side by side: docs/TUNING.md
    hidden_dim: int = 64  # gate / concat MLP width: the gate is a small decision, it needs little capacity
    type_embed_dim: int = 16  # the query-aware gate's product-type embedding
    init_image_weight: float = 0.5  # sigmoid of the initial gate logit; 0.5 starts every gated mode as "mean"
    # True: the score is cos(q, (1 - w) t + w v). False: the blend of the two cosines (1 - w) q.t + w q.v, with no
    # division by |(1 - w) t + w v|, which depends on t.v and so moves each product's score by how well its own
    # title and photo agree. False ranks about as well with a pretrained vision tower and its scores compare
    # better across queries (higher ROC-AUC); with the small CNN it ranks worse (docs/TUNING.md). Not for concat.
    # Checkpoints written before the option existed have no such key and scored with the cosine: a new default
    # would have to keep them at True.
    normalize: bool = True
    # A product without a photo: "title" scores it on its title alone (w = 0); "type_mean" adds a typical photo of
    # its type to its title: the mean photo vector of the type's training products (fitted after training,
    # querylife.missing_image), with the gate's weight. The title-only score ranked photo-less products above the
    # photo products of visual types; type_mean raised dev NDCG@10 on both storefronts with missing photos
    # (docs/TUNING.md). Modes without a title part (image) or without photos (title) keep "title". Checkpoints
    # without the key, written before the option, load as "title".
    missing_image: Literal["title", "type_mean"] = "type_mean"
    # dev_type_gate only: the image weights tried per product type on the dev split after training (querylife.gate_fit).
    fit_grid: list[float] = Field(default_factory=lambda: [i / 10 for i in range(11)])
    # A type's weight leaves its current value only for a dev NDCG@10 gain above this: ~60 dev queries, where one
    # query moving by 0.06 is worth 0.001, so smaller "gains" are one query's noise (docs/TUNING.md).
    fit_min_gain: float = Field(default=0.001, ge=0.0)
    fit_passes: int = Field(default=2, ge=1)  # coordinate-ascent sweeps over the types (a second rarely moves any)
    # Options removed since earlier versions: dropped at their old default, an error otherwise (querylife.compat).
    _removed = removed_options_validator("model.fusion")


@dataclass
class FusionOutput:
    """Scores and gate weights for (query, product) pairs.

    ``scores``: cosine-like relevance, shape (Bq, Bp) for ``pairwise`` or (N,) for ``paired``.
    ``image_weight``: the weight w on the image vector, same shape (None for ``concat``).
    """

    scores: torch.Tensor
    image_weight: torch.Tensor | None


class Fusion(nn.Module):
    """Fusion module; see the module docstring for the modes.

    Example::

        fusion = Fusion(FusionConfig(mode="query_type_gate"), n_types=5, dim=256)
        out = fusion.pairwise(q, t, v, type_ids, has_image)   # out.scores (Bq, Bp), out.image_weight (Bq, Bp)
    """

    def __init__(self, config: FusionConfig, n_types: int, dim: int):
        super().__init__()
        self.config = config
        self.mode = config.mode
        self.dim = dim
        self.n_types = n_types
        init = torch.logit(torch.tensor(config.init_image_weight).clamp(1e-4, 1 - 1e-4)).item()
        if self.mode in TYPE_GATED_MODES:
            # Few scalars that the optimiser's "gate" group moves faster (docs/TUNING.md, train.gate_lr_multiplier).
            # dev_type_gate: no gradient at all (training is exactly mean fusion's); querylife.gate_fit sets them
            # from the dev split after training.
            trained = self.mode != "dev_type_gate"
            self.type_logit = nn.Parameter(torch.full((n_types,), init), requires_grad=trained)
        self.query_aware = self.mode == "query_type_gate"
        if self.query_aware:
            h = config.hidden_dim
            self.gate_type_embed = nn.Embedding(n_types, config.type_embed_dim)
            self.gate_q = nn.Linear(dim, h)
            self.gate_p = nn.Linear(config.type_embed_dim, h, bias=False)
            self.gate_out = nn.Linear(h, 1)
            # Zero output layer: the query-aware term starts at 0, so training starts from the type gate.
            nn.init.zeros_(self.gate_out.weight)
            nn.init.zeros_(self.gate_out.bias)
        if config.missing_image == "type_mean" and self.mode not in ("title", "image"):
            # Filled after training (querylife.missing_image); until then every product without a photo keeps w = 0.
            self.register_buffer("missing_vector", torch.zeros(n_types, dim))  # (T, D) unit rows where ready
            self.register_buffer("missing_ready", torch.zeros(n_types, dtype=torch.bool))  # (T,)
        if self.mode == "concat":
            self.concat_mlp = nn.Sequential(
                nn.Linear(2 * dim + 1, config.hidden_dim * 4), nn.GELU(), nn.Linear(config.hidden_dim * 4, dim)
            )

    # ---- products without a photo ------------------------------------------------------------------------
    def fill_missing(
        self, v: torch.Tensor, type_ids: torch.Tensor, has_image: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Image vectors (N, D) and has-image flags (N,) with each photo-less product of a fitted type given its
        type's mean photo vector (and flagged as having one), under ``missing_image="type_mean"``; unchanged
        otherwise. Product encoding calls it (:func:`querylife.encode.encode_product_rows`), so stored vectors,
        the index and every scoring path see the filled vectors."""
        if not hasattr(self, "missing_ready"):
            return v, has_image
        ready = self.missing_ready.to(type_ids.device)[type_ids]  # (N,)
        fill = ready & ~has_image.bool()  # (N,)
        if not bool(fill.any()):
            return v, has_image
        filled = self.missing_vector.to(v.device, v.dtype)[type_ids.to(v.device)]  # (N, D)
        return torch.where(fill.to(v.device).unsqueeze(-1), filled, v), has_image.bool() | fill

    # ---- gate -------------------------------------------------------------------------------------------
    def type_gate_logit(self, type_ids: torch.Tensor) -> torch.Tensor:
        """Query-independent gate logit per product, (B,)."""
        return self.type_logit[type_ids]

    def _query_logit(self, q: torch.Tensor, types: torch.Tensor) -> torch.Tensor:
        """The query-aware part of the gate logit of each query for each of ``types``: q (Bq, D), types (T,) ->
        (Bq, T)."""
        ph = self.gate_p(self.gate_type_embed(types))  # (T, H)
        h = torch.relu(self.gate_q(q).unsqueeze(1) + ph.unsqueeze(0))  # (Bq, T, H)
        return self.gate_out(h).squeeze(-1)  # (Bq, T)

    def type_weights(self, q: torch.Tensor) -> torch.Tensor:
        """The image weight of every product type for each query, before the has-image mask: q (Bq, D) ->
        (Bq, n_types). In every mode but ``concat`` a product's weight depends on (query, type) alone, so one query
        against many stored products needs the gate once per type (:meth:`one_query`)."""
        n_q = q.shape[0]
        if self.mode == "concat":
            raise ValueError("the concat fusion has no image weight")
        if self.mode in CONSTANT_IMAGE_WEIGHT:
            const = CONSTANT_IMAGE_WEIGHT[self.mode]
            return torch.full((n_q, self.n_types), const, device=q.device, dtype=q.dtype)  # (Bq, T)
        logit = self.type_logit.unsqueeze(0)  # (1, T)
        if self.query_aware:
            all_types = torch.arange(self.n_types, device=q.device)
            logit = logit + self._query_logit(q, all_types)  # (Bq, T)
        return torch.sigmoid(logit).expand(n_q, -1)  # (Bq, T)

    def image_weight(self, q, t, v, type_ids, has_image, *, pairwise: bool) -> torch.Tensor:
        """Image weight ``w``: (Bq, Bp) when pairwise, else (N,). Zero for products without an image."""
        mode = self.mode
        n_q = q.shape[0]
        if mode in CONSTANT_IMAGE_WEIGHT:
            const = CONSTANT_IMAGE_WEIGHT[mode]
            w = torch.full((t.shape[0],), const, device=t.device, dtype=t.dtype)  # (Bp,)
            w = w.unsqueeze(0).expand(n_q, -1) if pairwise else w
        else:
            logit = self.type_gate_logit(type_ids)  # (Bp,)
            if pairwise:
                logit = logit.unsqueeze(0)  # (1, Bp)
            if self.query_aware:
                if pairwise:
                    # The product side of the gate depends on the type alone, so the network runs once per (query,
                    # type) and is gathered to the products: (Bq, T, H) instead of (Bq, Bp, H) activations, which
                    # dominated a large contrastive batch's memory (benchmarks/results/grad_cache_memory.md).
                    types, col = torch.unique(type_ids, return_inverse=True)  # (T,), (Bp,)
                    logit = logit + self._query_logit(q, types)[:, col]  # (Bq, Bp)
                else:
                    ph = self.gate_p(self.gate_type_embed(type_ids))  # (N, H)
                    logit = logit + self.gate_out(torch.relu(self.gate_q(q) + ph)).squeeze(-1)  # (N,)
            w = torch.sigmoid(logit)
            if pairwise and w.shape[0] != n_q:
                w = w.expand(n_q, -1)
        has = has_image.to(w.dtype)
        return w * (has.unsqueeze(0) if pairwise else has)

    # ---- scores -----------------------------------------------------------------------------------------
    def _concat_vectors(self, t, v, has_image) -> torch.Tensor:
        x = torch.cat([t, v * has_image.unsqueeze(-1).to(v.dtype), has_image.unsqueeze(-1).to(t.dtype)], -1)
        return F.normalize(self.concat_mlp(x) + t, dim=-1)  # residual on t: a text-only product stays near t

    def combine(self, st, sv, stv, w) -> torch.Tensor:
        """The fused score ``cos(q, (1 - w) t + w v)`` (``(1 - w) q.t + w q.v`` when ``normalize`` is off) from its
        parts, any matching shapes: cosines q.t (``st``), q.v (``sv``), t.v (``stv``) and the image weight ``w`` (0
        where a product has no image). Lets an analysis re-score stored parts with other weights exactly as the
        model scores."""
        score = (1 - w) * st + w * sv
        if not self.config.normalize:
            return score
        norm2 = (1 - w) ** 2 + w**2 + 2 * w * (1 - w) * stv  # |(1 - w) t + w v|^2 for unit t, v
        return score / norm2.clamp(min=1e-6).sqrt()

    def pairwise(self, q, t, v, type_ids, has_image) -> FusionOutput:
        """All queries against all products. q (Bq, D), t/v (Bp, D) unit vectors -> scores (Bq, Bp)."""
        if self.mode == "concat":
            return FusionOutput(q @ self._concat_vectors(t, v, has_image).T, None)
        w = self.image_weight(q, t, v, type_ids, has_image, pairwise=True)  # (Bq, Bp)
        st, sv = q @ t.T, q @ v.T  # (Bq, Bp)
        stv = (t * v).sum(-1).unsqueeze(0)  # (1, Bp)
        return FusionOutput(self.combine(st, sv, stv, w), w)

    def paired(self, q, t, v, type_ids, has_image) -> FusionOutput:
        """Row i of q against row i of t/v. All (N, D) -> scores (N,)."""
        if self.mode == "concat":
            return FusionOutput((q * self._concat_vectors(t, v, has_image)).sum(-1), None)
        w = self.image_weight(q, t, v, type_ids, has_image, pairwise=False)  # (N,)
        st, sv, stv = (q * t).sum(-1), (q * v).sum(-1), (t * v).sum(-1)  # (N,)
        return FusionOutput(self.combine(st, sv, stv, w), w)

    def from_parts(self, q, st, sv, stv, type_ids, has_image) -> FusionOutput:
        """Queries against n products given by their parts: q (Bq, D), the cosines ``st`` = q.t and ``sv`` = q.v
        (Bq, n), ``stv`` = t.v (n,), type ids and has-image flags (n,) -> scores (Bq, n). The same gate and
        :meth:`combine` as :meth:`pairwise`, equal to it to float32 rounding, but the gate runs once per (query,
        type) and nothing (n, D)-sized is computed here. Not for ``concat``."""
        w = self.type_weights(q).index_select(1, type_ids) * has_image.to(st.dtype)  # (Bq, n)
        return FusionOutput(self.combine(st, sv, stv, w), w)

    def one_query(self, q, st, sv, stv, type_ids, has_image) -> FusionOutput:
        """:meth:`from_parts` for one query (what serving keeps per stored product): q (D,), ``st`` / ``sv`` (n,)
        -> scores (n,)."""
        out = self.from_parts(q.unsqueeze(0), st.unsqueeze(0), sv.unsqueeze(0), stv, type_ids, has_image)
        return FusionOutput(out.scores[0], out.image_weight[0])

    def index_vectors(self, t, v, type_ids, has_image) -> torch.Tensor:
        """Query-independent product vectors (B, D) for an inner-product (ANN) index, searched with the query
        vectors ``q`` as they are: unit length, or the blend ``(1 - w) t + w v`` itself when ``normalize`` is off.
        For the query-aware gate this is its type-only part."""
        if self.mode == "concat":
            return self._concat_vectors(t, v, has_image)
        if self.mode in CONSTANT_IMAGE_WEIGHT:
            w = self.image_weight(t, t, v, type_ids, has_image, pairwise=False)
        else:
            w = torch.sigmoid(self.type_gate_logit(type_ids)) * has_image.to(t.dtype)
        fused = (1 - w).unsqueeze(-1) * t + w.unsqueeze(-1) * v  # (B, D)
        return F.normalize(fused, dim=-1) if self.config.normalize else fused

    def gate_parameters(self) -> list[nn.Parameter]:
        """The per-type gate scalars, which the optimiser trains with a higher learning rate."""
        return [self.type_logit] if hasattr(self, "type_logit") else []

    def gate_network_parameters(self) -> list[nn.Parameter]:
        """The query-aware gate network (held at its init with the gate scalars; no weight decay)."""
        mods = [getattr(self, n, None) for n in ("gate_type_embed", "gate_q", "gate_p", "gate_out")]
        return [p for m in mods if m is not None for p in m.parameters()]
