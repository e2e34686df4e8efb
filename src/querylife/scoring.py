"""Encoding products and queries in batches, with a cache for frozen towers, and scoring labelled pairs."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd
import torch
from tqdm.auto import tqdm

from .data.prepare import Dataset
from .encode import ProductVectors, encode_product_rows
from .model import QueryLifeModel


class FeatureCache:
    """Tower features of frozen towers, computed once per distinct input and reused.

    A frozen tower is a fixed function, so its features can be shared across epochs and across the runs of an
    ablation suite (which use the same tower). Keys include the tower's name and settings.
    """

    def __init__(self) -> None:
        self._text: dict[tuple, dict[str, torch.Tensor]] = {}
        self.hits = 0
        self.misses = 0

    def text(
        self,
        model: QueryLifeModel,
        texts: list[str],
        *,
        role: str = "title",
        batch_size: int = 256,
        progress: bool = False,
        desc: str = "encoding text",
    ) -> torch.Tensor:
        """Tower features (N, d) for ``texts``; cached when the tower is frozen."""
        tower = model.query_tower if (role == "query" and model.query_tower is not None) else model.text_tower
        if not tower.frozen:
            return _batched(lambda chunk: model.text_features(chunk, role=role), texts, batch_size, progress, desc)
        key = (tower.name, tower.pooling, tower.max_length)
        store = self._text.setdefault(key, {})
        todo = list(dict.fromkeys(t for t in texts if t not in store))
        self.hits += len(texts) - len(todo)
        self.misses += len(todo)
        if todo:
            feats = _batched(lambda chunk: model.text_features(chunk, role=role), todo, batch_size, progress, desc)
            for text, row in zip(todo, feats, strict=True):
                store[text] = row
        return torch.stack([store[t] for t in texts]) if texts else torch.empty(0, tower.dim)


@torch.no_grad()
def _batched(fn, items, batch_size: int, progress: bool, desc: str) -> torch.Tensor:
    out = []
    for start in tqdm(range(0, len(items), batch_size), desc=desc, disable=not progress, leave=False):
        out.append(fn(items[start : start + batch_size]).float().cpu())
    return torch.cat(out) if out else torch.empty(0)


@torch.no_grad()
def encode_products(
    model: QueryLifeModel,
    data: Dataset,
    rows: np.ndarray,
    cache: FeatureCache | None = None,
    batch_size: int = 512,
    progress: bool = False,
) -> ProductVectors:
    """Encode catalogue ``rows`` (titles and images) into the model's space.

    The batch step is :func:`querylife.encode.encode_product_rows`, the one ``querylife embed`` and the service
    use; here over the dataset's already decoded images.
    """
    return encode_product_rows(
        model,
        data.product_texts(rows),
        data.catalog["product_type"].iloc[rows].tolist(),
        data.has_image[rows],
        lambda start, stop: data.images[rows[start:stop]],
        cache=cache,
        batch_size=batch_size,
        progress=progress,
    )


@torch.no_grad()
def encode_query_vectors(
    model: QueryLifeModel, queries: list[str], cache: FeatureCache | None = None, batch_size: int = 512
) -> torch.Tensor:
    """Projected query vectors (N, D)."""
    cache = cache or FeatureCache()
    was_training = model.training
    model.eval()
    try:
        qf = cache.text(model, queries, role="query", batch_size=batch_size)
        return torch.cat([model.project_queries(c) for c in qf.split(batch_size)]).cpu() if queries else qf
    finally:
        model.train(was_training)


@dataclass
class PairScores:
    """Scores for the rows of a pair table: ``score`` and the fusion's ``image_weight`` (NaN for concat)."""

    score: np.ndarray
    image_weight: np.ndarray


@torch.no_grad()
def score_pairs(
    model: QueryLifeModel,
    data: Dataset,
    pairs: pd.DataFrame,
    cache: FeatureCache | None = None,
    batch_size: int = 512,
) -> PairScores:
    """Score each (query, product_id) row of ``pairs`` with the model's fused relevance score."""
    cache = cache or FeatureCache()
    rows = data.rows(pairs["product_id"])
    uniq_rows, prod_pos = np.unique(rows, return_inverse=True)
    products = encode_products(model, data, uniq_rows, cache, batch_size)
    queries = list(dict.fromkeys(pairs["query"]))
    q_index = {q: i for i, q in enumerate(queries)}
    qv = encode_query_vectors(model, queries, cache, batch_size)
    q_pos = np.fromiter((q_index[q] for q in pairs["query"]), dtype=np.int64)
    was_training = model.training
    model.eval()
    scores, weights = [], []
    try:
        for start in range(0, len(pairs), batch_size):
            qi = torch.from_numpy(q_pos[start : start + batch_size])
            pi = torch.from_numpy(prod_pos[start : start + batch_size])
            dev = model.device
            out = model.score(
                qv[qi].to(dev),
                products.t[pi].to(dev),
                products.v[pi].to(dev),
                products.type_ids[pi].to(dev),
                products.has_image[pi].to(dev),
                pairwise=False,
            )
            scores.append(out.scores.cpu())
            weights.append(
                out.image_weight.cpu() if out.image_weight is not None else torch.full((len(qi),), float("nan"))
            )
    finally:
        model.train(was_training)
    if not scores:
        return PairScores(np.zeros(0), np.zeros(0))
    return PairScores(torch.cat(scores).numpy().astype(np.float64), torch.cat(weights).numpy().astype(np.float64))
