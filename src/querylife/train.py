"""Single-process training: one step (:meth:`Trainer.training_step`) and a loop around it (AdamW, warm-up + cosine,
the gate hold, clipping, dev early stopping, atomic resumable checkpoints).

The parts, each with one job: the batches of an epoch and their masks (:mod:`querylife.batches`), the model's
inputs for a batch (:class:`BatchInputs`: cached frozen-tower features), one optimiser step (:class:`TrainStep` ->
:class:`StepOutput`), the schedule and the gate hold (:mod:`querylife.schedule`), the resumable counters
(:class:`TrainState`), the run directory's checkpoints (:class:`Checkpoints`). A false-negative judge is built by the
caller (:func:`querylife.genfilt.training.build_negative_mask_fn`) and passed in. N processes
(``torchrun -m querylife.train``, ``querylife train --nproc N``): :mod:`querylife.distributed`, docs/SCALE.md.

Example::

    data = prepare_dataset("demo/catalog.parquet", "demo/pairs.parquet")
    result = Trainer(load_config(), data, "runs/exp1").fit()
    result.model  # best model on dev NDCG@10, also saved in runs/exp1/best/
"""

from __future__ import annotations

import copy
import json
import random
import time
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd
import torch
from tqdm.auto import tqdm

from . import __version__
from .batches import EpochBatches, NegativeMaskFn, NegativeMasks, TrainBatch, TrainingPairs
from .checkpoint import (
    atomic_write_dir,
    atomic_write_text,
    load_training_state,
    recover_dir,
    save_training_state,
)
from .config import ExperimentConfig
from .data.prepare import Dataset
from .gate_fit import TypeWeightFit, fit_type_weights
from .losses import TERMS, BatchMasks, LossConfig, LossOutput, alignment_loss
from .metrics import per_query_metrics
from .missing_image import MissingImageFit, fit_missing_images
from .model import QueryLifeModel
from .query_offset import QueryOffsetFit, fit_query_offset, offset_message
from .schedule import GateHold, cosine_with_warmup
from .scoring import FeatureCache, score_pairs
from .towers import TextTower, VisionTower

if TYPE_CHECKING:
    from .distributed import DistEnv

__all__ = [
    "BatchInputs",
    "Checkpoints",
    "NegativeMaskFn",
    "StepOutput",
    "TrainResult",
    "TrainState",
    "TrainStep",
    "Trainer",
    "TrainingInterrupted",
    "cosine_with_warmup",
    "dev_ndcg",
    "model_card",
    "resolve_device",
    "seed_everything",
]


@dataclass
class TrainResult:
    """What a finished (or early-stopped) run produced."""

    model: QueryLifeModel
    run_dir: Path
    best_epoch: int
    best_dev_ndcg: float
    history: list[dict[str, Any]] = field(default_factory=list)
    seconds: float = 0.0
    type_weights: TypeWeightFit | None = None  # dev_type_gate: the per-type image weights chosen on dev
    missing_images: MissingImageFit | None = None  # missing_image="type_mean": the photos averaged per type
    query_offset: QueryOffsetFit | None = None  # model.query_offset: the reference products kept


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def resolve_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(name)


def dev_ndcg(model: QueryLifeModel, data: Dataset, pairs: pd.DataFrame, cache: FeatureCache, batch_size: int) -> float:
    """Mean NDCG@10 over the queries of ``pairs`` (the early-stopping criterion)."""
    scored = pairs.assign(score=score_pairs(model, data, pairs, cache, batch_size).score)
    return float(np.nanmean(per_query_metrics(scored)["ndcg@10"]))


# ---- one step -----------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class StepOutput:
    """What one training step did.

    ``total``: the loss; ``query_fused`` .. ``title_image``: each term's unweighted value (None: the term is off);
    ``logit_scale``: 1 / temperature at the forward pass; ``rows`` B and ``columns`` Bp of the score matrix;
    ``masked_negatives``: off-diagonal cells left out of the query terms; ``extra_positives``: cells a judge made
    positives; ``gate_held``: the gate got no gradient; ``*_seconds``: model inputs, masks (judge included), and
    forward + loss + backward + update.
    """

    step: int
    total: float
    query_fused: float | None
    query_title: float | None
    query_image: float | None
    title_image: float | None
    logit_scale: float
    rows: int
    columns: int
    masked_negatives: int
    extra_positives: int
    gate_held: bool
    data_seconds: float
    mask_seconds: float
    model_seconds: float

    @property
    def temperature(self) -> float:
        return 1 / self.logit_scale

    @property
    def terms(self) -> dict[str, float]:
        """The computed terms by name."""
        return {n: v for n in TERMS if (v := getattr(self, n)) is not None}


class BatchInputs:
    """The model's keyword inputs for a batch: cached tower features where a tower is frozen (computed once here),
    else raw texts / pixels (the small CNN always gets pixels); product types and has-image always."""

    def __init__(
        self,
        model: QueryLifeModel,
        data: Dataset,
        pairs: TrainingPairs,
        cache: FeatureCache,
        device: torch.device,
        *,
        progress: bool = False,
    ):
        self.data, self.pairs, self.device = data, pairs, device
        self.type_ids = model.type_ids(data.catalog["product_type"].tolist()).cpu()
        self.title_feats = self.query_feats = None
        if model.text_tower.frozen:
            self.title_feats = cache.text(
                model, data.product_texts(), progress=progress, desc="encoding titles (frozen tower, once)"
            )
        q_tower = model.query_tower or model.text_tower
        if q_tower.frozen:
            uniq = list(dict.fromkeys(pairs.queries))
            feats = cache.text(model, uniq, role="query", progress=progress, desc="encoding queries (once)")
            index = {q: i for i, q in enumerate(uniq)}
            self.query_feats = feats[[index[q] for q in pairs.queries]]  # (n_train_pairs, d)
        self.image_feats = None  # (n_products, d_v) for a frozen pretrained vision tower, encoded once
        cache.share_trunks(model)  # a partly trained tower: its frozen trunk is computed once per image and process
        if cache.caches_images(model):
            self.image_feats = cache.images(
                model, data.images, data.has_image, progress=progress, desc="encoding images (frozen tower, once)"
            )

    def __call__(self, batch: TrainBatch) -> dict[str, Any]:
        return self.for_rows(batch.index, batch.product_rows)

    def for_rows(self, index: list[int], product_rows: np.ndarray) -> dict[str, Any]:
        """Inputs for training pairs ``index`` (B) against catalogue rows ``product_rows`` (Bp)."""
        rows = torch.from_numpy(product_rows)
        dev = self.device
        kwargs: dict[str, Any] = {
            "type_ids": self.type_ids[rows].to(dev),
            "has_image": self.data.has_image[rows].to(dev),
        }
        if self.query_feats is not None:
            kwargs["query_features"] = self.query_feats[index].to(dev)
        else:
            kwargs["queries"] = [self.pairs.queries[i] for i in index]
        if self.title_feats is not None:
            kwargs["title_features"] = self.title_feats[rows].to(dev)
        else:
            kwargs["titles"] = self.data.product_texts(rows.numpy())
        if self.image_feats is not None:
            kwargs["image_features"] = self.image_feats[rows].to(dev)
        else:
            kwargs["images"] = self.data.images[rows].to(dev)
        return kwargs


def mask_counts(masks: BatchMasks) -> tuple[int, int]:
    """Off-diagonal cells a batch's masks leave out of the query terms, and cells a judge made positives."""
    masked = int(masks.ignore.sum() - masks.ignore.diagonal().sum())
    extra = 0 if masks.extra_positive is None else int(masks.extra_positive.sum())
    return masked, extra


class TrainStep:
    """One optimiser step on one batch: inputs, masks, embeddings, loss, backward, the gate hold, clipping, the
    optimiser and scheduler steps. Training and the benchmarks run this and nothing else.

    Example::

        out = step(batch, global_step=0)  # StepOutput: out.total, out.query_fused, out.masked_negatives, ...
    """

    def __init__(
        self,
        model: QueryLifeModel,
        inputs: BatchInputs,
        masks: NegativeMasks,
        loss: LossConfig,
        optimizer: torch.optim.Optimizer,
        scheduler: torch.optim.lr_scheduler.LRScheduler,
        hold: GateHold,
        *,
        grad_clip: float = 0.0,
    ):
        self.model, self.inputs, self.masks, self.loss = model, inputs, masks, loss
        self.optimizer, self.scheduler, self.hold, self.grad_clip = optimizer, scheduler, hold, grad_clip

    def __call__(self, batch: TrainBatch, global_step: int) -> StepOutput:
        t0 = time.perf_counter()
        inputs = self.inputs(batch)
        t1 = time.perf_counter()
        masks = self.masks(batch)  # (B, Bp) ignore / extra positives, (Bp, Bp) same product; CPU
        counts = mask_counts(masks)
        t2 = time.perf_counter()
        loss, scale = self.forward_backward(inputs, masks.to(self.inputs.device))
        self.update(global_step)
        t3 = time.perf_counter()
        parts = loss.parts
        return self.output(batch, global_step, parts["total"], parts, float(scale.detach()), counts, (t0, t1, t2, t3))

    def update(self, global_step: int) -> None:
        """After the backward pass: the gate hold, gradient clipping, the optimiser and the scheduler steps (the
        multi-process step runs the same)."""
        self.hold.clear_gradients(self.optimizer, global_step)
        if self.grad_clip > 0:
            torch.nn.utils.clip_grad_norm_(self.model.parameters(), self.grad_clip)
        self.optimizer.step()
        self.scheduler.step()

    def output(
        self,
        batch: TrainBatch,
        global_step: int,
        total: float,
        terms: dict[str, Any],
        logit_scale: float,
        counts: tuple[int, int],
        times: tuple[float, float, float, float],
    ) -> StepOutput:
        """The :class:`StepOutput` of a step: its loss and terms, the masks' counts (:func:`mask_counts`) and the
        times at its start, after the inputs, after the masks and at its end."""
        t0, t1, t2, t3 = times
        return StepOutput(
            step=global_step,
            total=total,
            **{n: terms.get(n) for n in TERMS},
            logit_scale=logit_scale,
            rows=batch.size,
            columns=len(batch.product_rows),
            masked_negatives=counts[0],
            extra_positives=counts[1],
            gate_held=self.hold.is_held(global_step),
            data_seconds=t1 - t0,
            mask_seconds=t2 - t1,
            model_seconds=t3 - t2,
        )

    def forward_backward(self, inputs: dict[str, Any], masks: BatchMasks) -> tuple[LossOutput, torch.Tensor]:
        """Embeddings, loss and the parameters' gradients (zeroed first) of one batch; returns the loss and the logit
        scale of the forward pass. :class:`querylife.gradcache.GradCacheStep` does this in sub-batches."""
        model = self.model
        emb = model.embed(**inputs)  # q (B, D); t, v (Bp, D)
        scale = model.logit_scale
        loss = alignment_loss(emb, masks, self.loss, model.fusion, scale, model.logit_bias)
        self.optimizer.zero_grad(set_to_none=True)
        loss.total.backward()
        return loss, scale


# ---- the loop's state and checkpoints ---------------------------------------------------------------------------
@dataclass
class TrainState:
    """The loop's resumable counters (saved in ``last/trainer_state.json``). ``loss_sum`` / ``loss_steps`` run over
    the current epoch, so that a resumed epoch reports the loss of all its steps; ``stopped_early`` keeps
    ``--resume`` of an early-stopped run from training on."""

    epoch: int = 0
    step_in_epoch: int = 0
    global_step: int = 0
    best_dev: float = -1.0
    best_epoch: int = -1
    bad_epochs: int = 0
    history: list[dict[str, Any]] = field(default_factory=list)
    loss_sum: float = 0.0
    loss_steps: int = 0
    stopped_early: bool = False

    @classmethod
    def from_dict(cls, state: dict[str, Any]) -> TrainState:
        known = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in state.items() if k in known})

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    def add_step(self, loss: float) -> None:
        self.loss_sum += loss
        self.loss_steps += 1
        self.step_in_epoch += 1
        self.global_step += 1

    def observe_dev(self, score: float, has_dev: bool, patience: int, *, eligible: bool = True) -> bool:
        """Book the epoch's dev score and close the epoch; True when it is the best so far (or there is no dev).
        An epoch that is not ``eligible`` (a gated mode's epoch inside the gate hold, with
        ``train.select_after_gate``) can be neither the best nor a bad epoch for patience."""
        best = eligible and (score > self.best_dev or not has_dev)
        if best:
            self.best_dev, self.best_epoch, self.bad_epochs = score, self.epoch + 1, 0
        elif eligible:
            self.bad_epochs += 1
        self.epoch, self.step_in_epoch, self.loss_sum, self.loss_steps = self.epoch + 1, 0, 0.0, 0
        self.stopped_early = bool(patience and self.bad_epochs >= patience)
        return best


class Checkpoints:
    """A run directory: ``config.json``, ``best/`` (model + summary + card) and ``last/`` (+ optimiser, scheduler,
    RNG and :class:`TrainState`), each written atomically; a half-written one is recovered on start."""

    def __init__(self, run_dir: str | Path):
        self.run_dir = Path(run_dir)

    @property
    def last(self) -> Path:
        return self.run_dir / "last"

    def recover(self) -> None:
        """Finish or roll back a checkpoint that a killed run left half-written."""
        for name in ("last", "best"):
            recover_dir(self.run_dir / name)

    def write_config(self, config: ExperimentConfig) -> None:
        self.run_dir.mkdir(parents=True, exist_ok=True)
        text = json.dumps(config.model_dump(mode="json"), indent=2) + "\n"
        atomic_write_text(self.run_dir / "config.json", text)

    def load_last(self, model, optimizer, scheduler) -> TrainState | None:
        """The state of ``last/`` restored into model, optimiser, scheduler and RNG; None when there is none."""
        if not self.last.exists():
            return None
        return TrainState.from_dict(load_training_state(self.last, model, optimizer, scheduler))

    def save_last(self, model, optimizer, scheduler, state: TrainState) -> None:
        atomic_write_dir(self.last, lambda tmp: save_training_state(tmp, model, optimizer, scheduler, state.to_dict()))

    def save_best(self, model: QueryLifeModel, summary: dict[str, Any]) -> None:
        def write(tmp: Path) -> None:
            model.save_pretrained(tmp)
            (tmp / "summary.json").write_text(json.dumps(summary, indent=2, default=float) + "\n")
            (tmp / "README.md").write_text(model_card(summary))

        atomic_write_dir(self.run_dir / "best", write)

    def best_weights(self) -> dict[str, torch.Tensor]:
        return QueryLifeModel.from_pretrained(self.run_dir / "best").trainable_state_dict()


# ---- the trainer ------------------------------------------------------------------------------------------------
class Trainer:
    """Trains a ``QueryLifeModel`` on a ``Dataset``'s train split, selecting on its dev split.

    ``negative_mask_fn``: the false-negative judge (``train.false_negative_judge``), built by the caller with
    :func:`querylife.genfilt.training.build_negative_mask_fn`; required when the config names one.
    ``dist``: this rank of a torchrun job (:func:`querylife.distributed.init_distributed`); ``train.batch_size`` is
    then per rank, the steps run on a global batch of world_size * batch_size, and rank 0 alone evaluates,
    checkpoints and logs (docs/SCALE.md). None (or one rank): the single-process trainer.

    Example::

        judge = build_negative_mask_fn(config, data, text_tower)  # None for false_negative_judge=none
        trainer = Trainer(config, data, "runs/exp1", negative_mask_fn=judge)
        out = trainer.training_step(next(trainer.batches.epoch(0)))  # one step by hand (benchmarks), or:
        result = trainer.fit()
    """

    def __init__(
        self,
        config: ExperimentConfig,
        data: Dataset,
        run_dir: str | Path,
        *,
        cache: FeatureCache | None = None,
        towers: tuple[TextTower, TextTower | None, VisionTower | None] | None = None,
        negative_mask_fn: NegativeMaskFn | None = None,
        progress: bool = True,
        max_steps: int | None = None,
        dist: DistEnv | None = None,
    ):
        tc = config.train
        if negative_mask_fn is None and tc.false_negative_judge != "none":
            raise ValueError(
                f"train.false_negative_judge={tc.false_negative_judge!r} but no judge was passed: build it with "
                "querylife.genfilt.training.build_negative_mask_fn(config, data, text_tower) and pass it as "
                "Trainer(..., negative_mask_fn=...)"
            )
        self.config = config
        self.data = data
        self.run_dir = Path(run_dir)
        self.cache = cache or FeatureCache()
        self.dist = dist if dist is not None and dist.world_size > 1 else None
        self.is_main = self.dist is None or self.dist.is_main
        self.progress = progress and self.is_main  # bars and logs on rank 0 only
        self.max_steps = max_steps  # stop after this many optimiser steps (tests simulate a crash with it)
        if tc.num_threads:
            torch.set_num_threads(tc.num_threads)
        self.device = resolve_device(tc.device) if self.dist is None else self.dist.device(tc.device)
        # Seeded right before the trainable parts are built, so that a run's numbers do not depend on what ran before.
        seed_everything(tc.seed)
        model_cfg = config.model.model_copy(update={"product_types": data.product_types})
        self.model = QueryLifeModel(model_cfg, towers=towers).to(self.device)
        self.pairs = TrainingPairs(data, config.data.include_partial_positives)
        world = 1 if self.dist is None else self.dist.world_size
        # N ranks: every rank builds the same global batch of N * batch_size pairs and trains on its slice.
        self.batches = EpochBatches(
            data, self.pairs, tc.batch_size * world, seed=tc.seed, hard_negatives=tc.hard_negatives
        )
        self.masks = NegativeMasks.for_training(config, data, self.pairs, negative_mask_fn)
        self.inputs = BatchInputs(self.model, data, self.pairs, self.cache, self.device, progress=self.progress)
        self.steps_per_epoch = len(self.batches)
        self.total_steps = self.steps_per_epoch * tc.epochs
        self.hold = GateHold.from_fraction(tc.gate_start_fraction, self.total_steps)
        # An epoch counts as gate-trained (select_after_gate) after half an epoch of gate steps, not one: epoch lengths
        # vary with the sampler's packing, so the hold can end a few steps before an epoch does, and that epoch is mean
        # fusion plus a few gate steps at warm-up learning rate (issue 14: 5 of 9 small-CNN gate runs selected one).
        # Capped at half the gate's steps, so that a late hold still leaves eligible epochs.
        self.min_gate_steps = max(1, min(self.steps_per_epoch // 2, (self.total_steps - self.hold.start_step) // 2))
        groups = self.model.parameter_groups(tc.lr, tc.weight_decay, tc.gate_lr_multiplier)
        self.optimizer = torch.optim.AdamW(groups, lr=tc.lr)
        factors = self.hold.lr_factors(self.optimizer, self.total_steps, tc.warmup_fraction)
        self.scheduler = torch.optim.lr_scheduler.LambdaLR(self.optimizer, factors)
        self.step = TrainStep(
            self.model, self.inputs, self.masks, config.loss, self.optimizer, self.scheduler, self.hold,
            grad_clip=tc.grad_clip,
        )
        if self.dist is not None and tc.grad_cache_chunk:
            raise ValueError(
                "train.grad_cache_chunk does not combine with several processes yet (docs/GRAD_CACHE.md): "
                "use one process with a gradient cache, or N processes without it"
            )
        if self.dist is not None:
            from .distributed import distributed_step

            self.step = distributed_step(self.step, self.dist, self.batches)
        elif tc.grad_cache_chunk:  # one batch's gradient in sub-batches of this many pairs (querylife.gradcache)
            from .gradcache import GradCacheStep

            self.step = GradCacheStep.from_step(self.step, tc.grad_cache_chunk)
        self.checkpoints = Checkpoints(self.run_dir)
        self.state = TrainState()

    # ---- views kept for callers of the earlier API --------------------------------------------------------------
    @property
    def negative_mask_fn(self) -> NegativeMaskFn | None:
        """The false-negative judge in use (None without one)."""
        return self.masks.judge

    @property
    def sampler(self):
        """The batch sampler (``len(trainer.sampler)``: steps per epoch)."""
        return self.batches.sampler

    @property
    def queries(self) -> list[str]:
        return self.pairs.queries

    @property
    def rows(self) -> np.ndarray:
        return self.pairs.rows

    @property
    def neg_pool(self) -> list[np.ndarray]:
        return self.pairs.neg_pool

    @property
    def known_positive(self) -> set:
        return self.pairs.known_positive

    def product_rows(self, batch: list[int], epoch: int, step: int) -> np.ndarray:
        """Catalogue rows of sampler batch ``batch``'s columns (:meth:`EpochBatches.product_rows`)."""
        return self.batches.product_rows(batch, epoch, step)

    def negative_mask(self, batch: list[int], product_rows: np.ndarray | None = None) -> torch.Tensor:
        """(B, Bp) bool: columns that are not negatives for a row's query (the diagonal included)."""
        return self.batch_masks(batch, product_rows)[0]

    def batch_masks(
        self, batch: list[int], product_rows: np.ndarray | None = None
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        """``(ignore, extra_positive)`` of :meth:`NegativeMasks.query_masks` for sampler batch ``batch``."""
        rows = self.pairs.rows[batch]
        cols = rows if product_rows is None else product_rows
        return self.masks.query_masks([self.pairs.queries[i] for i in batch], rows, cols)

    # ---- one step ---------------------------------------------------------------------------------------------
    def training_step(self, batch: TrainBatch) -> StepOutput:
        """One optimiser step on ``batch`` at the current global step (the gate hold and the schedule follow it)."""
        out = self.step(batch, self.state.global_step)
        self.state.add_step(out.total)
        return out

    # ---- the loop ---------------------------------------------------------------------------------------------
    def fit(self, *, resume: bool = False) -> TrainResult:
        """Train; with ``resume`` continue from ``run_dir/last`` (a killed run) if it exists."""
        start_time = time.time()
        self._begin(resume)
        best_state = copy.deepcopy(self.model.trainable_state_dict()) if self.state.best_epoch < 0 else None
        epochs = self.config.train.epochs
        while self.state.epoch < epochs and not self.state.stopped_early:
            self._train_epoch()
            if self._end_epoch(start_time):
                best_state = copy.deepcopy(self.model.trainable_state_dict())
        if best_state is None:  # resumed after the best epoch: reload it from disk
            best_state = self.checkpoints.best_weights()
        self.model.load_state_dict(best_state, strict=False)
        self.model.eval()
        st = self.state
        missing = self._fit_missing_images()  # first: the dev fit of dev_type_gate then sees the filled vectors
        type_weights = self._fit_type_weights()
        offset = self._fit_query_offset()  # last: the reference is scored with everything fitted before it
        if (missing or type_weights or offset) and self.is_main:  # best/ gets what was fitted (every rank the same)
            summary = self._summary(st.best_epoch, st.best_dev, st.history)
            fitted = {"missing_images": missing, "type_weights": type_weights, "query_offset": offset}
            summary.update({key: asdict(fit) for key, fit in fitted.items() if fit is not None})
            self.checkpoints.save_best(self.model, summary)
        return TrainResult(
            self.model, self.run_dir, st.best_epoch, st.best_dev, st.history, time.time() - start_time, type_weights,
            missing, offset,
        )

    def _fit_query_offset(self) -> QueryOffsetFit | None:
        """``model.query_offset``: the reference catalogue sample each query's offset is measured on (None when the
        model has none; :meth:`fit` saves it into ``best/``)."""
        if getattr(self.model, "query_offset", None) is None:
            return None
        fit = fit_query_offset(self.model, self.data, self.cache, batch_size=self.config.train.eval_batch_size,
                               seed=self.config.train.seed, dev=self.data.splits["dev"])  # fmt: skip
        if self.progress:
            print(offset_message(fit))
        return fit

    def _fit_missing_images(self) -> MissingImageFit | None:
        """``missing_image="type_mean"``: each type's vector for photo-less products from the selected epoch's
        training products (None otherwise; :meth:`fit` saves it into ``best/``)."""
        if not hasattr(self.model.fusion, "missing_ready"):  # missing_image="title", or a title / image mode
            return None
        fit = fit_missing_images(self.model, self.data, self.data.splits["train"], self.cache,
                                 batch_size=self.config.train.eval_batch_size)  # fmt: skip
        if self.progress:
            kept = f"; title only for {', '.join(fit.title_only)}" if fit.title_only else ""
            print(f"products without a photo: {fit.filled} of {len(self.data.catalog)} "
                  f"({fit.filled / max(len(self.data.catalog), 1):.1%}) get their type's mean photo vector{kept}")
        return fit

    def _fit_type_weights(self) -> TypeWeightFit | None:
        """``dev_type_gate``: pick each type's image weight on dev for the selected epoch's vectors (None for other
        modes, or without a dev split; :meth:`fit` saves them into ``best/``)."""
        dev = self.data.splits["dev"]
        if self.config.model.fusion.mode != "dev_type_gate" or not len(dev):
            return None
        fit = fit_type_weights(self.model, self.data, dev, self.cache, batch_size=self.config.train.eval_batch_size)
        if self.progress:
            moved = ", ".join(f"{m['type']} {m['from']:.1f}->{m['to']:.1f}" for m in fit.moves) or "none moved"
            gain = f"{fit.dev_ndcg_before:.4f} -> {fit.dev_ndcg_after:.4f}"
            print(f"dev image weights per type: {moved}; dev NDCG@10 {gain}")
        return fit

    def _begin(self, resume: bool) -> None:
        """Recover half-written checkpoints, restore ``last/`` when resuming, write ``config.json``."""
        ckpt = self.checkpoints
        if self.is_main:
            ckpt.recover()
        self._sync()  # every rank reads last/ once rank 0 has recovered it
        if resume:
            state = ckpt.load_last(self.model, self.optimizer, self.scheduler)
            if state is not None:
                self.state = state
                self._log(f"resuming from {ckpt.last} at epoch {state.epoch + 1}, step {state.step_in_epoch}")
            else:
                self._log(f"nothing to resume in {self.run_dir}: starting a new run")
        if self.is_main:
            ckpt.write_config(self.config)
        if self.dist is not None:
            d, b = self.dist, self.config.train.batch_size
            self._log(
                f"distributed: {d.world_size} ranks ({d.backend}); train.batch_size {b} per rank, global batch "
                f"{b * d.world_size} (negatives gathered from all ranks)"
            )

    def _log(self, message: str) -> None:
        if self.is_main:
            print(message)

    def _sync(self) -> None:
        """Wait for every rank (a no-op in one process)."""
        if self.dist is not None:
            self.dist.barrier()

    def _train_epoch(self) -> None:
        tc, st = self.config.train, self.state
        self.model.train()
        bar = tqdm(
            self.batches.epoch(st.epoch, st.step_in_epoch),
            total=len(self.batches.sampler.batches(st.epoch)) - st.step_in_epoch,
            desc=f"epoch {st.epoch + 1}/{tc.epochs}",
            disable=not self.progress,
            leave=False,
        )
        for batch in bar:
            out = self.training_step(batch)
            bar.set_postfix(loss=f"{out.total:.3f}", T=f"{out.temperature:.3f}")
            if tc.save_every_steps and st.global_step % tc.save_every_steps == 0:
                if self.is_main:
                    self.checkpoints.save_last(self.model, self.optimizer, self.scheduler, st)
                self._sync()
            if self.max_steps is not None and st.global_step >= self.max_steps:
                raise TrainingInterrupted(st.global_step)

    def evaluate_dev(self) -> float:
        """Dev NDCG@10 of the model as it is (NaN without a dev split)."""
        dev = self.data.splits["dev"]
        if not len(dev):
            return float("nan")
        return dev_ndcg(self.model, self.data, dev, self.cache, self.config.train.eval_batch_size)

    def _end_epoch(self, start_time: float) -> bool:
        """Evaluate on dev, record the epoch, save ``best/`` if it is the best and ``last/``; True when best."""
        tc, st = self.config.train, self.state
        epoch = st.epoch
        score = self.evaluate_dev() if self.is_main else float("nan")
        if self.dist is not None:  # rank 0's score on every rank: one early-stopping decision, identical states
            score = self.dist.broadcast_float(score)
        record: dict[str, Any] = {
            "epoch": epoch + 1,
            "train_loss": st.loss_sum / max(1, st.loss_steps),
            "dev_ndcg@10": score,
            "temperature": 1 / float(self.model.logit_scale.detach()),
            "seconds": round(time.time() - start_time, 2),
        }
        if self.hold.held_parameters(self.optimizer):  # gated modes: whether this epoch's weights include gate training
            record["gate_trained"] = st.global_step - self.hold.start_step >= self.min_gate_steps
        if hasattr(self.negative_mask_fn, "epoch_stats"):
            record["false_negatives"] = self.negative_mask_fn.epoch_stats()
        st.history.append(record)
        if self.progress:
            fn = record.get("false_negatives")
            masked = f"  masked {fn['masked_negatives']} negatives ({fn['judge']})" if fn else ""
            print(f"epoch {epoch + 1}: loss {record['train_loss']:.4f}  dev NDCG@10 {score:.4f}{masked}")
        # A gated mode's epoch inside the hold is mean fusion: selecting it would report mean fusion under the gate's
        # name (issue 14), so with select_after_gate only epochs that include gate training compete.
        eligible = not (tc.select_after_gate and record.get("gate_trained") is False)
        best = st.observe_dev(score, bool(len(self.data.splits["dev"])), tc.patience, eligible=eligible)
        if self.is_main:
            if best:
                self.checkpoints.save_best(self.model, self._summary(epoch + 1, score, st.history))
            self.checkpoints.save_last(self.model, self.optimizer, self.scheduler, st)
        self._sync()
        if st.stopped_early and self.progress:
            print(f"early stopping: no dev gain in {tc.patience} epochs (best epoch {st.best_epoch})")
        return best

    def _summary(self, best_epoch: int, best_dev: float, history: list[dict]) -> dict[str, Any]:
        d = self.data
        return {
            "querylife_version": __version__,
            "best_epoch": best_epoch,
            "dev_ndcg@10": best_dev,
            "history": history,
            "data": {
                "n_products": len(d.catalog),
                "n_pairs": len(d.pairs),
                "label_scheme": d.label_scheme.name,
                "splits": {k: {"pairs": len(v), "queries": int(v["query"].nunique())} for k, v in d.splits.items()},
                "product_types": d.product_types,
                "products_with_image": int(d.has_image.sum()),
            },
            "config": self.config.model_dump(mode="json"),
        } | self._distributed_summary()

    def _distributed_summary(self) -> dict[str, Any]:
        if self.dist is None:
            return {}
        b, w = self.config.train.batch_size, self.dist.world_size
        return {"distributed": {"world_size": w, "batch_size_per_rank": b, "global_batch_size": b * w}}


class TrainingInterrupted(RuntimeError):
    """Raised when ``max_steps`` is reached mid-run (used to test resuming)."""

    def __init__(self, step: int):
        super().__init__(f"training interrupted at step {step}")
        self.step = step


def model_card(summary: dict[str, Any]) -> str:
    """A short Markdown model card for a checkpoint directory."""
    cfg = summary["config"]
    data = summary["data"]
    lines = [
        "# querylife checkpoint",
        "",
        f"- querylife {summary['querylife_version']}; best epoch {summary['best_epoch']}; "
        f"dev NDCG@10 {summary['dev_ndcg@10']:.4f}",
        f"- text tower: `{cfg['model']['tower']['text_model']}`; "
        f"vision tower: `{cfg['model']['tower']['vision_model']}`",
        f"- fusion: `{cfg['model']['fusion']['mode']}`; loss: `{cfg['loss']['kind']}` with weights "
        + ", ".join(f"{k} {cfg['loss'][k]}" for k in ("query_fused", "query_title", "query_image", "title_image")),
        f"- data: {data['n_products']} products, {data['n_pairs']} labelled pairs ({data['label_scheme']} labels), "
        f"types: {', '.join(data['product_types'])}",
        "",
        "Load with `QueryLifeModel.from_pretrained(path)`. Weights: `model.safetensors`; config: `config.json`;",
        "frozen pretrained towers are not copied: `config.json` names their source.",
        "",
    ]
    return "\n".join(lines)


if __name__ == "__main__":  # torchrun --nproc_per_node N -m querylife.train --out ... (docs/SCALE.md)
    from querylife.distributed import main

    main()
