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
``query_type_gate`` sigmoid(gate(type) + MLP(q, type[, t, v]))    yes / its type-only part is indexable
=================  ===========================================  =====================================

A product without an image always gets ``w = 0``: the gate falls back to the title, never to a zero vector.

With ``image_score_offset`` gated modes add ``w * d`` to the score, ``d`` one learned scalar: query-title and
query-image cosines sit at different levels, and a gate that weighs product types differently shifts whole types
against each other (off by default; see FusionConfig).

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
from pydantic import BaseModel, ConfigDict
from torch import nn

FusionMode = Literal["title", "image", "mean", "concat", "type_gate", "query_type_gate"]
FUSION_MODES: tuple[str, ...] = ("title", "image", "mean", "concat", "type_gate", "query_type_gate")


class FusionConfig(BaseModel):
    """How title and image vectors are combined."""

    model_config = ConfigDict(extra="forbid")
    mode: FusionMode = "query_type_gate"
    # What the query-aware gate sees besides the product type. Adding the modality vectors lets it notice, e.g.,
    # an uninformative photo, at the cost of more parameters.
    gate_inputs: Literal["type", "type_query", "type_query_modalities"] = "type_query"
    # "free": one learned scalar per product type (fast to learn, exactly inspectable); "predicted": an MLP
    # from a learned type embedding (shares strength across types).
    type_gate: Literal["free", "predicted"] = "free"
    renormalize: bool = True  # cosine of the fused vector (True) or the raw convex combination's dot product
    hidden_dim: int = 64  # gate / concat MLP width: the gate is a small decision, it needs little capacity
    type_embed_dim: int = 16
    init_image_weight: float = 0.5  # sigmoid of the initial gate logit; 0.5 starts every gated mode as "mean"
    # A learned offset d on the image side of gated modes: score = fused + w * d. Title and image cosines live on
    # different levels (query-title cosines run higher), so a gate that weighs them differently per product type
    # shifts whole types up or down against each other, which costs pooled ROC-AUC. Off by default: on the demo
    # storefront's dev split it gained only +0.002 ROC-AUC (+0.02 on a variant with one informative modality per
    # type), and over 5 seeds on test it cost the query+type gate 0.007 (benchmarks/results/dev_variants.md,
    # demo_seeds_offset.md). No effect on fixed-weight modes.
    image_score_offset: bool = False


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
        init = torch.logit(torch.tensor(config.init_image_weight).clamp(1e-4, 1 - 1e-4)).item()
        gated = self.mode in ("type_gate", "query_type_gate")
        if gated:
            if config.type_gate == "free":
                # Marked "gate" so the optimiser can give these few scalars a higher learning rate (DESIGN §5:
                # at the base rate a per-type scalar stays at its init for hundreds of steps).
                self.type_logit = nn.Parameter(torch.full((n_types,), init))
            else:
                self.type_embed = nn.Embedding(n_types, config.type_embed_dim)
                self.type_mlp = nn.Sequential(
                    nn.Linear(config.type_embed_dim, config.hidden_dim), nn.ReLU(), nn.Linear(config.hidden_dim, 1)
                )
                nn.init.zeros_(self.type_mlp[-1].weight)
                nn.init.constant_(self.type_mlp[-1].bias, init)
        self.image_offset = nn.Parameter(torch.zeros(())) if gated and config.image_score_offset else None
        self.query_aware = self.mode == "query_type_gate" and config.gate_inputs != "type"
        if self.query_aware:
            h = config.hidden_dim
            self.gate_type_embed = nn.Embedding(n_types, config.type_embed_dim)
            self.gate_q = nn.Linear(dim, h)
            p_in = config.type_embed_dim + (2 * dim + 1 if config.gate_inputs == "type_query_modalities" else 0)
            self.gate_p = nn.Linear(p_in, h, bias=False)
            self.gate_out = nn.Linear(h, 1)
            # Zero output layer: the query-aware term starts at 0, so training starts from the type gate.
            nn.init.zeros_(self.gate_out.weight)
            nn.init.zeros_(self.gate_out.bias)
        if self.mode == "concat":
            self.concat_mlp = nn.Sequential(
                nn.Linear(2 * dim + 1, config.hidden_dim * 4), nn.GELU(), nn.Linear(config.hidden_dim * 4, dim)
            )

    # ---- gate -------------------------------------------------------------------------------------------
    def type_gate_logit(self, type_ids: torch.Tensor) -> torch.Tensor:
        """Query-independent gate logit per product, (B,)."""
        if self.config.type_gate == "free":
            return self.type_logit[type_ids]
        return self.type_mlp(self.type_embed(type_ids)).squeeze(-1)

    def _product_gate_input(self, t, v, type_ids, has_image) -> torch.Tensor:
        parts = [self.gate_type_embed(type_ids)]  # (Bp, E)
        if self.config.gate_inputs == "type_query_modalities":
            parts += [t, v, has_image.to(t.dtype).unsqueeze(-1)]
        return torch.cat(parts, dim=-1)

    def image_weight(self, q, t, v, type_ids, has_image, *, pairwise: bool) -> torch.Tensor:
        """Image weight ``w``: (Bq, Bp) when pairwise, else (N,). Zero for products without an image."""
        mode = self.mode
        n_q = q.shape[0]
        if mode in ("title", "image", "mean"):
            const = {"title": 0.0, "image": 1.0, "mean": 0.5}[mode]
            w = torch.full((t.shape[0],), const, device=t.device, dtype=t.dtype)  # (Bp,)
            w = w.unsqueeze(0).expand(n_q, -1) if pairwise else w
        else:
            logit = self.type_gate_logit(type_ids)  # (Bp,)
            if pairwise:
                logit = logit.unsqueeze(0)  # (1, Bp)
            if self.query_aware:
                qh = self.gate_q(q)  # (Bq, H)
                ph = self.gate_p(self._product_gate_input(t, v, type_ids, has_image))  # (Bp, H)
                h = torch.relu(qh.unsqueeze(1) + ph.unsqueeze(0)) if pairwise else torch.relu(qh + ph)
                logit = logit + self.gate_out(h).squeeze(-1)  # (Bq, Bp) or (N,)
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
        """The fused score from its parts, any matching shapes: cosines q.t (``st``), q.v (``sv``), t.v (``stv``)
        and the image weight ``w`` (0 where a product has no image). Lets an analysis re-score stored parts with
        other weights exactly as the model scores."""
        score = (1 - w) * st + w * sv
        if self.config.renormalize:
            norm2 = (1 - w) ** 2 + w**2 + 2 * w * (1 - w) * stv
            score = score / norm2.clamp(min=1e-6).sqrt()
        if self.image_offset is not None:
            score = score + w * self.image_offset
        return score

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

    def index_vectors(self, t, v, type_ids, has_image) -> torch.Tensor:
        """Query-independent product vectors for an inner-product (ANN) index: (B, D), or (B, D + 1) with the
        image score offset as the last coordinate (pair them with :meth:`index_queries`). For the query-aware
        gate this is its type-only part."""
        if self.mode == "concat":
            return self._concat_vectors(t, v, has_image)
        if self.mode in ("title", "image", "mean"):
            w = self.image_weight(t, t, v, type_ids, has_image, pairwise=False)
        else:
            w = torch.sigmoid(self.type_gate_logit(type_ids)) * has_image.to(t.dtype)
        p = F.normalize((1 - w).unsqueeze(-1) * t + w.unsqueeze(-1) * v, dim=-1)  # (B, D)
        if self.image_offset is None:
            return p
        return torch.cat([p, (w * self.image_offset).unsqueeze(-1)], dim=-1)  # (B, D + 1)

    def index_queries(self, q) -> torch.Tensor:
        """Query vectors for the index of :meth:`index_vectors`: (B, D), or (B, D + 1) with a trailing 1."""
        if self.image_offset is None or self.mode == "concat":
            return q
        return torch.cat([q, torch.ones_like(q[:, :1])], dim=-1)

    def gate_parameters(self) -> list[nn.Parameter]:
        """The per-type gate scalars, which the optimiser trains with a higher learning rate."""
        params = [self.type_logit] if hasattr(self, "type_logit") else []
        return params + ([self.image_offset] if self.image_offset is not None else [])

    def gate_network_parameters(self) -> list[nn.Parameter]:
        """The query-aware gate network (and a predicted type gate), which may get its own learning rate."""
        mods = [
            getattr(self, n, None)
            for n in ("gate_type_embed", "gate_q", "gate_p", "gate_out", "type_embed", "type_mlp")
        ]
        return [p for m in mods if m is not None for p in m.parameters()]
