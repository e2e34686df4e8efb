"""Batch sampler for in-batch contrastive training without duplicate queries, products or groups."""

from __future__ import annotations

from collections.abc import Iterator, Sequence

import numpy as np
import pandas as pd
from torch.utils.data import Sampler

__all__ = ["UniqueBatchSampler"]


class UniqueBatchSampler(Sampler[list[int]]):
    """Yields batches of row indices with no query, no product (and no group) twice in one batch.

    In in-batch contrastive learning every other row's product is a negative for a row's query. Two rows of
    one query in a batch would make each other's positives false negatives; two rows of one product would make
    the product both positive and negative. With ``groups`` (e.g. ``group_id``: variants of one item, sellers
    of one product), two rows of one group never share a batch either; ``None`` groups are unconstrained.

    Packing: rows are shuffled with a generator seeded by ``(seed, epoch)``, then placed greedily, each into
    the oldest open batch that has room and no conflict, else into a new batch. A batch is closed (yielded)
    when it reaches ``batch_size`` (or the most rows any batch could hold: the number of distinct queries,
    products or groups, if smaller). Batches still open at the end are yielded last, so the final batches may
    be smaller.

    Every row appears exactly once per epoch. When one query (product, group) has more rows than there would
    otherwise be batches, its rows still go to separate batches: extra, smaller batches are created; rows are
    never duplicated. With ``drop_last=True`` every batch smaller than ``batch_size`` is dropped for that
    epoch (their rows are skipped), so all yielded batches have exactly ``batch_size`` rows.

    The batch order depends only on ``(seed, epoch)``: call :meth:`set_epoch` at the start of every epoch
    (as with ``DistributedSampler``) to get a different order each epoch.
    """

    def __init__(
        self,
        queries: Sequence[str],
        product_ids: Sequence[str],
        batch_size: int,
        *,
        seed: int = 0,
        drop_last: bool = False,
        groups: Sequence[str | None] | None = None,
    ) -> None:
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
        q = _codes(queries)
        p = _codes(product_ids)
        if len(p) != len(q):
            raise ValueError(f"queries ({len(q)}) and product_ids ({len(p)}) differ in length")
        if groups is not None:
            g = _codes(groups)
            if len(g) != len(q):
                raise ValueError(f"groups ({len(g)}) and queries ({len(q)}) differ in length")
        else:
            g = np.full(len(q), -1, dtype=np.int64)
        self._q, self._p, self._g = q, p, g
        self.batch_size = int(batch_size)
        self.seed = int(seed)
        self.drop_last = bool(drop_last)
        self.epoch = 0
        n = len(q)
        # No batch can hold more rows than there are distinct queries (products, groups): treat that as full,
        # or tiny datasets would keep every batch open and make packing quadratic.
        limits = [self.batch_size, len(np.unique(q)) if n else 0, len(np.unique(p)) if n else 0]
        if groups is not None:
            limits.append(len(np.unique(g[g >= 0])) + int((g < 0).sum()))
        self.capacity = max(1, min(limits))
        if self.drop_last and n and self.capacity < self.batch_size:
            raise ValueError(
                f"drop_last=True with batch_size {self.batch_size}, but no batch can hold more than "
                f"{self.capacity} rows without repeating a query, product or group: every batch would be "
                "dropped"
            )
        self._cache: tuple[int, list[list[int]]] | None = None

    def set_epoch(self, epoch: int) -> None:
        """Select the epoch whose (deterministic) order the next iteration yields."""
        self.epoch = int(epoch)

    def batches(self, epoch: int | None = None) -> list[list[int]]:
        """All batches of ``epoch`` (default: the current one), as lists of row indices."""
        e = self.epoch if epoch is None else int(epoch)
        if self._cache is not None and self._cache[0] == e:
            return self._cache[1]
        out = self._pack(e)
        self._cache = (e, out)
        return out

    def _pack(self, epoch: int) -> list[list[int]]:
        n = len(self._q)
        rng = np.random.default_rng(np.random.SeedSequence([self.seed, epoch]))
        order = rng.permutation(n)
        qs, ps, gs = self._q.tolist(), self._p.tolist(), self._g.tolist()
        cap = self.capacity
        done: list[list[int]] = []
        # Each open batch: (rows, queries, products, groups).
        open_: list[tuple[list[int], set[int], set[int], set[int]]] = []
        for i in order.tolist():
            q, p, g = qs[i], ps[i], gs[i]
            for k, (rows, bq, bp, bg) in enumerate(open_):
                if q in bq or p in bp or (g >= 0 and g in bg):
                    continue
                rows.append(i)
                bq.add(q)
                bp.add(p)
                if g >= 0:
                    bg.add(g)
                if len(rows) >= cap:
                    done.append(rows)
                    del open_[k]
                break
            else:
                if cap == 1:
                    done.append([i])
                else:
                    open_.append(([i], {q}, {p}, {g} if g >= 0 else set()))
        done.extend(rows for rows, *_ in open_)
        if self.drop_last:
            done = [b for b in done if len(b) == self.batch_size]
        return done

    def __iter__(self) -> Iterator[list[int]]:
        yield from (list(b) for b in self.batches())

    def __len__(self) -> int:
        return len(self.batches())


def _codes(values: Sequence) -> np.ndarray:
    """Integer code per value; missing values (None / NaN) get -1."""
    codes, _ = pd.factorize(pd.Series(list(values), dtype=object), use_na_sentinel=True)
    return codes.astype(np.int64)
