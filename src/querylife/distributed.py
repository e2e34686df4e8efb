"""Distributed training: N processes (torchrun ranks), one global batch, negatives gathered from every rank.

The design, in the order a step runs it (docs/SCALE.md):

- **Launch.** ``torchrun --nproc_per_node N -m querylife.train --out ... [the options of querylife train]`` or
  ``querylife train --nproc N`` (which runs torchrun on this host). Each rank reads ``RANK`` / ``WORLD_SIZE`` /
  ``LOCAL_RANK`` (:meth:`DistEnv.from_env`) and joins the process group: gloo on CPU, NCCL on CUDA
  (``train.dist_backend`` or ``QUERYLIFE_DIST_BACKEND`` override). One rank (or none of these variables) is the
  single-process path, unchanged.
- **Sharding.** ``train.batch_size`` is the *per-rank* batch B (the torch convention). Every rank builds the same
  global batch of N * B pairs with :class:`~querylife.batches.EpochBatches` (same seed: the sampler already keeps a
  query or product from appearing twice in it) and takes its own contiguous slice of rows (:func:`shard_batch`), with
  those rows' hard negatives. So no positive appears on two ranks, and the global batch is exactly the batch one
  process with ``batch_size = N * B`` would train on. Ranks are padded to one shape (gathering needs it); padded rows
  and columns are left out of every loss term.
- **Loss.** Each rank embeds its slice; the products (title, image, type ids, has-image) and the queries of every
  rank are gathered *with gradients* (:func:`gather_shard`: the open_clip ``gather_features`` recipe of
  :func:`querylife.losses.gather_features`, packed into one collective). Each rank
  computes only the loss rows of its own queries against all gathered products, and, for the symmetric terms, the
  rows of its own positive products against all gathered queries (targets offset to their gathered positions):
  the score matrices are (B, N * Bp), linear in the per-rank batch. Every term of the single-process loss is there
  (query-fused, query-title, query-image, title-image; infonce or sigmoid; hard-negative columns; extra positives).
- **Masks** (same product, labelled positives, group, the false-negative judge: :class:`~querylife.batches.
  NegativeMasks`) are built on the global batch, exactly as one process builds them, then looked up at each rank's
  gathered positions: a masked column is ignored whichever rank holds its product.
- **Gradient scale.** A rank's loss is its rows' summed losses over the *global* row count, times N: the
  all-gather's backward sums every rank's gradient into each rank's embeddings and DDP averages over ranks, so the
  gradients equal those of one process on the combined batch (the test compares them at 1e-5). The logged loss is
  the all-reduced sum, the single-process value.
- **Everything else** (gate hold, clipping, AdamW, schedule) runs unchanged on every rank on identical gradients.
  Rank 0 alone evaluates dev, writes checkpoints (atomic) and logs; the dev score, hence early stopping, is
  broadcast; on resume every rank loads ``last/``.

Example::

    env = init_distributed(config.train)          # None outside torchrun (or with one rank)
    trainer = Trainer(config, data, "runs/ddp", dist=env)
    trainer.fit()
"""

from __future__ import annotations

import os
import sys
from dataclasses import dataclass
from datetime import timedelta
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch import nn

from .losses import TERMS, BatchMasks, Embeddings, LossConfig, all_gather_rows

if TYPE_CHECKING:
    from .batches import EpochBatches, TrainBatch
    from .train import StepOutput, TrainStep

__all__ = [
    "DistEnv",
    "DistributedTrainStep",
    "Shard",
    "ShardedLoss",
    "backend_for",
    "distributed_step",
    "gather_shard",
    "init_distributed",
    "launch_command",
    "main",
    "shard_batch",
    "sharded_alignment_loss",
    "shutdown",
]

BACKEND_ENV = "QUERYLIFE_DIST_BACKEND"


# ---- the process group --------------------------------------------------------------------------------------
@dataclass(frozen=True)
class DistEnv:
    """This process's place in the job: ``rank`` of ``world_size`` (``local_rank`` on its node) and the backend."""

    rank: int
    world_size: int
    local_rank: int = 0
    backend: str = "gloo"

    @property
    def is_main(self) -> bool:
        """Rank 0: the one that evaluates, checkpoints and logs."""
        return self.rank == 0

    @classmethod
    def from_env(cls, backend: str = "gloo") -> DistEnv | None:
        """From torchrun's ``RANK`` / ``WORLD_SIZE`` / ``LOCAL_RANK``; None when absent or for one rank."""
        world = int(os.environ.get("WORLD_SIZE", "1"))
        if world <= 1:
            return None
        return cls(int(os.environ["RANK"]), world, int(os.environ.get("LOCAL_RANK", "0")), backend)

    def device(self, name: str) -> torch.device:
        """The device of ``train.device`` for this rank: ``auto`` / ``cuda`` become ``cuda:LOCAL_RANK`` on a GPU."""
        if name in ("auto", "cuda") and torch.cuda.is_available():
            return torch.device("cuda", self.local_rank)
        return torch.device("cpu" if name == "auto" else name)

    def broadcast_float(self, value: float) -> float:
        """Rank 0's ``value`` on every rank (the dev score: one early-stopping decision)."""
        t = torch.tensor([value], dtype=torch.float64, device=self._comm_device)
        dist.broadcast(t, src=0)
        return float(t.item())

    def all_sum(self, values: list[float]) -> list[float]:
        """The elementwise sum of ``values`` over ranks."""
        t = torch.tensor(values, dtype=torch.float64, device=self._comm_device)
        dist.all_reduce(t)
        return t.tolist()

    def barrier(self) -> None:
        dist.barrier()

    @property
    def _comm_device(self) -> torch.device:
        return torch.device("cuda", self.local_rank) if self.backend == "nccl" else torch.device("cpu")


def backend_for(device: str, override: str = "auto") -> str:
    """``gloo`` for CPU training, ``nccl`` for CUDA; ``override`` (``train.dist_backend``, else the environment's
    ``QUERYLIFE_DIST_BACKEND``) wins when not ``auto``."""
    choice = override if override != "auto" else os.environ.get(BACKEND_ENV, "auto")
    if choice != "auto":
        return choice
    cuda = device.startswith("cuda") or (device == "auto" and torch.cuda.is_available())
    return "nccl" if cuda else "gloo"


def init_distributed(train_config: Any, *, timeout_minutes: float = 30.0) -> DistEnv | None:
    """Join the process group torchrun set up (``env://``); None outside torchrun or with one rank (the
    single-process path). Sets this rank's CUDA device under NCCL."""
    backend = backend_for(train_config.device, getattr(train_config, "dist_backend", "auto"))
    env = DistEnv.from_env(backend)
    if env is None:
        return None
    if backend == "nccl":
        torch.cuda.set_device(env.local_rank)
    if not dist.is_initialized():
        dist.init_process_group(backend, timeout=timedelta(minutes=timeout_minutes))
    return env


def shutdown() -> None:
    """Leave the process group (no-op outside one)."""
    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()


def launch_command(nproc: int, train_args: list[str]) -> list[str]:
    """The torchrun command ``querylife train --nproc N`` runs: N ranks on this host (standalone rendezvous)."""
    return [
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--standalone",
        f"--nproc_per_node={nproc}",
        "-m",
        "querylife.train",
        *train_args,
    ]


def main(argv: list[str] | None = None) -> None:
    """``python -m querylife.train`` (what torchrun starts on each rank): ``querylife train`` with the same options."""
    from .cli import app

    app(["train", *(sys.argv[1:] if argv is None else argv)], prog_name="querylife.train")


# ---- sharding -----------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Shard:
    """One rank's slice of a global batch, in gathered positions.

    The global batch has M rows (global row i's positive is global column i) and Cg columns (M positives, then the
    hard negatives of each row in row order). Rank r holds rows ``rows`` (global row ids, contiguous) and columns
    ``cols`` (its rows' positives, then their hard negatives), padded to ``rows_max`` / ``cols_max`` with copies of
    global row / column 0. ``gathered_rows`` (world * rows_max,) and ``gathered_cols`` (world * cols_max,) give the
    global id at each gathered position, -1 for padding.
    """

    rank: int
    world_size: int
    rows: np.ndarray
    cols: np.ndarray
    rows_max: int
    cols_max: int
    gathered_rows: np.ndarray
    gathered_cols: np.ndarray

    @property
    def padded_rows(self) -> np.ndarray:
        """(rows_max,) global row ids of this rank's inputs (padding repeats global row 0)."""
        return np.concatenate([self.rows, np.zeros(self.rows_max - len(self.rows), dtype=np.int64)])

    @property
    def padded_cols(self) -> np.ndarray:
        """(cols_max,) global column ids of this rank's inputs (padding repeats global column 0)."""
        return np.concatenate([self.cols, np.zeros(self.cols_max - len(self.cols), dtype=np.int64)])


def shard_batch(negative_counts: list[int], world_size: int, rank: int) -> Shard:
    """Rank ``rank``'s :class:`Shard` of a global batch whose row i has ``negative_counts[i]`` hard negatives.

    Rows are split in contiguous slices whose sizes differ by at most one (the first ``M % world`` ranks get one
    more); a rank may get none when M < world. Example: ``shard_batch([1, 0, 2, 1], 2, 1).rows`` is ``[2, 3]``.
    """
    m = len(negative_counts)
    counts = np.asarray(negative_counts, dtype=np.int64)
    neg_start = m + np.concatenate([[0], np.cumsum(counts)])  # (M + 1,) first global column of row i's negatives
    sizes = [m // world_size + (r < m % world_size) for r in range(world_size)]
    starts = np.concatenate([[0], np.cumsum(sizes)])
    per_rank_rows, per_rank_cols = [], []
    for r in range(world_size):
        rows = np.arange(starts[r], starts[r + 1], dtype=np.int64)
        negs = np.arange(neg_start[starts[r]], neg_start[starts[r + 1]], dtype=np.int64)
        per_rank_rows.append(rows)
        per_rank_cols.append(np.concatenate([rows, negs]))
    rows_max = max(1, max(sizes))
    cols_max = max(1, max(len(c) for c in per_rank_cols))

    def gathered(parts: list[np.ndarray], width: int) -> np.ndarray:
        out = np.full(world_size * width, -1, dtype=np.int64)
        for r, p in enumerate(parts):
            out[r * width : r * width + len(p)] = p
        return out

    return Shard(
        rank,
        world_size,
        per_rank_rows[rank],
        per_rank_cols[rank],
        rows_max,
        cols_max,
        gathered(per_rank_rows, rows_max),
        gathered(per_rank_cols, cols_max),
    )


# ---- the loss on a shard ------------------------------------------------------------------------------------
def gather_shard(emb: Embeddings, shard: Shard) -> Embeddings:
    """Every rank's padded embeddings in rank order: q (world * rows_max, D); t, v, type ids, has-image
    (world * cols_max, ...). The open_clip ``gather_features`` recipe (:func:`querylife.losses.gather_features`) with
    all five packed into one all-gather, so a step costs one collective forward and one backward (each is a sync
    point of all ranks): gradients flow back to every rank's q, t and v, summed over ranks. The identity in one
    process. Example: ``g = gather_shard(emb, shard); g.t.shape  # (world * cols_max, D)``.
    """
    n = max(shard.rows_max, shard.cols_max)

    def rows(x: torch.Tensor) -> torch.Tensor:  # (k, c) -> (n, c), zero rows appended
        return F.pad(x, (0, 0, 0, n - x.shape[0]))

    d = emb.q.shape[1]
    ids = torch.stack([emb.type_ids.to(emb.t.dtype), emb.has_image.to(emb.t.dtype)], 1)  # (cols_max, 2), exact
    packed = torch.cat([rows(emb.q), rows(emb.t), rows(emb.v), rows(ids)], 1)  # (n, 3D + 2)
    every = all_gather_rows(packed).view(-1, n, 3 * d + 2)  # (world, n, 3D + 2)
    q = every[:, : shard.rows_max, :d].reshape(-1, d)  # (world * rows_max, D)
    products = every[:, : shard.cols_max].reshape(-1, 3 * d + 2)  # (world * cols_max, 3D + 2)
    type_ids = products[:, 3 * d].detach().round().to(emb.type_ids.dtype)
    has_image = products[:, 3 * d + 1].detach() > 0.5
    return Embeddings(q, products[:, d : 2 * d], products[:, 2 * d : 3 * d], type_ids, has_image)


def _positions(gathered: np.ndarray, ids: np.ndarray) -> torch.Tensor:
    """Gathered position of each global id in ``ids``."""
    inverse = np.full(int(gathered.max()) + 1 if len(gathered) else 0, -1, dtype=np.int64)
    valid = gathered >= 0
    inverse[gathered[valid]] = np.nonzero(valid)[0]
    return torch.from_numpy(inverse[ids])


def _lookup(mask: torch.Tensor | None, rows: np.ndarray, cols: np.ndarray, pad: bool) -> torch.Tensor:
    """``mask[rows][:, cols]`` (bool; all False when ``mask`` is None) with ``pad`` where a row or column id is -1."""
    r, c = np.nonzero(rows >= 0)[0], np.nonzero(cols >= 0)[0]
    out = torch.full((len(rows), len(cols)), pad, dtype=torch.bool)
    if mask is None:
        out[torch.from_numpy(r)[:, None], torch.from_numpy(c)[None, :]] = False
        return out
    sub = mask[torch.from_numpy(rows[r])][:, torch.from_numpy(cols[c])]
    out[torch.from_numpy(r)[:, None], torch.from_numpy(c)[None, :]] = sub
    return out


def _ce_sum(
    logits: torch.Tensor, target: torch.Tensor, off: torch.Tensor, extra: torch.Tensor | None, multi: bool
) -> torch.Tensor:
    """Summed (multi-positive) cross-entropy of rows ``logits`` (R, C) with positive column ``target`` (R,); ``off``
    (R, C): cells that are not negatives (the target is never off); ``extra`` (R, C): extra positives."""
    rows = torch.arange(len(target), device=logits.device)
    off = off.clone()
    off[rows, target] = False
    logits = logits.masked_fill(off, float("-inf"))  # (R, C)
    if not multi:
        return F.cross_entropy(logits, target, reduction="sum")
    positive = torch.zeros_like(off)
    positive[rows, target] = True
    if extra is not None:
        positive |= extra & ~off
    log_prob = logits - torch.logsumexp(logits, dim=1, keepdim=True)
    log_prob = log_prob.masked_fill(~positive, 0.0)
    return -(log_prob.sum(1) / positive.sum(1)).sum()


def _sigmoid_sum(
    sim: torch.Tensor,
    scale: torch.Tensor,
    bias: torch.Tensor,
    target: torch.Tensor,
    off: torch.Tensor,
    extra: torch.Tensor | None,
) -> torch.Tensor:
    """Summed SigLIP pair losses of rows ``sim`` (R, C): positive ``target`` and ``extra``; ``off`` cells dropped."""
    rows = torch.arange(len(target), device=sim.device)
    positive = torch.zeros_like(off)
    positive[rows, target] = True
    off = off & ~positive
    if extra is not None:
        positive = positive | extra
    labels = 2 * positive.to(sim.dtype) - 1
    per_pair = -F.logsigmoid(labels * (sim * scale + bias))  # (R, C)
    return per_pair.masked_fill(off, 0.0).sum()


def sharded_alignment_loss(
    emb: Embeddings,
    shard: Shard,
    masks: BatchMasks,
    config: LossConfig,
    fusion: nn.Module,
    logit_scale: torch.Tensor,
    logit_bias: torch.Tensor | None = None,
) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """This rank's share of :func:`querylife.losses.alignment_loss` on the global batch.

    ``emb``: this rank's padded embeddings (q (rows_max, D); t, v (cols_max, D)); ``masks``: the *global* batch's
    masks (ignore / extra_positive (M, Cg), product_ignore (Cg, Cg)). Returns the rank's loss (its rows' summed term
    losses over the global row counts, weighted: the sum over ranks is the single-process loss) and each term's
    share (detached). Example: ``loss, parts = sharded_alignment_loss(emb, shard, masks, cfg.loss, fusion, scale)``.
    """
    dev = emb.q.device
    gathered = gather_shard(emb, shard)  # q (W*rows_max, D); t, v, ids (W*cols_max, ...)
    n_rows, n_cols = len(shard.rows), len(shard.cols)
    m = int((shard.gathered_rows >= 0).sum())
    cg = int((shard.gathered_cols >= 0).sum())
    gr, gc = shard.gathered_rows, shard.gathered_cols
    multi = masks.extra_positive is not None and bool(masks.extra_positive.any())
    infonce, sym = config.kind == "infonce", config.kind == "infonce" and config.symmetric
    if not infonce and logit_bias is None:
        raise ValueError("the sigmoid loss needs a logit_bias")
    # Query terms: this rank's queries against every product; its positives against every query (symmetric).
    row_target = _positions(gc, shard.rows).to(dev)  # (B,) gathered column of each row's positive
    row_off = _lookup(masks.ignore, shard.rows, gc, True).to(dev)  # (B, W*cols_max)
    row_extra = _lookup(masks.extra_positive, shard.rows, gc, False).to(dev) if multi else None
    col_target = _positions(gr, shard.rows).to(dev)  # (B,) gathered row of each positive's query
    col_off = _lookup(masks.ignore, gr, shard.rows, True).T.to(dev)  # (B, W*rows_max)
    col_extra = _lookup(masks.extra_positive, gr, shard.rows, False).T.to(dev) if multi else None

    q = emb.q[:n_rows]  # (B, D)
    pos = slice(0, n_rows)  # this rank's positives are its first columns

    def query_sims(name: str) -> tuple[torch.Tensor, torch.Tensor | None]:
        g = gathered
        if name == "query_fused":
            rows = fusion.pairwise(q, g.t, g.v, g.type_ids, g.has_image).scores  # (B, W*cols_max)
            cols = None
            if sym:
                cols = fusion.pairwise(g.q, emb.t[pos], emb.v[pos], emb.type_ids[pos], emb.has_image[pos]).scores.T
            return rows, cols  # cols: (B, W*rows_max)
        other, mine = (g.t, emb.t) if name == "query_title" else (g.v, emb.v)
        return q @ other.T, (mine[pos] @ g.q.T if sym else None)

    total = torch.zeros((), device=dev)
    parts: dict[str, torch.Tensor] = {}
    for name in TERMS:
        weight = getattr(config, name)
        if weight == 0:
            continue
        if name == "title_image":
            lc = shard.cols  # this rank's products (positives and hard negatives) as rows
            target = _positions(gc, lc).to(dev)  # (Bp,)
            off = _lookup(masks.product_ignore, lc, gc, True).to(dev)  # (Bp, W*cols_max)
            t_rows = emb.t[:n_cols] @ gathered.v.T  # (Bp, W*cols_max)
            if infonce:
                term = _ce_sum(t_rows * logit_scale, target, off, None, False)
                if sym:
                    v_rows = emb.v[:n_cols] @ gathered.t.T  # (Bp, W*cols_max)
                    v_off = _lookup(masks.product_ignore, gc, lc, True).T.to(dev)
                    term = (term + _ce_sum(v_rows * logit_scale, target, v_off, None, False)) / 2
            else:
                term = _sigmoid_sum(t_rows, logit_scale, logit_bias, target, off, None)
            term = term / cg
        else:
            rows_sim, cols_sim = query_sims(name)
            if infonce:
                term = _ce_sum(rows_sim * logit_scale, row_target, row_off, row_extra, multi)
                if sym:
                    term = (term + _ce_sum(cols_sim * logit_scale, col_target, col_off, col_extra, multi)) / 2
            else:
                term = _sigmoid_sum(rows_sim, logit_scale, logit_bias, row_target, row_off, row_extra)
            term = term / m
        total = total + weight * term
        parts[name] = term.detach()
    return total, parts


# ---- the step -----------------------------------------------------------------------------------------------
class ShardedLoss(nn.Module):
    """What DDP wraps: this rank's embeddings and share of the loss, so that every parameter the loss touches (towers,
    heads, fusion, temperature) is used inside the DDP forward and its gradient is averaged over ranks.

    Returns ``(loss * world_size, loss, parts)``: the first is what backward runs on (DDP divides the summed
    gradients by the world size; the all-gather's backward has already summed every rank's share into each rank's
    embeddings), the others are for logging.
    """

    def __init__(self, model: nn.Module, loss: LossConfig, world_size: int):
        super().__init__()
        self.model, self.loss, self.world_size = model, loss, world_size

    def forward(
        self, inputs: dict[str, Any], shard: Shard, masks: BatchMasks
    ) -> tuple[torch.Tensor, torch.Tensor, dict[str, torch.Tensor]]:
        model = self.model
        emb = model.embed(**inputs)  # q (rows_max, D); t, v (cols_max, D)
        total, parts = sharded_alignment_loss(
            emb, shard, masks, self.loss, model.fusion, model.logit_scale, model.logit_bias
        )
        return total * self.world_size, total.detach(), parts


def distributed_step(step: TrainStep, env: DistEnv, batches: EpochBatches) -> DistributedTrainStep:
    """The :class:`DistributedTrainStep` of a single-process ``step`` (same model, inputs, masks, optimiser,
    scheduler, gate hold and clipping)."""
    return DistributedTrainStep(step, env, batches)


class DistributedTrainStep:
    """One optimiser step of one rank on its shard of a global batch: inputs, global masks, DDP forward (embed,
    gather, sharded loss), backward, then the single-process step's gate hold, clipping, optimiser and scheduler.
    Returns the same :class:`~querylife.train.StepOutput` as one process on the global batch (loss and terms
    summed over ranks; rows and columns of the global batch)."""

    def __init__(self, step: TrainStep, env: DistEnv, batches: EpochBatches):
        from torch.nn.parallel import DistributedDataParallel

        self.step, self.env, self.batches = step, env, batches
        self.module = ShardedLoss(step.model, step.loss, env.world_size)
        # static_graph: the same parameters take part in every step (a mode or loss may leave some out, e.g.
        # logit_bias under infonce; DDP learns which from the first step instead of searching the graph each step).
        self.ddp = DistributedDataParallel(self.module, static_graph=True)

    def __call__(self, batch: TrainBatch, global_step: int) -> StepOutput:
        import time

        from .train import mask_counts

        s, env = self.step, self.env
        t0 = time.perf_counter()
        shard = shard_batch(self.batches.negative_counts(batch.index), env.world_size, env.rank)
        index = [batch.index[i] for i in shard.padded_rows]
        inputs = s.inputs.for_rows(index, batch.product_rows[shard.padded_cols])
        t1 = time.perf_counter()
        masks = s.masks(batch)  # the global batch's: (M, Cg), (Cg, Cg); CPU
        counts = mask_counts(masks)
        t2 = time.perf_counter()
        logit_scale = float(s.model.logit_scale.detach())  # at the forward pass, as the single-process step logs it
        loss, value, parts = self.ddp(inputs, shard, masks)
        s.optimizer.zero_grad(set_to_none=True)
        loss.backward()  # DDP averages the gradients over ranks here
        s.update(global_step)
        names = [n for n in TERMS if n in parts]
        summed = env.all_sum([float(value), *(float(parts[n]) for n in names)])
        t3 = time.perf_counter()
        terms = dict(zip(names, summed[1:], strict=True))
        return s.output(batch, global_step, summed[0], terms, logit_scale, counts, (t0, t1, t2, t3))
