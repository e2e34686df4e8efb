"""Contrastive losses with negative masks.

All losses take a similarity matrix ``sim`` (Bq, Bp) whose diagonal holds the positive pairs (row i is query i,
column i its labelled product) and an optional boolean ``ignore`` mask (Bq, Bp): ``True`` marks an off-diagonal
entry that must not act as a negative (the same product listed twice, a known duplicate, a GenFilt-flagged false
negative). A masked entry has no effect at all on the loss or on its gradients; the diagonal is never masked.

An optional ``extra_positive`` mask (Bq, Bp) turns off-diagonal entries into additional positives instead
(GenFilt's "treat flagged negatives as positives" option): the row's loss then averages over all its positives,
as in supervised contrastive learning (Khosla et al. 2020, the L_out form). An entry that is both ignored and an
extra positive is ignored.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
from pydantic import BaseModel, ConfigDict

from .compat import removed_options_validator


class LossConfig(BaseModel):
    """Which alignment terms are on, their weights, and the loss family."""

    model_config = ConfigDict(extra="forbid")
    kind: str = "infonce"  # "infonce" (symmetric softmax, CLIP) or "sigmoid" (pairwise, SigLIP)
    query_fused: float = 1.0  # main term: query <-> fused product
    # Auxiliary per-modality terms keep each tower aligned on its own (docs/TUNING.md); 0 turns a term off.
    query_title: float = 0.25
    query_image: float = 0.25
    title_image: float = 0.25
    symmetric: bool = True  # also the product -> query direction (CLIP-style); only for infonce
    # In-batch negatives that the data itself calls positives; group_id only where it marks true duplicates.
    mask_same_product: bool = True
    mask_labelled_positives: bool = True
    mask_same_group: bool = False
    # Options removed since earlier versions: dropped at their old default, an error otherwise (querylife.compat).
    _removed = removed_options_validator("loss")

    def model_post_init(self, __context: object) -> None:
        if self.kind not in ("infonce", "sigmoid"):
            raise ValueError(f'loss.kind must be "infonce" or "sigmoid", got {self.kind!r}')
        weights = (self.query_fused, self.query_title, self.query_image, self.title_image)
        if min(weights) < 0:
            raise ValueError("loss term weights must be >= 0")


@dataclass
class LossOutput:
    """Total loss and its weighted parts (``parts`` values are detached, for logging)."""

    total: torch.Tensor
    parts: dict[str, float] = field(default_factory=dict)


def _masked(sim: torch.Tensor, ignore: torch.Tensor | None) -> torch.Tensor:
    if ignore is None:
        return sim
    eye = torch.eye(sim.shape[0], sim.shape[1], dtype=torch.bool, device=sim.device)
    return sim.masked_fill(ignore & ~eye, float("-inf"))


def _multi_positive_ce(logits: torch.Tensor, positive: torch.Tensor) -> torch.Tensor:
    # Mean over rows of the mean -log softmax over each row's positives (every row has its diagonal positive).
    log_prob = logits - torch.logsumexp(logits, dim=1, keepdim=True)  # (Bq, Bp)
    log_prob = log_prob.masked_fill(~positive, 0.0)  # also clears -inf - (-inf) of ignored cells
    return -(log_prob.sum(1) / positive.sum(1)).mean()


def info_nce(
    sim: torch.Tensor,
    logit_scale: torch.Tensor,
    ignore: torch.Tensor | None = None,
    *,
    symmetric: bool = True,
    extra_positive: torch.Tensor | None = None,
) -> torch.Tensor:
    """InfoNCE (CLIP's symmetric cross-entropy) over a batch with positives on the diagonal.

    Reference: Oord et al. 2018 (CPC); Radford et al. 2021 (CLIP). Inputs: ``sim`` (Bq, Bp) cosine similarities
    with Bp >= Bq (columns past Bq are extra negatives, e.g. labelled hard negatives), ``logit_scale`` scalar
    (1 / temperature), ``ignore`` (Bq, Bp) bool, ``extra_positive`` (Bq, Bp) bool (off-diagonal cells that count as
    positives too). The product -> query direction uses the first Bq columns. Returns a scalar.

    Example::

        loss = info_nce(q @ p.T, torch.tensor(20.0), ignore=same_product)
    """
    n_q, n_p = sim.shape
    if n_p < n_q:
        raise ValueError(f"info_nce expects (Bq, Bp) similarities with Bp >= Bq, got {tuple(sim.shape)}")
    logits = _masked(sim * logit_scale, ignore)  # (Bq, Bp)
    target = torch.arange(n_q, device=sim.device)
    if extra_positive is None or not bool(extra_positive.any()):
        loss = F.cross_entropy(logits, target)
        if symmetric:
            loss = (loss + F.cross_entropy(logits[:, :n_q].T, target)) / 2
        return loss
    eye = torch.eye(n_q, n_p, dtype=torch.bool, device=sim.device)
    positive = eye | (extra_positive & torch.isfinite(logits))  # (Bq, Bp); ignored cells stay out
    loss = _multi_positive_ce(logits, positive)
    if symmetric:
        loss = (loss + _multi_positive_ce(logits[:, :n_q].T, positive[:, :n_q].T)) / 2
    return loss


def sigmoid_pairwise(
    sim: torch.Tensor,
    logit_scale: torch.Tensor,
    logit_bias: torch.Tensor,
    ignore: torch.Tensor | None = None,
    extra_positive: torch.Tensor | None = None,
) -> torch.Tensor:
    """SigLIP's pairwise sigmoid loss: every (i, j) is a binary decision, diagonal positive.

    Reference: Zhai et al. 2023 (SigLIP). Ignored entries are dropped from the sum; ``extra_positive`` entries get
    the positive label. Normalised by the batch size as in the paper. Example: ``sigmoid_pairwise(q @ p.T, scale,
    bias)``.
    """
    n = sim.shape[0]
    positive = torch.eye(n, sim.shape[1], dtype=torch.bool, device=sim.device)
    if extra_positive is not None:
        positive = positive | extra_positive
    labels = 2 * positive.to(sim.dtype) - 1  # +1 positive, -1 elsewhere
    per_pair = -F.logsigmoid(labels * (sim * logit_scale + logit_bias))  # (B, B)
    if ignore is not None:
        eye = torch.eye(n, sim.shape[1], dtype=torch.bool, device=sim.device)
        per_pair = per_pair.masked_fill(ignore & ~eye, 0.0)
    return per_pair.sum() / n


def alignment_loss(
    sims: dict[str, torch.Tensor],
    config: LossConfig,
    logit_scale: torch.Tensor,
    logit_bias: torch.Tensor | None = None,
    ignore: torch.Tensor | None = None,
    product_ignore: torch.Tensor | None = None,
    extra_positive: torch.Tensor | None = None,
) -> LossOutput:
    """Weighted sum of the enabled terms.

    ``sims`` maps term name ("query_fused", "query_title", "query_image", "title_image") to its similarity matrix:
    (Bq, Bp) for the query terms, (Bp, Bp) for title-image; terms with weight 0 or absent are skipped. ``ignore``
    (Bq, Bp) masks the query terms; ``product_ignore`` (Bp, Bp) masks title-image (e.g. the same product twice);
    ``extra_positive`` (Bq, Bp) adds positives to the query terms.
    """
    total = torch.zeros((), device=logit_scale.device)
    parts: dict[str, float] = {}
    for name in ("query_fused", "query_title", "query_image", "title_image"):
        weight = getattr(config, name)
        if weight == 0 or name not in sims:
            continue
        sim = sims[name]
        mask = product_ignore if name == "title_image" else ignore
        extra = None if name == "title_image" else extra_positive
        if config.kind == "infonce":
            term = info_nce(sim, logit_scale, mask, symmetric=config.symmetric, extra_positive=extra)
        else:
            if logit_bias is None:
                raise ValueError("the sigmoid loss needs a logit_bias")
            term = sigmoid_pairwise(sim, logit_scale, logit_bias, mask, extra)
        total = total + weight * term
        parts[name] = float(term.detach())
    parts["total"] = float(total.detach())
    return LossOutput(total, parts)
