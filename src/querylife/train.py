"""Single-process training loop: AdamW, warm-up + cosine, clipping, dev early stopping, atomic resumable checkpoints.

Example::

    data = prepare_dataset("demo/catalog.parquet", "demo/pairs.parquet")
    result = Trainer(load_config(), data, "runs/exp1").fit()
    result.model  # best model on dev NDCG@10, also saved in runs/exp1/best/
"""

from __future__ import annotations

import copy
import json
import math
import random
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch
from tqdm.auto import tqdm

from . import __version__
from .checkpoint import (
    atomic_write_dir,
    atomic_write_text,
    load_training_state,
    recover_dir,
    save_training_state,
)
from .config import ExperimentConfig
from .data.prepare import Dataset, training_positive
from .data.samplers import UniqueBatchSampler
from .losses import alignment_loss
from .metrics import per_query_metrics
from .model import GATE_GROUPS, QueryLifeModel
from .scoring import FeatureCache, score_pairs
from .towers import TextTower, VisionTower

# A hook that adds negatives to ignore for a batch: (queries, product rows) -> (B, B) bool. GenFilt plugs in here.
NegativeMaskFn = Callable[[list[str], np.ndarray], torch.Tensor]


@dataclass
class TrainResult:
    """What a finished (or early-stopped) run produced."""

    model: QueryLifeModel
    run_dir: Path
    best_epoch: int
    best_dev_ndcg: float
    history: list[dict[str, Any]] = field(default_factory=list)
    seconds: float = 0.0


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def resolve_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(name)


def cosine_with_warmup(total_steps: int, warmup_steps: int) -> Callable[[int], float]:
    def factor(step: int) -> float:
        if step < warmup_steps:
            return (step + 1) / max(1, warmup_steps)
        progress = (step - warmup_steps) / max(1, total_steps - warmup_steps)
        return 0.5 * (1.0 + math.cos(math.pi * min(1.0, progress)))

    return factor


def dev_ndcg(model: QueryLifeModel, data: Dataset, pairs: pd.DataFrame, cache: FeatureCache, batch_size: int) -> float:
    """Mean NDCG@10 over the queries of ``pairs`` (the early-stopping criterion)."""
    scored = pairs.assign(score=score_pairs(model, data, pairs, cache, batch_size).score)
    return float(np.nanmean(per_query_metrics(scored)["ndcg@10"]))


class Trainer:
    """Trains a ``QueryLifeModel`` on a ``Dataset``'s train split, selecting on its dev split."""

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
    ):
        self.config = config
        self.data = data
        self.run_dir = Path(run_dir)
        self.cache = cache or FeatureCache()
        self.progress = progress
        self.negative_mask_fn = negative_mask_fn
        self.max_steps = max_steps  # stop after this many optimiser steps (tests simulate a crash with it)
        tc = config.train
        if tc.num_threads:
            torch.set_num_threads(tc.num_threads)
        self.device = resolve_device(tc.device)
        seed_everything(tc.seed)
        model_cfg = config.model.model_copy(update={"product_types": data.product_types})
        self.model = QueryLifeModel(model_cfg, towers=towers).to(self.device)
        train = data.splits["train"]
        keep = training_positive(train, config.data.include_partial_positives)
        self.train_pairs = train[keep].reset_index(drop=True)
        if self.train_pairs.empty:
            raise ValueError("the train split has no positive pairs to learn from")
        self.queries = self.train_pairs["query"].tolist()
        self.rows = data.rows(self.train_pairs["product_id"])
        self.known_positive = set(zip(train.loc[keep, "query"], train.loc[keep, "product_id"], strict=True))
        # Hard negatives: each query's own labelled non-positive candidates (e.g. partial matches), so that the
        # batch also holds negatives of the query's type and not only the easy other-type ones.
        negatives = train[~keep]
        neg_rows = pd.Series(list(data.rows(negatives["product_id"])), index=negatives.index, dtype="int64")
        pools = neg_rows.groupby(negatives["query"].to_numpy()).agg(lambda r: r.to_numpy())
        empty = np.zeros(0, dtype=np.int64)
        self.neg_pool = [pools.get(q, empty) for q in self.queries]
        groups = data.catalog["group_id"] if "group_id" in data.catalog.columns else None
        self.groups = None if groups is None else groups.fillna("").astype(str).to_numpy()
        self.type_ids = self.model.type_ids(data.catalog["product_type"].tolist()).cpu()
        if self.negative_mask_fn is None and config.train.false_negative_judge != "none":
            from .genfilt.training import build_negative_mask_fn

            self.negative_mask_fn = build_negative_mask_fn(config, data, self.model.text_tower)
        self.sampler = UniqueBatchSampler(
            self.queries, self.train_pairs["product_id"].tolist(), tc.batch_size, seed=tc.seed, drop_last=False
        )
        self._prepare_features()

    # ---- inputs -----------------------------------------------------------------------------------------
    def _prepare_features(self) -> None:
        m = self.model
        self.title_feats = self.query_feats = None
        if m.text_tower.frozen:
            self.title_feats = self.cache.text(
                m, self.data.product_texts(), progress=self.progress, desc="encoding titles (frozen tower, once)"
            )
        q_tower = m.query_tower or m.text_tower
        if q_tower.frozen:
            uniq = list(dict.fromkeys(self.queries))
            feats = self.cache.text(m, uniq, role="query", progress=self.progress, desc="encoding queries (once)")
            index = {q: i for i, q in enumerate(uniq)}
            self.query_feats = feats[[index[q] for q in self.queries]]  # (n_train_pairs, d)
        self.image_feats = None  # (n_products, d_v) for a frozen pretrained vision tower, encoded once
        if self.cache.caches_images(m):
            self.image_feats = self.cache.images(
                m, self.data.images, self.data.has_image, progress=self.progress, desc="encoding images (once)"
            )

    def product_rows(self, batch: list[int], epoch: int, step: int) -> np.ndarray:
        """Catalogue rows of the batch's products: its B positives, then up to ``hard_negatives`` per pair.

        The draw is seeded by (seed, epoch, step), so a resumed run sees the same hard negatives.
        """
        rows = self.rows[batch]
        k = self.config.train.hard_negatives
        if k <= 0:
            return rows
        rng = np.random.default_rng([self.config.train.seed, epoch, step])
        extra = [rng.choice(pool, size=min(k, len(pool)), replace=False) for pool in (self.neg_pool[i] for i in batch)]
        return np.concatenate([rows, *extra]) if extra else rows

    def negative_mask(self, batch: list[int], product_rows: np.ndarray | None = None) -> torch.Tensor:
        """(B, Bp) bool: columns that are not negatives for a row's query (never the diagonal): what the data says,
        plus the false-negative judge's flags when ``train.false_negative_action`` is "drop"."""
        return self.batch_masks(batch, product_rows)[0]

    def batch_masks(
        self, batch: list[int], product_rows: np.ndarray | None = None
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        """``(ignore, extra_positive)``, both (B, Bp) bool; ``extra_positive`` is None unless the judge's flags
        become positives (``train.false_negative_action="positive"``)."""
        lc = self.config.loss
        rows = self.rows[batch]
        cols = rows if product_rows is None else product_rows
        queries = [self.queries[i] for i in batch]
        pids = self.data.catalog["product_id"].to_numpy()[cols]
        mask = torch.zeros(len(batch), len(cols), dtype=torch.bool)
        if lc.mask_same_product:
            mask |= torch.from_numpy(rows[:, None] == cols[None, :])
        if lc.mask_labelled_positives:
            known = [[(q, p) in self.known_positive for p in pids] for q in queries]
            mask |= torch.tensor(known, dtype=torch.bool)
        if lc.mask_same_group and self.groups is not None:
            g, gc = self.groups[rows], self.groups[cols]
            mask |= torch.from_numpy((g[:, None] == gc[None, :]) & (g[:, None] != ""))
        if self.negative_mask_fn is None:
            return mask, None
        flagged = self.negative_mask_fn(queries, cols).to(torch.bool).cpu()
        if self.config.train.false_negative_action == "positive":
            return mask, flagged & ~mask
        return mask | flagged, None

    def batch_inputs(self, batch: list[int], product_rows: np.ndarray) -> dict[str, Any]:
        """The model's keyword inputs for a batch: cached tower features where frozen, else raw texts/pixels."""
        rows = torch.from_numpy(product_rows)
        dev = self.device
        kwargs: dict[str, Any] = {
            "type_ids": self.type_ids[rows].to(dev),
            "has_image": self.data.has_image[rows].to(dev),
        }
        if self.query_feats is not None:
            kwargs["query_features"] = self.query_feats[batch].to(dev)
        else:
            kwargs["queries"] = [self.queries[i] for i in batch]
        if self.title_feats is not None:
            kwargs["title_features"] = self.title_feats[rows].to(dev)
        else:
            kwargs["titles"] = self.data.product_texts(rows.numpy())
        if self.image_feats is not None:
            kwargs["image_features"] = self.image_feats[rows].to(dev)
        else:
            kwargs["images"] = self.data.images[rows].to(dev)
        return kwargs

    # ---- checkpoints ------------------------------------------------------------------------------------
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
        }

    def _save_best(self, summary: dict[str, Any]) -> None:
        def write(tmp: Path) -> None:
            self.model.save_pretrained(tmp)
            (tmp / "summary.json").write_text(json.dumps(summary, indent=2, default=float) + "\n")
            (tmp / "README.md").write_text(model_card(summary))

        atomic_write_dir(self.run_dir / "best", write)

    def _save_last(self, optimizer, scheduler, state: dict[str, Any]) -> None:
        atomic_write_dir(
            self.run_dir / "last", lambda tmp: save_training_state(tmp, self.model, optimizer, scheduler, state)
        )

    @staticmethod
    def _lr_factors(
        optimizer: torch.optim.Optimizer, total: int, warmup_fraction: float, gate_start: int
    ) -> list[Callable[[int], float]]:
        """One schedule per parameter group: warm-up + cosine for all; the gate groups (:data:`GATE_GROUPS`) get
        factor 0 before step ``gate_start`` (held at their init, i.e. mean fusion) and their own warm-up + cosine
        over the remaining steps."""
        main = cosine_with_warmup(total, int(warmup_fraction * total))
        late = cosine_with_warmup(total - gate_start, int(warmup_fraction * (total - gate_start)))

        def gate(step: int) -> float:
            return 0.0 if step < gate_start else late(step - gate_start)

        return [gate if gate_start and g.get("name") in GATE_GROUPS else main for g in optimizer.param_groups]

    # ---- loop -------------------------------------------------------------------------------------------
    def fit(self, *, resume: bool = False) -> TrainResult:
        """Train; with ``resume`` continue from ``run_dir/last`` (a killed run) if it exists."""
        tc, model = self.config.train, self.model
        start_time = time.time()
        optimizer = torch.optim.AdamW(model.parameter_groups(tc.lr, tc.weight_decay, tc.gate_lr_multiplier), lr=tc.lr)
        steps_per_epoch = len(self.sampler)
        total = steps_per_epoch * tc.epochs
        gate_start = int(tc.gate_start_fraction * total)  # steps before it the gate is held (no lr, no gradient)
        scheduler = torch.optim.lr_scheduler.LambdaLR(
            optimizer, self._lr_factors(optimizer, total, tc.warmup_fraction, gate_start)
        )
        held = [p for g in optimizer.param_groups if g.get("name") in GATE_GROUPS for p in g["params"]]
        state = {
            "epoch": 0,
            "step_in_epoch": 0,
            "global_step": 0,
            "best_dev": -1.0,
            "best_epoch": -1,
            "bad_epochs": 0,
            "history": [],
        }
        last = self.run_dir / "last"
        for name in ("last", "best"):
            recover_dir(self.run_dir / name)
        if resume and last.exists():
            state = load_training_state(last, model, optimizer, scheduler)
            print(f"resuming from {last} at epoch {state['epoch'] + 1}, step {state['step_in_epoch']}")
        elif resume:
            print(f"nothing to resume in {self.run_dir}: starting a new run")
        self.run_dir.mkdir(parents=True, exist_ok=True)
        atomic_write_text(
            self.run_dir / "config.json", json.dumps(self.config.model_dump(mode="json"), indent=2) + "\n"
        )
        best_state = copy.deepcopy(model.trainable_state_dict()) if state["best_epoch"] < 0 else None
        dev = self.data.splits["dev"]
        while state["epoch"] < tc.epochs and not state.get("stopped_early"):
            epoch = state["epoch"]
            self.sampler.set_epoch(epoch)
            batches = list(self.sampler)
            model.train()
            bar = tqdm(
                batches[state["step_in_epoch"] :],
                desc=f"epoch {epoch + 1}/{tc.epochs}",
                disable=not self.progress,
                leave=False,
            )
            # Running sums live in the checkpointed state so a resumed epoch reports the loss of all its steps.
            for batch in bar:
                prod_rows = self.product_rows(batch, epoch, state["step_in_epoch"])
                out = self.model(**self.batch_inputs(batch, prod_rows))
                mask, extra = self.batch_masks(batch, prod_rows)  # (B, Bp) each
                mask = mask.to(self.device)
                extra = None if extra is None else extra.to(self.device)
                same = torch.from_numpy(prod_rows[:, None] == prod_rows[None, :]).to(self.device)  # (Bp, Bp)
                loss = alignment_loss(
                    out.sims, self.config.loss, out.logit_scale, out.logit_bias, mask, same, extra_positive=extra
                )
                optimizer.zero_grad(set_to_none=True)
                loss.total.backward()
                if state["global_step"] < gate_start:
                    # Held gate: no gradient at all, so that it neither enters the clipping norm nor fills AdamW's
                    # moments; until the gate starts, training is exactly mean fusion's.
                    for p in held:
                        p.grad = None
                if tc.grad_clip > 0:
                    torch.nn.utils.clip_grad_norm_(model.parameters(), tc.grad_clip)
                optimizer.step()
                scheduler.step()
                state["loss_sum"] = state.get("loss_sum", 0.0) + loss.parts["total"]
                state["loss_steps"] = state.get("loss_steps", 0) + 1
                state["step_in_epoch"] += 1
                state["global_step"] += 1
                bar.set_postfix(loss=f"{loss.parts['total']:.3f}", T=f"{1 / float(out.logit_scale.detach()):.3f}")
                if tc.save_every_steps and state["global_step"] % tc.save_every_steps == 0:
                    self._save_last(optimizer, scheduler, state)
                if self.max_steps is not None and state["global_step"] >= self.max_steps:
                    raise TrainingInterrupted(state["global_step"])
            score = dev_ndcg(model, self.data, dev, self.cache, tc.eval_batch_size) if len(dev) else float("nan")
            record = {
                "epoch": epoch + 1,
                "train_loss": state.get("loss_sum", 0.0) / max(1, state.get("loss_steps", 0)),
                "dev_ndcg@10": score,
                "temperature": 1 / float(model.logit_scale.detach()),
                "seconds": round(time.time() - start_time, 2),
            }
            if held:  # gated modes: whether this epoch's weights include any gate training
                record["gate_trained"] = state["global_step"] > gate_start
            if hasattr(self.negative_mask_fn, "epoch_stats"):
                record["false_negatives"] = self.negative_mask_fn.epoch_stats()
            state["history"].append(record)
            if self.progress:
                fn = record.get("false_negatives")
                masked = f"  masked {fn['masked_negatives']} negatives ({fn['judge']})" if fn else ""
                print(f"epoch {epoch + 1}: loss {record['train_loss']:.4f}  dev NDCG@10 {score:.4f}{masked}")
            if score > state["best_dev"] or not len(dev):
                state.update(best_dev=score, best_epoch=epoch + 1, bad_epochs=0)
                best_state = copy.deepcopy(model.trainable_state_dict())
                self._save_best(self._summary(epoch + 1, score, state["history"]))
            else:
                state["bad_epochs"] += 1
            state.update(epoch=epoch + 1, step_in_epoch=0, loss_sum=0.0, loss_steps=0)
            # Recorded in the checkpoint so that --resume of an early-stopped run does not train on.
            state["stopped_early"] = bool(tc.patience and state["bad_epochs"] >= tc.patience)
            self._save_last(optimizer, scheduler, state)
            if state["stopped_early"]:
                if self.progress:
                    print(f"early stopping: no dev gain in {tc.patience} epochs (best epoch {state['best_epoch']})")
                break
        if best_state is None:  # resumed after the best epoch: reload it from disk
            best = QueryLifeModel.from_pretrained(self.run_dir / "best").trainable_state_dict()
            best_state = best
        model.load_state_dict(best_state, strict=False)
        model.eval()
        return TrainResult(
            model, self.run_dir, state["best_epoch"], state["best_dev"], state["history"], time.time() - start_time
        )


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
