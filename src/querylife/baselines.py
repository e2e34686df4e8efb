"""Untrained baselines: BM25 on the product text, and the zero-shot text tower (cosine of raw features).

Both return one score per labelled pair, like a trained model's :func:`querylife.scoring.score_pairs`, so that the
same dev-fitted decision and metrics apply (:func:`querylife.evaluate.decide`).
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import torch.nn.functional as F

from .bm25 import bm25_pair_scores
from .data.prepare import Dataset
from .model import QueryLifeModel
from .scoring import FeatureCache


def bm25_scores(data: Dataset, pairs: pd.DataFrame) -> np.ndarray:
    """BM25 score of each pair's query against its product's text (``Dataset.product_texts``)."""
    return bm25_pair_scores(data, pairs)


def zero_shot_scores(data: Dataset, pairs: pd.DataFrame, cache: FeatureCache, shell: QueryLifeModel) -> np.ndarray:
    """Cosine of raw (untrained, unprojected) tower features of the query and the product text."""
    rows = data.rows(pairs["product_id"])
    texts = data.product_texts()
    q = F.normalize(cache.text(shell, pairs["query"].tolist(), role="query"), dim=-1)
    t = F.normalize(cache.text(shell, [texts[r] for r in rows]), dim=-1)
    return (q * t).sum(-1).double().numpy()
