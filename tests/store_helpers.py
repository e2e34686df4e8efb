"""Helpers for the embedding store, index and search tests: a tiny checkpoint with a non-trivial query-aware gate."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import torch

from querylife.model import ModelConfig, QueryLifeModel
from querylife.towers import SmallCNNConfig, TowerConfig


def make_checkpoint(text_dir: Path, out: Path, product_types: list[str], seed: int = 0, **fusion) -> Path:
    """Save a randomly initialised tiny model whose gate depends on type and query (not the zero-init gate)."""
    torch.manual_seed(seed)
    cfg = ModelConfig(
        tower=TowerConfig(text_model=str(text_dir), vision_model="small_cnn",
                          small_cnn=SmallCNNConfig(channels=(8, 16), image_size=32)),
        embed_dim=16,
        product_types=sorted(product_types),
        fusion=fusion or {},
    )
    model = QueryLifeModel(cfg)
    with torch.no_grad():
        for p in model.fusion.parameters():
            p.normal_(0.0, 0.5)
    model.save_pretrained(out)
    return out


def small_catalog(store, n: int | None = None) -> pd.DataFrame:
    """The tiny storefront's catalogue (first ``n`` rows), image paths absolute."""
    cat = pd.read_parquet(store.catalog_path)
    base = Path(store.catalog_path).parent
    cat["image_path"] = [str(base / p) if isinstance(p, str) and p else None for p in cat["image_path"]]
    return cat if n is None else cat.head(n).reset_index(drop=True)
