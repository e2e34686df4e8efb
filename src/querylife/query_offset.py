"""Scores that compare across queries: each query's score minus a share of the mean of its ``k`` best scores over a
reference sample of the catalogue (``model.query_offset``), the share picked on the dev split.

A contrastive loss compares a query's products with each other only: shifting all of one query's scores by the
same amount changes neither the loss nor that query's ranking, so nothing in training makes a score of 0.6 mean the
same for two queries. It does not: a query whose words match many titles well, or whose gate puts weight on a
photo that every product of its type shares, sits higher as a whole. Ranking metrics do not see that; a relevance
threshold (``calibrator.json``, the service's decision) and the pooled ROC-AUC do. Subtracting a per-query offset
keeps every query's ranking exactly as it was and puts the queries on one footing; the offset here is how well the
query matches its best products: the mean of its top ``k`` scores over a fixed sample of catalogue products,
fitted once after training (no labels; :func:`fit_query_offset`). A score then reads as "how far below this
query's best matches", 0 being level with them.

But a query's level can also be evidence: on real search logs a query that matches nothing well tends to have
irrelevant candidates, and removing its level throws that away. So only ``strength`` times the offset is
subtracted, and by default the strength is picked on the dev split (the value of a grid from 0, raw scores, to 1,
the full offset, with the best dev ROC-AUC in type). On the generated storefronts, where every query has exact
matches, dev picks 0.7-1; on CrowdFlower's real search data it picks 0 (docs/TUNING.md, "Scores across queries").

Reference: per-query score normalisation of metasearch (max / z-score normalisation, Montague & Aslam, CIKM 2001)
with the query's own best catalogue matches as the reference; the strength is a one-parameter calibration on dev.

Example::

    fit = fit_query_offset(model, data, cache, dev=data.splits["dev"])   # after training (querylife train does it)
    fit.strength, fit.dev_auc                      # e.g. 0.8, {"0.0": 0.79, ..., "0.8": 0.84, "1.0": 0.83}
    model.score(q, t, v, type_ids, has_image, pairwise=True).scores   # now minus strength x each query's offset
    model.query_offset.offsets(q, model.fusion)       # (Bq,) the offsets themselves (strength included)
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Annotated, Literal

import numpy as np
import pandas as pd
import torch
from pydantic import BaseModel, ConfigDict, Field
from torch import nn

__all__ = [
    "STRENGTH_GRID",
    "QueryOffset",
    "QueryOffsetConfig",
    "QueryOffsetFit",
    "choose_strength",
    "fit_query_offset",
    "offset_message",
    "strength_from_curve",
]

# The strengths "dev" chooses from: raw scores (0) to the full offset (1) in tenths; finer steps only fit dev noise.
STRENGTH_GRID: tuple[float, ...] = tuple(i / 10 for i in range(11))


class QueryOffsetConfig(BaseModel):
    """The per-query offset subtracted from every fused score (module docstring)."""

    model_config = ConfigDict(extra="forbid")
    # "top_k": subtract (a share of) the mean of the query's k best reference scores; "none": raw fused scores, no
    # reference kept. Rankings are identical either way; with the default strength "dev" the share is chosen on
    # dev, so top_k costs nothing where raw levels are better (CrowdFlower: dev picks 0 on every fold).
    mode: Literal["none", "top_k"] = "top_k"
    # Dev ROC-AUC in type, the gate over five (storefront, sample) pairs: k = 10 and 50 tie (0.859 / 0.860), 1 is
    # lower (0.851: one product's noise); 10, the first page, is the least tied to catalogue size.
    k: int = Field(default=10, ge=1)
    # Catalogue products kept as the reference (a seeded sample when the catalogue is larger): enough that a
    # query's top 10 are near matches, small enough that the offset costs one (Bq, size) product per call.
    reference_size: int = Field(default=4096, ge=1)
    # The share of the offset subtracted, in [0, 1], or "dev": after training, the STRENGTH_GRID value with the best
    # ROC-AUC in type on the dev split (ties: the smaller; 0 without a dev split with both classes). Dev picked
    # 0.7-1 on the generated storefronts (every query has exact matches) and 0 on all 5 CrowdFlower folds, where
    # the full offset lowered test ROC-AUC from 0.804 to 0.744: the raw level was evidence there.
    strength: Literal["dev"] | Annotated[float, Field(ge=0.0, le=1.0)] = "dev"
    # With "dev": leave raw scores (0) only for a dev ROC-AUC gain above this. Raw is the safe side (real data's
    # level can be evidence) and a small dev split's AUC moves between neighbouring strengths by chance; the fused
    # modes' dev gains on the storefronts were 0.004-0.116 per run. Like model.fusion.fit_min_gain.
    min_gain: float = Field(default=0.002, ge=0.0)


@dataclass
class QueryOffsetFit:
    """What :func:`fit_query_offset` kept: ``products`` in the reference (of ``catalogue`` products), ``k``, the
    ``strength`` subtracted and how it was set (``chosen_by``: "dev", "config" or why dev could not choose), and
    with "dev" the dev ROC-AUC (in type) at each strength of :data:`STRENGTH_GRID` (``dev_auc``, keyed "0.0".."1.0")."""

    products: int
    catalogue: int
    k: int
    strength: float = 1.0
    chosen_by: str = "config"
    dev_auc: dict[str, float] = field(default_factory=dict)


class QueryOffset(nn.Module):
    """The reference products (their title / image vectors, type and photo flag) and the offset they give.

    Until :func:`fit_query_offset` fills it (``ready`` False) every offset is 0, so training (which never fits it)
    and checkpoints without a reference score exactly as before; so does a fitted strength of 0 (``active`` False),
    at no cost.
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
        # () the share of the offset subtracted. "dev" starts at 1, the full offset, which is also what a checkpoint
        # written before the strength existed (no such key) meant by top_k; the dev fit overwrites it.
        fixed = config.strength if config.strength != "dev" else 1.0
        self.register_buffer("strength", torch.tensor(float(fixed)))

    @property
    def ready(self) -> bool:
        """Whether a reference has been fitted."""
        return bool(self.ref_valid.any())

    @property
    def active(self) -> bool:
        """Whether scores move: a reference is fitted and the strength is not 0."""
        return self.ready and float(self.strength) != 0.0

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
        """The offset of each query: q (Bq, D) -> (Bq,), ``strength`` times the mean of its ``k`` best fused scores
        over the reference (zeros before the fit). ``fusion`` is the model's :class:`~querylife.fusion.Fusion`, so
        the reference is scored by the same formula as the products (the query-aware gate included)."""
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
        return self.strength.to(q.dtype) * s.topk(k, dim=1).values.mean(1)  # (Bq,)

    def paired_offsets(self, q: torch.Tensor, fusion) -> torch.Tensor:
        """:meth:`offsets` for row-aligned pairs, whose query rows repeat: q (N, D) -> (N,), each distinct query
        scored against the reference once."""
        if not self.active or q.shape[0] == 0:
            return torch.zeros(q.shape[0], device=q.device, dtype=q.dtype)
        uniq, inverse = torch.unique(q, dim=0, return_inverse=True)  # (U, D), (N,)
        return self.offsets(uniq, fusion)[inverse]  # (N,)


@torch.no_grad()
def fit_query_offset(
    model, data, cache=None, *, batch_size: int = 512, seed: int = 0, dev: pd.DataFrame | None = None
) -> QueryOffsetFit:
    """Encode a reference sample of ``data``'s catalogue (all of it up to ``reference_size`` products, else a
    ``seed``-ed sample) with ``model`` and keep it in ``model.query_offset``; the reference uses no label and no
    query. With ``strength="dev"``, then pick the strength on the labelled ``dev`` pairs (a split of ``data``):
    the :data:`STRENGTH_GRID` value with the best ROC-AUC in type (ROC-AUC where no pair is in type), ties to the
    smaller, if it beats raw scores by more than ``min_gain`` (:func:`choose_strength`); 0 (raw scores) otherwise
    and when ``dev`` is None or lacks relevant or irrelevant pairs. Run it after everything else
    fitted after training (photo-less vectors, dev type weights): the reference is scored with them. Raises
    ``ValueError`` when the model has no offset (``model.query_offset.mode="none"``) or the catalogue is empty."""
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
    cache = cache or FeatureCache()
    vecs = encode_products(model, data, rows, cache, batch_size)  # photo-less rows filled
    m = module.set_reference(vecs.t, vecs.v, vecs.type_ids, vecs.has_image, model.fusion)
    fit = QueryOffsetFit(products=m, catalogue=n, k=min(module.config.k, m), strength=float(module.strength))
    if module.config.strength == "dev":
        fit.strength, fit.chosen_by, fit.dev_auc = _strength_on_dev(model, module, data, dev, cache, batch_size)
        module.strength.fill_(fit.strength)
    return fit


def _strength_on_dev(model, module: QueryOffset, data, dev: pd.DataFrame | None, cache, batch_size: int):
    """(strength, how it was chosen, dev ROC-AUC per strength) for :func:`fit_query_offset`: the dev pairs are
    scored once raw and once with the full offset; every strength in between is a blend of the two."""
    from .scoring import score_pairs

    if dev is None or not len(dev):
        return 0.0, "no dev split: raw scores", {}
    positive = dev["positive"].astype(bool)
    if positive.all() or not positive.any():
        return 0.0, "dev has only one class: raw scores", {}
    module.strength.fill_(0.0)
    raw = score_pairs(model, data, dev, cache, batch_size).score  # (N,)
    module.strength.fill_(1.0)
    offset = raw - score_pairs(model, data, dev, cache, batch_size).score  # (N,) each pair's query offset
    best, curve = choose_strength(dev, raw, offset, min_gain=module.config.min_gain)
    return best, "dev", curve


def choose_strength(
    pairs: pd.DataFrame, raw: np.ndarray, offset: np.ndarray, *, min_gain: float = 0.0
) -> tuple[float, dict[str, float]]:
    """The :data:`STRENGTH_GRID` value whose scores ``raw - strength * offset`` have the best ROC-AUC in type on
    labelled ``pairs`` (``positive``, ``query_type`` and ``product_type`` columns; plain ROC-AUC where no pair is in
    type), ties to the smaller strength, and 0 unless it beats raw scores by more than ``min_gain``; and the AUC at
    every strength (keys "0.0".."1.0").

    Example: ``choose_strength(dev, raw, offset)`` -> ``(0.8, {"0.0": 0.79, ..., "1.0": 0.83})``."""
    from .metrics import classification_metrics

    curve: dict[str, float] = {}
    for s in STRENGTH_GRID:
        m = classification_metrics(pairs.assign(score=raw - s * offset))
        auc = m["roc_auc_in_type"] if not math.isnan(m["roc_auc_in_type"]) else m["roc_auc"]
        curve[f"{s:.1f}"] = float(auc)
    return strength_from_curve(curve, min_gain), curve


def strength_from_curve(curve: dict[str, float], min_gain: float = 0.0) -> float:
    """:func:`choose_strength`'s rule on an AUC curve (keys "0.0".."1.0"): the best strength, ties to the smaller,
    and 0 unless it beats raw scores (key "0.0") by more than ``min_gain``.

    Example: ``strength_from_curve({"0.0": 0.79, ..., "0.8": 0.84, "1.0": 0.83})`` -> ``0.8``."""
    # the best AUC, ties (to 1e-9: sums of the same ranks in another order differ in the last bits) to the smaller
    best = max(STRENGTH_GRID, key=lambda s: (round(curve[f"{s:.1f}"], 9), -s))
    return best if curve[f"{best:.1f}"] - curve["0.0"] > min_gain else 0.0


def offset_message(fit: QueryOffsetFit) -> str:
    """One line saying what :func:`fit_query_offset` did (the trainer prints it)."""
    if fit.strength == 0.0:
        why = f"dev ROC-AUC {_curve(fit)}" if fit.chosen_by == "dev" else fit.chosen_by
        return f"query offsets: strength 0 ({why}): raw scores kept"
    how = f"chosen on dev, ROC-AUC {_curve(fit)}" if fit.chosen_by == "dev" else fit.chosen_by
    return (f"query offsets: strength {fit.strength:.1f} ({how}); each query's score is now relative to its "
            f"{fit.k} best matches among {fit.products} reference products (of {fit.catalogue}); rankings unchanged")


def _curve(fit: QueryOffsetFit) -> str:
    """The dev ROC-AUC at raw scores, the full offset and the chosen strength."""
    c = fit.dev_auc
    return f"{c['0.0']:.4f} raw, {c['1.0']:.4f} full offset, {c[f'{fit.strength:.1f}']:.4f} chosen"
