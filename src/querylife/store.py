"""Embedding store: every product's stored vectors, as serving and search read them.

Serving-time form of the fusion (docs/ARCHITECTURE.md): the title vector ``t`` and the image vector ``v`` of each
product are stored with its type and has-image flag; at query time the query is encoded once and the model's own
fusion (``QueryLifeModel.score``) is applied over the stored candidate rows in one batched operation. The
query-independent ``index_vectors`` (``Fusion.index_vectors``) feed the ANN index for retrieval.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import torch


@dataclass
class StoredProducts:
    """Stored vectors of N products, row-aligned.

    ``type_ids`` are ids in the checkpoint's product-type vocabulary (``QueryLifeModel.type_ids``), so the gate
    sees exactly what it saw in evaluation.
    """

    product_ids: list[str]
    titles: list[str]
    product_types: list[str]
    t: torch.Tensor  # (N, D) float32, projected title vectors
    v: torch.Tensor  # (N, D) float32, projected image vectors (zeros where has_image is False)
    has_image: torch.Tensor  # (N,) bool
    type_ids: torch.Tensor  # (N,) int64
    index_vectors: torch.Tensor  # (N, D') float32, query-independent fused vectors for the ANN index
    row_of: dict[str, int] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if not self.row_of:
            self.row_of = {pid: i for i, pid in enumerate(self.product_ids)}

    def __len__(self) -> int:
        return len(self.product_ids)

    def rows(self, product_ids) -> np.ndarray:
        """Row numbers of ``product_ids`` (KeyError naming the first unknown id)."""
        try:
            return np.fromiter((self.row_of[p] for p in product_ids), dtype=np.int64)
        except KeyError as err:
            raise KeyError(f"product_id {err.args[0]!r} is not in the store") from None
