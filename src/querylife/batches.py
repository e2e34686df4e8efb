"""The batches of a training epoch and their negative masks: one definition for training, GenFilt and benchmarks.

A batch is B positive pairs of the train split packed by :class:`~querylife.data.samplers.UniqueBatchSampler` (no
query or product twice), seeded by ``(train.seed, epoch)``. Its columns are the B positives' products, then, with
``train.hard_negatives`` k, up to k labelled non-positive candidates of each row's own query, drawn with a generator
seeded by ``(train.seed, epoch, step)``: the batches depend only on (data, config, seed, epoch), so a resumed run,
``querylife genfilt judge`` / ``evaluate`` and every benchmark see exactly the batches training sees.

:class:`NegativeMasks` says which cells of a batch are not negatives: the same product, products labelled positive
for the row's query, the same ``group_id`` (opt-in), and a false-negative judge's flags (dropped, or extra
positives).

Example::

    for batch in epoch_batches(data, config, epoch=0):
        batch.queries, batch.product_rows  # B queries; Bp >= B catalogue rows, the first B their positives
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd
import torch

from .data.prepare import Dataset, training_positive
from .data.samplers import UniqueBatchSampler
from .losses import BatchMasks, LossConfig

__all__ = ["EpochBatches", "NegativeMaskFn", "NegativeMasks", "TrainBatch", "TrainingPairs", "epoch_batches"]

# A false-negative judge as the trainer uses it: (queries, product rows) -> (B, Bp) bool, True where the column is
# judged not a negative for the row's query. GenFilt's JudgeMask (genfilt/training.py) is one.
NegativeMaskFn = Callable[[list[str], np.ndarray], torch.Tensor]


@dataclass(frozen=True)
class TrainBatch:
    """One training step's batch.

    ``index``: rows of :attr:`TrainingPairs.pairs` (B); ``queries``: their queries; ``product_rows``: catalogue rows
    of the columns (Bp >= B; the first B are the rows' positives, then hard negatives); ``product_ids``: the
    columns' product ids (str).
    """

    epoch: int
    step: int
    index: list[int]
    queries: list[str]
    product_rows: np.ndarray
    product_ids: list[str]

    @property
    def size(self) -> int:
        """B, the number of positive pairs (rows of the score matrix)."""
        return len(self.index)

    @property
    def positive_ids(self) -> list[str]:
        return self.product_ids[: self.size]


class TrainingPairs:
    """The positive pairs training learns from (train split; ``include_partial``: gain > 0 counts), with each pair's
    catalogue row and hard-negative pool (its query's labelled non-positive candidates).

    Raises ValueError when the train split has no positive pair.
    """

    def __init__(self, data: Dataset, include_partial: bool = False):
        train = data.splits["train"]
        keep = training_positive(train, include_partial)
        self.pairs = train[keep].reset_index(drop=True)
        if self.pairs.empty:
            raise ValueError("the train split has no positive pairs to learn from")
        self.queries: list[str] = self.pairs["query"].tolist()
        self.product_ids: list[Any] = self.pairs["product_id"].tolist()
        self.rows: np.ndarray = data.rows(self.pairs["product_id"])  # (n_pairs,) catalogue rows
        self.known_positive = set(zip(train.loc[keep, "query"], train.loc[keep, "product_id"], strict=True))
        # Hard negatives: each query's own labelled non-positive candidates (e.g. partial matches), so that the
        # batch also holds negatives of the query's type and not only the easy other-type ones.
        negatives = train[~keep]
        neg_rows = pd.Series(list(data.rows(negatives["product_id"])), index=negatives.index, dtype="int64")
        pools = neg_rows.groupby(negatives["query"].to_numpy()).agg(lambda r: r.to_numpy())
        empty = np.zeros(0, dtype=np.int64)
        self.neg_pool: list[np.ndarray] = [pools.get(q, empty) for q in self.queries]

    def __len__(self) -> int:
        return len(self.queries)


class EpochBatches:
    """The batches of every epoch for one (data, batch size, seed, hard negatives).

    Example::

        plan = EpochBatches.from_config(data, config)
        len(plan)  # steps per epoch
        first = next(plan.epoch(0))
    """

    def __init__(
        self, data: Dataset, pairs: TrainingPairs, batch_size: int, *, seed: int = 0, hard_negatives: int = 0
    ):
        self.pairs = pairs
        self.seed = int(seed)
        self.hard_negatives = int(hard_negatives)
        self.catalog_ids = data.catalog["product_id"].to_numpy()
        self.sampler = UniqueBatchSampler(pairs.queries, pairs.product_ids, batch_size, seed=seed, drop_last=False)

    @classmethod
    def from_config(cls, data: Dataset, config, *, seed: int | None = None) -> EpochBatches:
        """The plan of ``config.train`` (batch size, seed unless ``seed`` is given, hard negatives) on ``data``."""
        tc = config.train
        pairs = TrainingPairs(data, config.data.include_partial_positives)
        return cls(data, pairs, tc.batch_size, seed=tc.seed if seed is None else seed, hard_negatives=tc.hard_negatives)

    def __len__(self) -> int:
        """Steps per epoch (those of epoch 0: the schedule's length is fixed from it)."""
        return len(self.sampler.batches(0))

    def product_rows(self, index: list[int], epoch: int, step: int) -> np.ndarray:
        """Catalogue rows of a batch's columns: its B positives, then up to ``hard_negatives`` per pair, drawn with a
        generator seeded by (seed, epoch, step)."""
        rows = self.pairs.rows[index]
        k = self.hard_negatives
        if k <= 0:
            return rows
        rng = np.random.default_rng([self.seed, epoch, step])
        pools = (self.pairs.neg_pool[i] for i in index)
        extra = [rng.choice(pool, size=min(k, len(pool)), replace=False) for pool in pools]
        return np.concatenate([rows, *extra]) if extra else rows

    def negative_counts(self, index: list[int]) -> list[int]:
        """Hard negatives of each pair of a batch (``min(hard_negatives, pool size)``), in the order
        :meth:`product_rows` lists them after the positives."""
        k = self.hard_negatives
        return [min(k, len(self.pairs.neg_pool[i])) if k > 0 else 0 for i in index]

    def batch(self, index: list[int], epoch: int, step: int) -> TrainBatch:
        """The :class:`TrainBatch` of sampler rows ``index`` at (epoch, step)."""
        rows = self.product_rows(index, epoch, step)
        ids = [str(p) for p in self.catalog_ids[rows].tolist()]
        return TrainBatch(epoch, step, list(index), [self.pairs.queries[i] for i in index], rows, ids)

    def epoch(self, epoch: int, start_step: int = 0) -> Iterator[TrainBatch]:
        """The batches of ``epoch`` from step ``start_step`` on (a resumed epoch starts mid-way)."""
        self.sampler.set_epoch(epoch)
        for step, index in enumerate(self.sampler.batches(epoch)[start_step:], start_step):
            yield self.batch(list(index), epoch, step)

    def steps(self, epochs: int) -> Iterator[TrainBatch]:
        """The batches of epochs 0 .. ``epochs`` - 1 in training order."""
        for e in range(epochs):
            yield from self.epoch(e)


def epoch_batches(
    data: Dataset, config, epoch: int, *, seed: int | None = None, start_step: int = 0
) -> Iterator[TrainBatch]:
    """The batches training sees in ``epoch`` (from ``start_step``), for ``config`` on ``data``; ``seed`` replaces
    ``config.train.seed``. The same every time: a function of (data, config, seed, epoch).

    Example::

        batches = list(epoch_batches(data, config, 0))
        batches[0].product_rows[: batches[0].size]  # the first batch's positives
    """
    return EpochBatches.from_config(data, config, seed=seed).epoch(epoch, start_step)


class NegativeMasks:
    """A batch's :class:`~querylife.losses.BatchMasks`: the cells that are not negatives for their row.

    From the data (``loss.mask_same_product``, ``loss.mask_labelled_positives``, ``loss.mask_same_group`` with the
    catalogue's ``group_id``) and, with a ``judge``, its flags: ORed into the ignore mask (``action="drop"``) or
    extra positives of the row (``action="positive"``; cells the data already masks stay masked).

    Example::

        masks = NegativeMasks(cfg.loss, data.catalog["product_id"].to_numpy(), pairs.known_positive)
        m = masks(batch)  # m.ignore (B, Bp), m.product_ignore (Bp, Bp), m.extra_positive None
    """

    def __init__(
        self,
        config: LossConfig,
        catalog_ids: np.ndarray,
        known_positive: set[tuple[Any, Any]],
        *,
        groups: np.ndarray | None = None,
        judge: NegativeMaskFn | None = None,
        action: str = "drop",
    ):
        if action not in ("drop", "positive"):
            raise ValueError(f'false_negative_action must be "drop" or "positive", got {action!r}')
        self.config = config
        self.catalog_ids = np.asarray(catalog_ids)
        self.known_positive = known_positive
        self.groups = groups
        self.judge = judge
        self.action = action

    @classmethod
    def for_training(cls, config, data: Dataset, pairs: TrainingPairs, judge: NegativeMaskFn | None = None):
        """The masks of ``config`` (``loss`` switches, ``train.false_negative_action``) on ``data``'s training pairs."""
        groups = data.catalog["group_id"] if "group_id" in data.catalog.columns else None
        groups = None if groups is None else groups.fillna("").astype(str).to_numpy()
        ids = data.catalog["product_id"].to_numpy()
        return cls(
            config.loss, ids, pairs.known_positive, groups=groups, judge=judge,
            action=config.train.false_negative_action,
        )

    def __call__(self, batch: TrainBatch) -> BatchMasks:
        return self.masks(batch.queries, batch.product_rows[: batch.size], batch.product_rows)

    def masks(self, queries: list[str], rows: np.ndarray, cols: np.ndarray) -> BatchMasks:
        """Masks for rows with positives ``rows`` (B,) against product columns ``cols`` (Bp,), all on the CPU."""
        ignore, extra = self.query_masks(queries, rows, cols)
        same = torch.from_numpy(cols[:, None] == cols[None, :])  # (Bp, Bp): one product listed twice
        return BatchMasks(ignore=ignore, product_ignore=same, extra_positive=extra)

    def query_masks(
        self, queries: list[str], rows: np.ndarray, cols: np.ndarray
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        """``(ignore, extra_positive)``, both (B, Bp) bool; ``extra_positive`` is None unless a judge's flags become
        positives."""
        lc = self.config
        pids = self.catalog_ids[cols]
        mask = torch.zeros(len(rows), len(cols), dtype=torch.bool)
        if lc.mask_same_product:
            mask |= torch.from_numpy(rows[:, None] == cols[None, :])
        if lc.mask_labelled_positives:
            known = [[(q, p) in self.known_positive for p in pids] for q in queries]
            mask |= torch.tensor(known, dtype=torch.bool)
        if lc.mask_same_group and self.groups is not None:
            g, gc = self.groups[rows], self.groups[cols]
            mask |= torch.from_numpy((g[:, None] == gc[None, :]) & (g[:, None] != ""))
        if self.judge is None:
            return mask, None
        flagged = self.judge(queries, cols).to(torch.bool).cpu()
        if self.action == "positive":
            return mask, flagged & ~mask
        return mask | flagged, None
