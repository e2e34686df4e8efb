"""GenFilt in training: build the configured judge and feed its mask into the contrastive loss.

``train.false_negative_judge`` picks the judge:

- ``none``: no filtering (in-batch negatives as they come, minus what the data says: same product, labelled
  positives);
- ``duplicate_title``: same normalised title as the positive (cheap baseline);
- ``guide``: GIST-style guide model on raw titles (a frozen text encoder; Solatorio 2024);
- ``descriptions``: GenFilt's similarity judge on generated descriptions from ``genfilt.cache``.

Each epoch the trainer logs how many negatives the judge masked and, where the data has ground truth (the
demo's ``group_id``, labelled positives), how many of them were true equivalents.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch

from ..data.prepare import Dataset
from .judges import DescriptionSimilarityJudge, DuplicateTitleJudge, GuideModelJudge, Judge, text_tower_encoder
from .mask_eval import KnownEquivalents, known_equivalents

JUDGES = ("none", "duplicate_title", "guide", "descriptions")


class JudgeMask:
    """``Trainer(negative_mask_fn=...)`` callback around a judge, with per-epoch counts.

    Example::

        fn = JudgeMask(DuplicateTitleJudge(titles), data.catalog["product_id"].to_numpy(), truth)
        Trainer(cfg, data, run_dir, negative_mask_fn=fn)
    """

    def __init__(self, judge: Judge, catalog_ids: Sequence[str] | np.ndarray, truth: KnownEquivalents | None = None):
        self.judge = judge
        self.ids = np.asarray(catalog_ids, dtype=object)
        self.truth = truth
        self._reset()

    def _reset(self) -> None:
        self.masked = 0
        self.true_masked = 0
        self.pairs = 0

    def __call__(self, queries: list[str], product_rows: np.ndarray) -> torch.Tensor:
        rows = np.asarray(product_rows, dtype=np.int64)
        b = len(queries)
        pids = [str(p) for p in self.ids[rows].tolist()]
        mask = np.ascontiguousarray(self.judge.mask(list(queries), pids, pids[:b]), dtype=bool)  # (B, Bp)
        self.pairs += b * len(pids) - b
        self.masked += int(mask.sum())
        if self.truth is not None:
            for i, j in zip(*np.nonzero(mask), strict=True):
                self.true_masked += bool(self.truth(queries[i], pids[i], pids[j]))
        return torch.from_numpy(mask)

    def epoch_stats(self) -> dict[str, float]:
        """Counts since the last call: masked negatives, the share of all negatives, and how many were true."""
        out = {
            "judge": getattr(self.judge, "name", type(self.judge).__name__),
            "masked_negatives": self.masked,
            "masked_fraction": self.masked / self.pairs if self.pairs else 0.0,
        }
        if self.truth is not None:
            out["masked_true_equivalents"] = self.true_masked
            out["mask_precision"] = self.true_masked / self.masked if self.masked else float("nan")
        self._reset()
        return out


def build_negative_mask_fn(config, data: Dataset, text_tower=None) -> JudgeMask | None:
    """The judge named by ``config.train.false_negative_judge`` as a trainer callback (None for "none").

    ``text_tower``: the model's frozen text tower, reused as the guide encoder when it is the configured guide
    model (saves loading it twice); a trainable tower is never reused (the guide must stay fixed).
    """
    kind = config.train.false_negative_judge
    if kind == "none":
        return None
    g = config.genfilt
    titles = dict(zip(data.catalog["product_id"], data.catalog["title"], strict=True))
    truth = known_equivalents(data.catalog, data.splits["train"])
    judge: Judge
    if kind == "duplicate_title":
        judge = DuplicateTitleJudge(titles)
    else:
        reuse = text_tower is not None and text_tower.frozen and g.guide_model == config.model.tower.text_model
        encoder = text_tower_encoder(text_tower if reuse else g.guide_model)
        if kind == "guide":
            judge = GuideModelJudge(encoder, titles, margin=g.margin, margin_kind=g.margin_kind)
        else:
            from .cache import DescriptionCache

            path = Path(g.cache)
            if not path.exists():
                raise FileNotFoundError(
                    f"false_negative_judge=descriptions needs generated descriptions in {path}: "
                    "run `querylife genfilt describe` first (or set genfilt.cache)"
                )
            store = DescriptionCache(path)
            versions = sorted({(r["describer"], r["prompt_version"]) for r in store.items()})
            if not versions:
                raise ValueError(f"{path} holds no descriptions")
            describer, version = versions[-1]
            judge = DescriptionSimilarityJudge(
                encoder, store.latest(describer, version), titles, margin=g.margin, margin_kind=g.margin_kind
            )
    return JudgeMask(judge, data.catalog["product_id"].to_numpy(), truth)
