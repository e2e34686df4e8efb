"""Contrastive losses with negative masks, from a batch's embeddings.

:func:`alignment_loss` is the training loss: it takes the batch's unit vectors (:class:`Embeddings`: queries,
titles, images, product types, has-image) and its masks (:class:`BatchMasks`), builds the similarity matrices of the
enabled terms itself (:func:`term_similarities`, the fused one through the model's ``Fusion``) and sums the terms
(:func:`similarity_loss`). Taking embeddings rather than similarities is what lets the products of several
processes join the batch in one place (:func:`gather_features`, the open_clip recipe).

The term losses take a similarity matrix ``sim`` (Bq, Bp) whose diagonal holds the positive pairs (row i is query i,
column i its labelled product) and an optional boolean ``ignore`` mask (Bq, Bp): ``True`` marks an off-diagonal
entry that must not act as a negative (the same product listed twice, a known duplicate, a GenFilt-flagged false
negative). A masked entry has no effect at all on the loss or on its gradients; the diagonal is never masked.

An optional ``extra_positive`` mask (Bq, Bp) turns off-diagonal entries into additional positives instead
(GenFilt's "treat flagged negatives as positives" option): the row's loss then averages over all its positives,
as in supervised contrastive learning (Khosla et al. 2020, the L_out form). An entry that is both ignored and an
extra positive is ignored.
"""

from __future__ import annotations

from dataclasses import dataclass, field, fields, replace
from typing import TYPE_CHECKING

import torch
import torch.nn.functional as F
from pydantic import BaseModel, ConfigDict

from .compat import removed_options_validator

if TYPE_CHECKING:
    from .fusion import Fusion

#: The alignment terms, in the order they are computed and summed.
TERMS: tuple[str, ...] = ("query_fused", "query_title", "query_image", "title_image")


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
    """Total loss and its parts: ``parts`` maps each computed term (unweighted) and "total" to a detached float,
    for logging."""

    total: torch.Tensor
    parts: dict[str, float] = field(default_factory=dict)


@dataclass
class Embeddings:
    """What the loss compares: a batch's unit vectors and its products' types.

    ``q`` (Bq, D) queries (row i's positive is product column i); ``t``, ``v`` (Bp, D) titles and images, Bp >= Bq
    (columns past Bq are extra negatives); ``v`` is zero where a product has no image; ``type_ids`` (Bp,) long;
    ``has_image`` (Bp,) bool.

    Example::

        emb = model.embed(type_ids=..., has_image=..., query_features=..., title_features=..., images=...)
        emb.q.shape  # (B, D)
    """

    q: torch.Tensor
    t: torch.Tensor
    v: torch.Tensor
    type_ids: torch.Tensor
    has_image: torch.Tensor


@dataclass
class BatchMasks:
    """Which cells of a batch's score matrices are not negatives.

    ``ignore`` (Bq, Bp) bool: cells left out of the query terms (the same product, labelled positives, judged false
    negatives); ``product_ignore`` (Bp, Bp) bool: cells left out of the title-image term (the same product twice);
    ``extra_positive`` (Bq, Bp) bool or None: cells that count as positives of their row. The diagonal is never
    masked. Example: ``BatchMasks(ignore=same_product, product_ignore=same_rows)``.
    """

    ignore: torch.Tensor | None = None
    product_ignore: torch.Tensor | None = None
    extra_positive: torch.Tensor | None = None

    def to(self, device: torch.device | str) -> BatchMasks:
        return replace(self, **{f.name: _to(getattr(self, f.name), device) for f in fields(self)})


def _to(x: torch.Tensor | None, device) -> torch.Tensor | None:
    return None if x is None else x.to(device)


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


def similarity_loss(
    sims: dict[str, torch.Tensor],
    config: LossConfig,
    logit_scale: torch.Tensor,
    logit_bias: torch.Tensor | None = None,
    ignore: torch.Tensor | None = None,
    product_ignore: torch.Tensor | None = None,
    extra_positive: torch.Tensor | None = None,
) -> LossOutput:
    """Weighted sum of the enabled terms, from precomputed similarity matrices (:func:`alignment_loss` builds them).

    ``sims`` maps term name ("query_fused", "query_title", "query_image", "title_image") to its similarity matrix:
    (Bq, Bp) for the query terms, (Bp, Bp) for title-image; terms with weight 0 or absent are skipped. ``ignore``
    (Bq, Bp) masks the query terms; ``product_ignore`` (Bp, Bp) masks title-image (e.g. the same product twice);
    ``extra_positive`` (Bq, Bp) adds positives to the query terms.
    """
    total = torch.zeros((), device=logit_scale.device)
    parts: dict[str, float] = {}
    for name in TERMS:
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


def term_similarities(emb: Embeddings, config: LossConfig, fusion: Fusion) -> dict[str, torch.Tensor]:
    """The similarity matrices of the enabled terms: query-fused (Bq, Bp) through ``fusion``, query-title and
    query-image (Bq, Bp), title-image (Bp, Bp). Terms with weight 0 are not computed."""
    sims: dict[str, torch.Tensor] = {}
    # Computed in TERMS order, as the model's forward always did: the backward pass then accumulates gradients in
    # the same order and training stays bit for bit reproducible.
    if config.query_fused:
        sims["query_fused"] = fusion.pairwise(emb.q, emb.t, emb.v, emb.type_ids, emb.has_image).scores  # (Bq, Bp)
    if config.query_title:
        sims["query_title"] = emb.q @ emb.t.T  # (Bq, Bp)
    if config.query_image:
        sims["query_image"] = emb.q @ emb.v.T  # (Bq, Bp)
    if config.title_image:
        sims["title_image"] = emb.t @ emb.v.T  # (Bp, Bp)
    return sims


def alignment_loss(
    emb: Embeddings,
    masks: BatchMasks,
    config: LossConfig,
    fusion: Fusion,
    logit_scale: torch.Tensor,
    logit_bias: torch.Tensor | None = None,
) -> LossOutput:
    """Query-LIFE's training loss on a batch: the weighted enabled terms (query-fused, query-title, query-image,
    title-image) over the similarities built from ``emb``, with ``masks``.

    Example::

        emb = model.embed(**inputs)
        loss = alignment_loss(emb, BatchMasks(ignore=mask, product_ignore=same), cfg.loss, model.fusion,
                              model.logit_scale, model.logit_bias)
        loss.total.backward()
    """
    sims = term_similarities(emb, config, fusion)
    return similarity_loss(
        sims, config, logit_scale, logit_bias, masks.ignore, masks.product_ignore, masks.extra_positive
    )


# ---- several processes ----------------------------------------------------------------------------------------
def _distributed() -> tuple[int, int]:
    """(rank, world size); (0, 1) unless torch.distributed is initialised."""
    import torch.distributed as dist

    if dist.is_available() and dist.is_initialized():
        return dist.get_rank(), dist.get_world_size()
    return 0, 1


class _AllGatherRows(torch.autograd.Function):
    """All-gather along dim 0 whose backward sums every rank's gradient and returns this rank's slice.

    ``torch.distributed.nn.all_gather`` does this too but is deprecated (its replacement is private); gloo has no
    reduce-scatter, so the backward is an all-reduce of the (world * B, D) gradient, then a slice.
    """

    @staticmethod
    def forward(ctx, x: torch.Tensor) -> torch.Tensor:
        import torch.distributed as dist

        ctx.rank, ctx.rows = dist.get_rank(), x.shape[0]
        parts = [torch.empty_like(x) for _ in range(dist.get_world_size())]
        dist.all_gather(parts, x.contiguous())
        return torch.cat(parts, dim=0)  # (world * B, ...)

    @staticmethod
    def backward(ctx, grad: torch.Tensor) -> torch.Tensor:
        import torch.distributed as dist

        grad = grad.contiguous().clone()
        dist.all_reduce(grad)  # every rank's loss contributes to the gradient of every rank's rows
        return grad[ctx.rank * ctx.rows : (ctx.rank + 1) * ctx.rows]


def all_gather_rows(x: torch.Tensor, *, with_grad: bool = True) -> torch.Tensor:
    """Every rank's ``x`` (same shape on each rank) concatenated along dim 0 in rank order; ``x`` itself in a single
    process.

    ``with_grad``: gradients flow back to every rank's rows (each rank's rows get the sum over all ranks' losses);
    else only to this rank's own rows (the others are received as constants, this rank's slice is ``x`` itself).
    Tensors without gradients (ids, masks) are gathered as plain data.
    """
    import torch.distributed as dist

    rank, world = _distributed()
    if world == 1:
        return x
    if with_grad and x.requires_grad:
        return _AllGatherRows.apply(x)
    send = x.to(torch.uint8) if x.dtype == torch.bool else x  # gloo has no bool all_gather
    parts = [torch.empty_like(send) for _ in range(world)]
    dist.all_gather(parts, send.detach().contiguous())
    parts = [p.to(x.dtype) for p in parts]
    parts[rank] = x  # keeps this rank's gradient
    return torch.cat(parts, dim=0)


def gather_features(emb: Embeddings, *, local_loss: bool = True, gather_with_grad: bool = True) -> Embeddings:
    """The batch of all ranks, as open_clip's ``gather_features`` builds it for a contrastive loss.

    Product columns (``t``, ``v``, ``type_ids``, ``has_image``) of every rank are concatenated in rank order.
    ``local_loss`` (the default): ``q`` stays this rank's own rows, so each rank computes the loss rows of its own
    queries against all gathered products and memory stays linear in the per-rank batch; else ``q`` is gathered
    too (every rank computes the whole matrix). ``gather_with_grad``: gradients flow to the other ranks' rows
    (needed for the product -> query direction and the title-image term); else only to this rank's rows. Each rank
    must pass tensors of the same shapes. In a single process (torch.distributed not initialised, or one rank)
    ``emb`` is returned as it is.

    Reference: open_clip (Ilharco et al. 2021), ``open_clip/loss.py``. Example::

        emb = gather_features(model.embed(**inputs))  # q (B, D) local; t, v (world * Bp, D)
    """
    if _distributed()[1] == 1:
        return emb
    q = emb.q if local_loss else all_gather_rows(emb.q, with_grad=gather_with_grad)
    return Embeddings(
        q,
        all_gather_rows(emb.t, with_grad=gather_with_grad),
        all_gather_rows(emb.v, with_grad=gather_with_grad),
        all_gather_rows(emb.type_ids, with_grad=False),
        all_gather_rows(emb.has_image, with_grad=False),
    )
