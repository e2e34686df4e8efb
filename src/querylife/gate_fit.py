"""Per-product-type image weights picked on the dev split (fusion mode ``dev_type_gate``).

A gate trained by the contrastive loss sees mostly negatives of *other* product types in a random batch, where any
photo tells the types apart, so it keeps image weight on types whose photo is a generic icon and says nothing
*within* the type (docs/TUNING.md, "Fusion across storefronts"). Ranking is judged within a query's candidates,
so this module measures that directly: with the trained vectors fixed, it re-scores the dev pairs for a grid of
image weights per product type (coordinate ascent over the types, :meth:`Fusion.combine`, the formula serving
uses) and keeps, per type, the weight with the best dev NDCG@10. A type moves off its current weight only for a
gain above ``model.fusion.fit_min_gain``, so a handful of dev queries cannot push it around.

Example::

    fit = fit_type_weights(model, data, data.splits["dev"], cache)
    fit.weights  # {"book": 0.0, "dress": 0.7, ...}; the model's gate now holds them
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np
import pandas as pd
import torch

from .data.prepare import Dataset
from .metrics import per_query_metrics
from .model import QueryLifeModel
from .scoring import FeatureCache, encode_pairs

__all__ = ["PairParts", "TypeWeightFit", "fit_type_weights", "pair_parts", "set_type_weights"]


@dataclass(frozen=True)
class PairParts:
    """The parts of the fused score of each (query, product) row of a pairs table, all (N,): cosines q.t (``st``),
    q.v (``sv``), t.v (``stv``), the product's type id and whether it has an image."""

    st: torch.Tensor
    sv: torch.Tensor
    stv: torch.Tensor
    type_ids: torch.Tensor
    has_image: torch.Tensor

    def scores(self, model: QueryLifeModel, weight_by_type: torch.Tensor) -> np.ndarray:
        """Fused scores (N,) with image weight ``weight_by_type[type]`` (0 where a product has no image)."""
        w = weight_by_type[self.type_ids] * self.has_image.to(self.st.dtype)  # (N,)
        return model.fusion.combine(self.st, self.sv, self.stv, w).double().numpy()


@torch.no_grad()
def pair_parts(
    model: QueryLifeModel, data: Dataset, pairs: pd.DataFrame, cache: FeatureCache | None = None, batch_size: int = 512
) -> PairParts:
    """Encode the queries and products of ``pairs`` once and return the per-row score parts."""
    enc = encode_pairs(model, data, pairs, cache or FeatureCache(), batch_size)
    products, qv = enc.products, enc.queries.cpu()  # (Q, D)
    q_pos = torch.from_numpy(enc.query_pos)
    p_pos = torch.from_numpy(enc.product_pos.astype(np.int64))
    q, t, v = qv[q_pos], products.t.cpu()[p_pos], products.v.cpu()[p_pos]  # (N, D) each
    return PairParts(
        (q * t).sum(-1),
        (q * v).sum(-1),
        (t * v).sum(-1),
        products.type_ids.cpu()[p_pos],
        products.has_image.cpu()[p_pos],
    )


@dataclass
class TypeWeightFit:
    """What :func:`fit_type_weights` chose: ``weights`` (product type -> image weight), dev NDCG@10 before (at the
    starting weights) and after, and each sweep's changes (``moves``: type, old, new weight, dev gain)."""

    weights: dict[str, float]
    dev_ndcg_before: float
    dev_ndcg_after: float
    moves: list[dict] = field(default_factory=list)


def _mean_ndcg(pairs: pd.DataFrame, scores: np.ndarray) -> float:
    return float(np.nanmean(per_query_metrics(pairs.assign(score=scores), ks=(10,))["ndcg@10"]))


def current_type_weights(model: QueryLifeModel) -> torch.Tensor:
    """The model's image weight per type id (n_types,), from its type gate."""
    return torch.sigmoid(model.fusion.type_logit.detach().float().cpu())


def set_type_weights(model: QueryLifeModel, weights: torch.Tensor) -> None:
    """Write image weights per type id (n_types,) into the model's type gate (as logits, clamped off 0 and 1 by
    1e-6 so that the logit stays finite; the fused score then differs from the exact weight by at most 1e-6)."""
    logit = torch.logit(weights.clamp(1e-6, 1 - 1e-6).to(torch.float64)).to(model.fusion.type_logit.dtype)
    with torch.no_grad():
        model.fusion.type_logit.copy_(logit.to(model.fusion.type_logit.device))


def fit_type_weights(
    model: QueryLifeModel,
    data: Dataset,
    dev: pd.DataFrame,
    cache: FeatureCache | None = None,
    *,
    batch_size: int = 512,
    grid: Sequence[float] | None = None,
    min_gain: float | None = None,
    passes: int | None = None,
    parts: PairParts | None = None,
) -> TypeWeightFit:
    """Pick each product type's image weight on ``dev`` (labelled pairs) and write them into ``model``'s type gate.

    Coordinate ascent: for each type present among the dev candidates (most candidates first), every weight of
    ``grid`` is tried with the other types fixed, and the type moves to the best one when it raises the mean dev
    NDCG@10 by more than ``min_gain`` (ties: the weight nearest the current one). ``grid`` / ``min_gain`` /
    ``passes`` default to ``model.fusion.fit_*``. Needs a model with a type gate (``type_gate``,
    ``query_type_gate`` (its type part), ``dev_type_gate``); raises ``ValueError`` otherwise or on an empty dev.
    """
    cfg = model.config.fusion
    if not hasattr(model.fusion, "type_logit"):
        raise ValueError(f"fusion mode {model.fusion.mode!r} has no per-type image weights to fit")
    if dev is None or not len(dev):
        raise ValueError("fitting per-type image weights needs a non-empty dev split")
    grid = [float(g) for g in (cfg.fit_grid if grid is None else grid)]
    if not grid or min(grid) < 0 or max(grid) > 1:
        raise ValueError(f"model.fusion.fit_grid must be image weights in [0, 1], got {grid}")
    min_gain = cfg.fit_min_gain if min_gain is None else min_gain
    passes = cfg.fit_passes if passes is None else passes
    parts = parts or pair_parts(model, data, dev, cache, batch_size)
    weights = current_type_weights(model)  # (n_types,)
    before = best = _mean_ndcg(dev, parts.scores(model, weights))
    ids, counts = torch.unique(parts.type_ids[parts.has_image], return_counts=True)
    order = [int(i) for i in ids[torch.argsort(counts, descending=True, stable=True)]]
    moves: list[dict] = []
    for sweep in range(passes):
        moved = False
        for k in order:
            old = float(weights[k])
            trials = []
            for g in grid:
                trial = weights.clone()
                trial[k] = g
                trials.append((_mean_ndcg(dev, parts.scores(model, trial)), -abs(g - old), g))
            score, _, g = max(trials)
            if score > best + min_gain:
                moves.append({"sweep": sweep + 1, "type": model.types[k], "from": old, "to": g, "gain": score - best})
                weights[k], best, moved = g, score, True
        if not moved:
            break
    set_type_weights(model, weights)
    by_type = {model.types[i]: float(weights[i]) for i in range(len(model.types))}
    return TypeWeightFit(by_type, before, best, moves)
