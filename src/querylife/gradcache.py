"""A gradient-cache training step: the gradient of a large contrastive batch in the memory of a small one.

Gao et al. 2021, "Scaling Deep Contrastive Learning Batch Size under Memory Limited Setup" (GradCache): a contrastive
loss couples every query with every product of the batch, so the batch cannot simply be split into accumulated
micro-batches. But the loss only needs the embeddings, which are small. :class:`GradCacheStep` therefore

1. embeds the batch in sub-batches **without** a graph (no activations kept), saving each sub-batch's RNG state;
2. computes the full-batch loss (every term, the masks, the fusion gate, the temperature) on those embeddings, as
   leaves, and backpropagates it: the loss's own parameters (gate, logit scale / bias) get their gradients here,
   and each embedding gets its gradient ("the cache");
3. re-embeds each sub-batch **with** a graph under the same RNG state (dropout replays exactly) and backpropagates
   its cached embedding gradient into the towers and heads, one sub-batch's activations at a time;

then the gate hold, clipping, AdamW and the schedule run exactly as in :class:`~querylife.train.TrainStep`. The
result equals the plain step within float tolerance, at the cost of one extra forward pass of the towers.

Sub-batches: ``chunk`` pairs of queries each (the last one may be smaller); the product columns (Bp >= B, hard
negatives included) are split into the same number of nearly equal parts. Layers whose output depends on the other
samples of their batch (batch norm in training mode, as in the small CNN) see sub-batch statistics, like batch norm
under DDP without SyncBatchNorm: the step is then the plain step at batch ``chunk`` for those layers; their running
statistics are updated once per sub-batch (by the recompute; the graph-free pass's updates are rolled back).

Single process only: with several ranks this raises (see docs/GRAD_CACHE.md).

Example::

    trainer = Trainer(with_overrides(config, {"train.grad_cache_chunk": 64}), data, "runs/big")  # or by hand:
    step = GradCacheStep.from_step(trainer.step, chunk=64)
    out = step(batch, global_step=0)  # the same StepOutput as the plain step
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from torch import nn

from .losses import BatchMasks, Embeddings, LossOutput, alignment_loss
from .train import TrainStep

__all__ = ["GradCacheStep", "RngState", "SubBatch", "sub_batches"]

#: The model inputs that have one row per query (B); every other input has one row per product column (Bp).
QUERY_INPUTS = ("queries", "query_features")


@dataclass(frozen=True)
class SubBatch:
    """Rows ``queries`` of the batch's B queries and ``products`` of its Bp product columns."""

    queries: slice
    products: slice


def sub_batches(n_queries: int, n_products: int, chunk: int) -> list[SubBatch]:
    """The sub-batches of a batch of ``n_queries`` pairs and ``n_products`` >= ``n_queries`` columns: queries in runs
    of ``chunk`` (the last may be shorter), products split into as many nearly equal runs (none empty).

    Example: ``sub_batches(10, 20, 4)`` -> queries 0:4, 4:8, 8:10; products 0:7, 7:14, 14:20.
    """
    if isinstance(chunk, bool) or not isinstance(chunk, int) or chunk < 1:
        raise ValueError(f"train.grad_cache_chunk must be a whole number >= 1 (0 turns the cache off), got {chunk!r}")
    if n_products < n_queries:
        raise ValueError(f"a batch needs at least as many product columns as queries, got {n_products} < {n_queries}")
    starts = list(range(0, n_queries, chunk))
    bounds = np.linspace(0, n_products, len(starts) + 1).round().astype(int)  # nearly equal, none empty
    return [
        SubBatch(slice(s, min(s + chunk, n_queries)), slice(int(bounds[i]), int(bounds[i + 1])))
        for i, s in enumerate(starts)
    ]


class RngState:
    """The random state (CPU, and the CUDA device's when it is one) at capture, to replay a sub-batch's dropout in
    its recompute exactly (GradCache's ``RandContext``). :meth:`replay` restores the state around it afterwards, so
    the step as a whole advances the generators once, as the plain step does."""

    def __init__(self, device: torch.device):
        self.cpu = torch.get_rng_state()
        self.cuda_devices = (
            [device.index if device.index is not None else torch.cuda.current_device()]
            if (device.type == "cuda")
            else []
        )
        self.cuda = [torch.cuda.get_rng_state(d) for d in self.cuda_devices]

    @contextlib.contextmanager
    def replay(self) -> Iterator[None]:
        with torch.random.fork_rng(devices=self.cuda_devices):
            torch.set_rng_state(self.cpu)
            for d, state in zip(self.cuda_devices, self.cuda, strict=True):
                torch.cuda.set_rng_state(state, d)
            yield


class _BatchNormStats:
    """The running statistics of the model's batch-norm layers in training mode, to undo the graph-free pass's
    update (the recompute updates them, once per sub-batch)."""

    def __init__(self, model: nn.Module):
        self.saved = [
            (m, {k: b.detach().clone() for k, b in m.named_buffers(recurse=False) if b is not None})
            for m in model.modules()
            if isinstance(m, nn.modules.batchnorm._BatchNorm) and m.training and m.track_running_stats
        ]

    def restore(self) -> None:
        with torch.no_grad():
            for module, buffers in self.saved:
                for name, value in buffers.items():
                    getattr(module, name).copy_(value)


def _slice_inputs(inputs: dict[str, Any], part: SubBatch) -> dict[str, Any]:
    return {k: v[part.queries if k in QUERY_INPUTS else part.products] for k, v in inputs.items()}


def _leaf(x: torch.Tensor) -> torch.Tensor:
    return x.detach().requires_grad_(x.is_floating_point())


class GradCacheStep(TrainStep):
    """:class:`~querylife.train.TrainStep` with the forward and backward done in sub-batches of ``chunk`` pairs
    (module docstring); the same :class:`~querylife.train.StepOutput`. ``chunk`` >= the batch size does the whole
    batch in one sub-batch (still two forward passes).

    Example::

        step = GradCacheStep.from_step(trainer.step, chunk=64)
        out = step(batch, global_step=0)
    """

    def __init__(self, *args: Any, chunk: int, **kwargs: Any):
        super().__init__(*args, **kwargs)
        self._setup(chunk)

    @classmethod
    def from_step(cls, step: TrainStep, chunk: int) -> GradCacheStep:
        """The gradient-cache version of ``step`` (same model, inputs, masks, loss, optimiser, schedule, hold)."""
        new = cls.__new__(cls)
        new.__dict__.update(step.__dict__)
        new._setup(chunk)
        return new

    def _setup(self, chunk: int) -> None:
        sub_batches(1, 1, chunk)
        import torch.distributed as dist

        if dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1:
            raise ValueError(
                "train.grad_cache_chunk does not combine with multi-process training yet: each rank would need its "
                "gathered-negative gradients and DDP's gradient reduction once per batch (docs/GRAD_CACHE.md); "
                "set train.grad_cache_chunk=0 or run one process"
            )
        self.chunk = chunk

    def forward_backward(self, inputs: dict[str, Any], masks: BatchMasks) -> tuple[LossOutput, torch.Tensor]:
        model = self.model
        n_q = len(next(inputs[k] for k in QUERY_INPUTS if k in inputs))
        parts = sub_batches(n_q, len(inputs["type_ids"]), self.chunk)
        chunk_inputs = [_slice_inputs(inputs, p) for p in parts]
        # 1. embeddings without a graph; the RNG state of each sub-batch, for its recompute
        rng: list[RngState] = []
        embs: list[Embeddings] = []
        bn = _BatchNormStats(model)
        with torch.no_grad():
            for kwargs in chunk_inputs:
                rng.append(RngState(model.device))
                embs.append(model.embed(**kwargs))
        bn.restore()
        emb = Embeddings(
            _leaf(torch.cat([e.q for e in embs])),  # (B, D)
            _leaf(torch.cat([e.t for e in embs])),  # (Bp, D)
            _leaf(torch.cat([e.v for e in embs])),  # (Bp, D)
            torch.cat([e.type_ids for e in embs]),  # (Bp,)
            torch.cat([e.has_image for e in embs]),  # (Bp,)
        )
        # 2. the full batch's loss: gradients of the loss's own parameters, and of every embedding (the cache)
        scale = model.logit_scale
        loss = alignment_loss(emb, masks, self.loss, model.fusion, scale, model.logit_bias)
        self.optimizer.zero_grad(set_to_none=True)
        loss.total.backward()
        # 3. each sub-batch again, with a graph, under its saved RNG state; its cached gradient backpropagated
        for part, kwargs, state in zip(parts, chunk_inputs, rng, strict=True):
            with state.replay():
                sub = model.embed(**kwargs)
            pairs = [
                (out, cached.grad[rows])
                for out, cached, rows in (
                    (sub.q, emb.q, part.queries),
                    (sub.t, emb.t, part.products),
                    (sub.v, emb.v, part.products),
                )
                if out.requires_grad and cached.grad is not None
            ]
            if pairs:
                torch.autograd.backward([o for o, _ in pairs], [g for _, g in pairs])
        return loss, scale
