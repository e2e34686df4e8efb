"""Encoding products and queries in batches, with a cache for frozen towers, and scoring labelled pairs."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass

import numpy as np
import pandas as pd
import torch
from tqdm.auto import tqdm

from .data.prepare import Dataset
from .encode import ProductVectors, encode_product_rows
from .model import QueryLifeModel
from .towers import TrunkCache


class FeatureCache:
    """Tower features of frozen towers, computed once per distinct input and reused.

    A frozen tower is a fixed function, so its features can be shared across epochs and across the runs of an
    ablation suite (which use the same tower). Keys include the tower's name and settings; text is keyed by the
    string, images by a hash of their pixels (so one cache serves several data sets safely).

    Example::

        cache = FeatureCache()
        tf = cache.text(model, ["red dress"])                         # (1, d_t)
        vf = cache.images(model, data.images, data.has_image)        # (N, d_v), zeros where no image
    """

    def __init__(self) -> None:
        self._text: dict[tuple, dict[str, torch.Tensor]] = {}
        self._images: dict[tuple, dict[bytes, torch.Tensor]] = {}
        self._trunks: dict[tuple, TrunkCache] = {}  # frozen trunks of partly trained towers, by VisionTower.trunk_key
        self.hits = 0
        self.misses = 0
        self.image_hits = 0
        self.image_misses = 0

    @staticmethod
    def caches_images(model: QueryLifeModel) -> bool:
        """Whether :meth:`images` caches this model's vision features (a frozen pretrained tower)."""
        return model.vision_tower.cache_key is not None

    def share_trunks(self, model: QueryLifeModel) -> None:
        """Point a partly trained EfficientNet-Lite's trunk cache at this cache's one for the same
        :attr:`~querylife.towers.VisionTower.trunk_key` (the first tower's cache, with its size cap, becomes the
        shared one), so the runs of a suite or of several seeds compute each image's frozen trunk once per process,
        as :meth:`images` does for a frozen tower. Nothing for other towers.

        Example: ``cache.share_trunks(model)`` before training or scoring ``model``.
        """
        tower = model.vision_tower
        key = tower.trunk_key
        if key is None:
            return
        shared = self._trunks.setdefault(key, tower.trunk_cache)
        if shared is not tower.trunk_cache:
            tower.use_trunk_cache(shared)

    def images(
        self,
        model: QueryLifeModel,
        images: torch.Tensor,
        has_image: torch.Tensor,
        rows: np.ndarray | None = None,
        *,
        batch_size: int = 32,  # a 224 px EfficientNet-Lite0 batch of 32 peaks near 0.5 GB of activations
        progress: bool = False,
        desc: str = "encoding images",
    ) -> torch.Tensor:
        """Vision-tower features (n, d_v) of ``images[rows]`` (all rows by default) from uint8 (N, 3, S, S);
        zeros where ``has_image`` is False. Cached per distinct image when the tower is frozen and pretrained
        (:attr:`VisionTower.cache_key`); otherwise computed each call."""
        rows = np.arange(len(images)) if rows is None else np.asarray(rows)
        tower = model.vision_tower
        has = has_image[rows]  # (n,)
        if tower.cache_key is None:
            return _batched(
                lambda idx: model.image_features(images[idx], has_image[idx]), rows, batch_size, progress, desc
            ) if len(rows) else torch.empty(0, tower.dim)
        store = self._images.setdefault(tower.cache_key, {})
        keys: list[bytes | None] = [
            hashlib.blake2b(images[r].contiguous().numpy().tobytes(), digest_size=16).digest() if h else None
            for r, h in zip(rows.tolist(), has.tolist(), strict=True)
        ]
        todo: dict[bytes, int] = {}  # distinct missing image -> a row holding it
        for r, k in zip(rows.tolist(), keys, strict=True):
            if k is not None and k not in store and k not in todo:
                todo[k] = r
        n_with = sum(k is not None for k in keys)
        self.image_hits += n_with - len(todo)
        self.image_misses += len(todo)
        if todo:
            todo_rows = np.fromiter(todo.values(), dtype=np.int64, count=len(todo))
            feats = _batched(lambda idx: model.image_features(images[idx]), todo_rows, batch_size, progress, desc)
            for k, row in zip(todo, feats, strict=True):
                store[k] = row
        out = torch.zeros(len(rows), tower.dim)
        for i, k in enumerate(keys):
            if k is not None:
                out[i] = store[k]
        return out

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
    use; here over the dataset's already decoded images. A frozen pretrained vision tower's features come from
    ``cache`` (each image encoded once per process).
    """
    cache = cache or FeatureCache()
    cache.share_trunks(model)
    features = None
    if cache.caches_images(model):
        features = lambda: cache.images(model, data.images, data.has_image, rows, progress=progress)  # noqa: E731
    return encode_product_rows(
        model,
        data.product_texts(rows),
        data.catalog["product_type"].iloc[rows].tolist(),
        data.has_image[rows],
        lambda start, stop: data.images[rows[start:stop]],
        cache=cache,
        batch_size=batch_size,
        progress=progress,
        image_features=features,
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


@dataclass
class PairVectors:
    """Each distinct query and product of a pair table encoded once, and where each row's pair finds them."""

    queries: torch.Tensor  # (Q, D) unit query vectors
    products: ProductVectors  # the distinct products (t, v, type_ids, has_image)
    query_pos: np.ndarray  # (N,) row -> index into queries
    product_pos: np.ndarray  # (N,) row -> index into products


@torch.no_grad()
def encode_pairs(
    model: QueryLifeModel, data: Dataset, pairs: pd.DataFrame, cache: FeatureCache, batch_size: int = 512
) -> PairVectors:
    """Encode the distinct queries and products of ``pairs`` (the one encoding eval and the dev fits share)."""
    rows = data.rows(pairs["product_id"])
    uniq_rows, prod_pos = np.unique(rows, return_inverse=True)
    products = encode_products(model, data, uniq_rows, cache, batch_size)
    queries = list(dict.fromkeys(pairs["query"]))
    q_index = {q: i for i, q in enumerate(queries)}
    qv = encode_query_vectors(model, queries, cache, batch_size)
    q_pos = np.fromiter((q_index[q] for q in pairs["query"]), dtype=np.int64, count=len(pairs))
    return PairVectors(qv, products, q_pos, prod_pos)


@torch.no_grad()
def score_pairs(
    model: QueryLifeModel,
    data: Dataset,
    pairs: pd.DataFrame,
    cache: FeatureCache | None = None,
    batch_size: int = 512,
) -> PairScores:
    """Score each (query, product_id) row of ``pairs`` with the model's fused relevance score."""
    enc = encode_pairs(model, data, pairs, cache or FeatureCache(), batch_size)
    qv, products, q_pos, prod_pos = enc.queries, enc.products, enc.query_pos, enc.product_pos
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
