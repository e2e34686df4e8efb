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

    def select(self, rows) -> StoredProducts:
        """The products at ``rows`` (a new StoredProducts, row-aligned with ``rows``)."""
        rows = np.asarray(rows, dtype=np.int64)
        idx = torch.from_numpy(rows)
        return StoredProducts(
            product_ids=[self.product_ids[r] for r in rows], titles=[self.titles[r] for r in rows],
            product_types=[self.product_types[r] for r in rows], t=self.t[idx], v=self.v[idx],
            has_image=self.has_image[idx], type_ids=self.type_ids[idx], index_vectors=self.index_vectors[idx],
        )

    @staticmethod
    def concat(parts: list[StoredProducts]) -> StoredProducts:
        """Row-wise concatenation (the order of ``parts``)."""
        if not parts:
            raise ValueError("nothing to concatenate")
        return StoredProducts(
            product_ids=[p for part in parts for p in part.product_ids],
            titles=[p for part in parts for p in part.titles],
            product_types=[p for part in parts for p in part.product_types],
            t=torch.cat([p.t for p in parts]), v=torch.cat([p.v for p in parts]),
            has_image=torch.cat([p.has_image for p in parts]), type_ids=torch.cat([p.type_ids for p in parts]),
            index_vectors=torch.cat([p.index_vectors for p in parts]),
        )
