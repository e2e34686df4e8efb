"""CrowdFlower Search Results Relevance: querylife against BM25, zero-shot MiniLM and sentence-transformers peers.

5-fold cross-validation grouped by query: the 200 queries are shuffled with a fixed seed and cut into 5 folds;
each fold is the test set once. The other 4 folds are training data, minus a seeded ~10% of their queries held
out as dev (used by querylife's trainer for its end-of-epoch check and by nothing else: with one epoch there is
nothing to select). Every method ranks each test query's own labelled candidates; metrics are NDCG@10 with
graded gains (median_relevance - 1), MRR (first relevant candidate) and pooled ROC-AUC of "relevant"
(median_relevance >= 3) against the rest, all from ``querylife.metrics.evaluate_scored``. Mean ± sample std over
the folds.

Methods (product text = "title | description", truncated to the same token budget for every neural method):

* ``bm25_title`` / ``bm25``: BM25 (bm25s, querylife.bm25.BM25Scorer) on the title / on title + description;
* ``zero_shot``: the untrained all-MiniLM-L6-v2 (the bundled copy), cosine(query, product text);
* ``st_mnrl`` / ``st_gist``: sentence-transformers fine-tuning of the same MiniLM with
  ``MultipleNegativesRankingLoss`` / ``GISTEmbedLoss`` (guide: a frozen copy of the untrained MiniLM);
* ``querylife`` / ``querylife_genfilt``: querylife's query-aware alignment trainer on the same tower (all layers
  trained, text-only fusion), without / with the GenFilt false-negative judge. No generative describer can run
  offline, so the judge is querylife's ``guide`` judge (GIST-style: the untrained MiniLM on raw titles).

All trained methods see exactly the same batches: the batches and the labelled hard negatives (median_relevance
1-2, one per pair where the query has one) are drawn by querylife's own trainer (UniqueBatchSampler: no query or
product twice in a batch, the NO_DUPLICATES rule) and fed to the sentence-transformers losses as an extra negative
column. Same epochs, batch size, learning rate, AdamW weight decay, warm-up + cosine schedule, gradient clipping,
max sequence length and seed for every trained method. The peers are trained by a plain PyTorch loop around the
sentence-transformers model and loss modules (``SentenceTransformerTrainer`` / ``model.fit`` need the
``datasets`` and ``accelerate`` packages, which querylife does not depend on).

Budget (CPU): product text truncated to 32 tokens and at most 12 relevant training pairs per query (a seeded
sample; every grade 1-2 pair stays in the hard-negative pools), one epoch, so that the whole run fits in about
30 minutes on 2 idle CPU cores (``--max-len`` / ``--max-positives`` / ``--epochs`` change it for every trained
method at once). On a CPU shared with another job, ``--threads 1`` is much faster than torch's default of one
thread per core (oversubscribed threads spin).

Run:

    python benchmarks/crowdflower.py --folds 5 --out benchmarks/results

Writes crowdflower.md (command, machine, data counts, settings, the table, who wins) and crowdflower.json
(per-fold numbers, runtimes and per-query NDCG@10). ``--only-folds 0`` runs a single fold (for timing).
"""

from __future__ import annotations

import argparse
import dataclasses
import gc
import json
import logging
import os
import random
import shutil
import sys
import time
from pathlib import Path
from typing import Any

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
import torch  # noqa: E402

from querylife.batches import EpochBatches  # noqa: E402
from querylife.bm25 import bm25_pair_scores  # noqa: E402
from querylife.config import load_config  # noqa: E402
from querylife.data.formats import load_format  # noqa: E402
from querylife.data.prepare import Dataset, to_dataset  # noqa: E402
from querylife.data.splits import kfold_by_query  # noqa: E402
from querylife.metrics import evaluate_scored, per_query_metrics  # noqa: E402
from querylife.report import md_table  # noqa: E402
from querylife.runinfo import command_line, machine_info  # noqa: E402
from querylife.scoring import FeatureCache, score_pairs  # noqa: E402
from querylife.towers import bundled_minilm_path  # noqa: E402
from querylife.train import Trainer, cosine_with_warmup, seed_everything  # noqa: E402

sys.path.insert(0, str(Path(__file__).parent))
from benchkit import fmt_mean_std, mean_std, quiet_transformers, run_header, write_results  # noqa: E402

DEFAULT_DATA = Path(__file__).resolve().parents[2] / "shared" / "data" / "crowdflower" / "search_relevance.csv"
TEXT_FIELDS = ("title", "description")
METHODS: dict[str, str] = {
    "bm25_title": "BM25 (bm25s) on the title",
    "bm25": "BM25 (bm25s) on title + description",
    "zero_shot": "untrained all-MiniLM-L6-v2, cosine",
    "st_mnrl": "sentence-transformers fine-tuning, MultipleNegativesRankingLoss",
    "st_gist": "sentence-transformers fine-tuning, GISTEmbedLoss (guide: untrained MiniLM)",
    "querylife": "querylife query-aware alignment, no false-negative judge",
    "querylife_genfilt": "querylife + GenFilt similarity judge (guide: untrained MiniLM on titles; no describer)",
    "querylife_raw": "the `querylife` row's model scored without its query offset (raw fused scores)",
}
TRAINED = ("st_mnrl", "st_gist", "querylife", "querylife_genfilt")
KEYS = ("ndcg@10", "mrr", "roc_auc")


# ---- data -----------------------------------------------------------------------------------------------
def fold_dataset(base: Dataset, fold: dict[str, pd.DataFrame], max_positives: int, seed: int) -> Dataset:
    """The fold's splits (from :func:`kfold_by_query`); the train split keeps every non-relevant pair (the
    hard-negative pools) and at most ``max_positives`` relevant pairs per query (a seeded sample; 0 keeps all)."""
    splits = dict(fold)
    train = splits["train"]
    if max_positives > 0:
        relevant = train["positive"].astype(bool)
        pos = train[relevant]
        shuffled = pos.iloc[np.random.default_rng(seed).permutation(len(pos))]
        chosen = shuffled.groupby("query", sort=False).head(max_positives).index
        splits["train"] = train[~relevant | train.index.isin(chosen)].reset_index(drop=True)
    return dataclasses.replace(base, splits=splits)


def metrics_of(test: pd.DataFrame, scores: np.ndarray) -> tuple[dict[str, float], dict[str, float]]:
    """Overall metrics of a fold's test pairs, and NDCG@10 per test query (for the pooled paired comparison)."""
    scored = test.assign(score=np.asarray(scores, dtype=float))
    result = evaluate_scored(scored, n_boot=0)
    pq = per_query_metrics(scored)
    return {k: float(result.overall[k]) for k in KEYS}, dict(zip(pq["query"], pq["ndcg@10"].astype(float), strict=True))


# ---- untrained baselines --------------------------------------------------------------------------------
def load_st(max_len: int):
    from sentence_transformers import SentenceTransformer

    model = SentenceTransformer(str(bundled_minilm_path()), device="cpu")
    model.max_seq_length = max_len
    return model


@torch.no_grad()
def st_scores(model, data: Dataset, pairs: pd.DataFrame, batch_size: int) -> np.ndarray:
    """cosine(query, product text) with a SentenceTransformer, each distinct text encoded once."""
    model.eval()
    rows = data.rows(pairs["product_id"])
    uniq, pos = np.unique(rows, return_inverse=True)
    queries = list(dict.fromkeys(pairs["query"]))
    q_index = {q: i for i, q in enumerate(queries)}
    kw = dict(batch_size=batch_size, convert_to_tensor=True, normalize_embeddings=True, show_progress_bar=False)
    p = model.encode(data.product_texts(uniq), **kw)  # (n_products, d)
    q = model.encode(queries, **kw)  # (n_queries, d)
    qi = torch.tensor([q_index[x] for x in pairs["query"]])
    return (q[qi] * p[torch.from_numpy(pos)]).sum(-1).double().cpu().numpy()


# ---- trained methods ------------------------------------------------------------------------------------
def querylife_config(args, judge: str):
    overrides = [
        "model.tower.text_model=minilm",
        "model.tower.train_text_layers=-1",
        f"model.tower.max_text_length={args.max_len}",
        "model.tower.vision_model=small_cnn",  # no product has an image: a tiny unused CNN, not Lite0
        "model.tower.small_cnn.image_size=8",
        "model.fusion.mode=title",
        f"model.embed_dim={args.embed_dim}",
        f"model.separate_query_projection={str(args.separate_query_projection).lower()}",
        "loss.query_title=0",
        "loss.query_image=0",
        "loss.title_image=0",
        f"data.text_fields=[{','.join(TEXT_FIELDS)}]",
        f"train.batch_size={args.batch_size}",
        f"train.epochs={args.epochs}",
        f"train.lr={args.lr}",
        f"train.seed={args.seed}",
        f"train.hard_negatives={args.hard_negatives}",
        "train.patience=0",
        f"train.eval_batch_size={args.eval_batch_size}",
        "train.device=cpu",
        f"train.false_negative_judge={judge}",
        f"train.protect_labelled_negatives={args.protect}",
        "genfilt.guide_model=minilm",
        f"model.query_offset.mode={args.query_offset}",
        f"model.query_offset.strength={args.offset_strength}",
    ]
    return load_config(None, overrides)


def run_querylife(args, data: Dataset, run_dir: Path, judge: str) -> tuple[np.ndarray, float, float, dict]:
    from querylife.genfilt.training import build_negative_mask_fn

    start = time.time()
    cfg = querylife_config(args, judge)
    mask_fn = build_negative_mask_fn(cfg, data) if judge != "none" else None  # counts labelled negatives it masks
    trainer = Trainer(cfg, data, run_dir, negative_mask_fn=mask_fn, progress=False)
    result = trainer.fit()
    train_s = time.time() - start
    start = time.time()
    scores = score_pairs(result.model, data, data.splits["test"], FeatureCache(), args.eval_batch_size).score
    eval_s = time.time() - start
    raw = None
    if getattr(result.model, "query_offset", None) is not None and result.model.query_offset.ready:
        result.model.query_offset.ref_valid.zero_()  # the same weights, scored without the offset: same ranking
        raw = score_pairs(result.model, data, data.splits["test"], FeatureCache(), args.eval_batch_size).score
    last = result.history[-1] if result.history else {}
    extra = {k: last[k] for k in ("train_loss", "dev_ndcg@10", "temperature", "false_negatives") if k in last}
    extra["steps"] = len(trainer.sampler) * args.epochs
    extra["_raw_scores"] = raw
    if result.query_offset is not None:  # the strength its dev split chose (0: raw scores kept)
        extra["offset_strength"] = result.query_offset.strength
    del trainer, result
    shutil.rmtree(run_dir, ignore_errors=True)  # checkpoints of a fully trained MiniLM: ~350 MB per run
    return scores, train_s, eval_s, extra


def batch_plan(args, data: Dataset) -> list[tuple[list[str], np.ndarray, int]]:
    """The querylife trainer's batches: (queries, product rows = B positives then hard negatives, B) per step."""
    plan = EpochBatches.from_config(data, querylife_config(args, "none"))
    return [(b.queries, b.product_rows, b.size) for b in plan.steps(args.epochs)]


def run_st(args, data: Dataset, plan, kind: str) -> tuple[np.ndarray, float, float, dict]:
    from sentence_transformers.sentence_transformer.losses import GISTEmbedLoss, MultipleNegativesRankingLoss
    from sentence_transformers.util import batch_to_device

    start = time.time()
    seed_everything(args.seed)
    model = load_st(args.max_len)
    if kind == "gist":
        guide = load_st(args.max_len)
        guide.requires_grad_(False)
        loss_fn: torch.nn.Module = GISTEmbedLoss(model, guide)
    else:
        loss_fn = MultipleNegativesRankingLoss(model)
    decay = [p for p in model.parameters() if p.requires_grad and p.ndim >= 2]
    no_decay = [p for p in model.parameters() if p.requires_grad and p.ndim < 2]
    optimizer = torch.optim.AdamW(
        [{"params": decay, "weight_decay": 0.01}, {"params": no_decay, "weight_decay": 0.0}], lr=args.lr
    )
    total = len(plan)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, cosine_with_warmup(total, int(0.05 * total)))
    texts = data.product_texts()
    model.train()
    losses = []
    for queries, rows, b in plan:
        cols = [queries, [texts[r] for r in rows[:b]]]
        if len(rows) > b:
            cols.append([texts[r] for r in rows[b:]])
        features = [batch_to_device(model.preprocess(c), model.device) for c in cols]
        loss = loss_fn(features, None)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        optimizer.step()
        scheduler.step()
        losses.append(float(loss.detach()))
    train_s = time.time() - start
    start = time.time()
    scores = st_scores(model, data, data.splits["test"], args.eval_batch_size)
    eval_s = time.time() - start
    extra = {"train_loss": float(np.mean(losses)) if losses else float("nan"), "steps": total}
    return scores, train_s, eval_s, extra


# ---- report ---------------------------------------------------------------------------------------------
def summarise(per_fold: dict[str, list[dict]]) -> dict[str, dict[str, Any]]:
    out = {}
    for m, runs in per_fold.items():
        if not runs:
            continue
        out[m] = {k: mean_std(r[k] for r in runs) for k in (*KEYS, "train_s", "eval_s")}
    return out


def verdict(summary: dict, per_fold: dict[str, list[dict]]) -> list[str]:
    """Who wins on NDCG@10, from the numbers: best querylife row vs best peer row, with per-fold differences."""
    ql = [m for m in ("querylife", "querylife_genfilt") if m in summary]
    peers = [m for m in ("st_mnrl", "st_gist") if m in summary]
    lines = []
    overall = max(summary, key=lambda m: summary[m]["ndcg@10"]["mean"])
    lines.append(f"- Best mean NDCG@10: `{overall}` ({summary[overall]['ndcg@10']['mean']:.4f}).")
    if not ql or not peers:
        return lines
    for key, name in (("ndcg@10", "NDCG@10"), ("mrr", "MRR"), ("roc_auc", "ROC-AUC")):
        bq = max(ql, key=lambda m, k=key: summary[m][k]["mean"])
        bp = max(peers, key=lambda m, k=key: summary[m][k]["mean"])
        diffs = np.array([a[key] - b[key] for a, b in zip(per_fold[bq], per_fold[bp], strict=True)])
        wins = int((diffs > 0).sum())
        sd = diffs.std(ddof=1) if len(diffs) > 1 else 0.0
        beats = "is ahead of" if diffs.mean() > 0 else "is not ahead of"
        lines.append(
            f"- {name}: the best querylife row `{bq}` {beats} the best peer `{bp}`: mean paired difference "
            f"{diffs.mean():+.4f} (sd {sd:.4f} over folds; querylife ahead on {wins} of {len(diffs)} folds)."
        )
    return lines


def paired_table(
    per_fold: dict[str, list[dict]], per_query: dict[str, dict[str, float]]
) -> tuple[list[str], dict[tuple[str, str], tuple[float, float, float]]]:
    """querylife rows against each peer on NDCG@10: per-fold paired differences, and per-query differences pooled
    over every test query of the folds run (each query is tested once) with a seeded 95% bootstrap interval."""
    ql = [m for m in ("querylife", "querylife_genfilt") if per_fold.get(m)]
    peers = [m for m in ("st_mnrl", "st_gist", "zero_shot", "bm25") if per_fold.get(m)]
    intervals: dict[tuple[str, str], tuple[float, float, float]] = {}
    if not ql or not peers:
        return [], intervals
    out = [
        "Paired NDCG@10 differences (querylife row minus the other method): per fold (mean ± sd, folds ahead) "
        "and per test query pooled over the folds (mean, 95% bootstrap interval over queries, queries "
        "ahead / behind).",
        "",
    ]
    header = ["querylife row", "vs", "per fold", "folds ahead", "per query", "95% interval", "queries ahead / behind"]
    rows = []
    rng = np.random.default_rng(0)
    for a in ql:
        for b in peers:
            fd = np.array([x["ndcg@10"] - y["ndcg@10"] for x, y in zip(per_fold[a], per_fold[b], strict=True)])
            qs = sorted(set(per_query[a]) & set(per_query[b]))
            qd = np.array([per_query[a][q] - per_query[b][q] for q in qs])
            qd = qd[np.isfinite(qd)]
            boot = qd[rng.integers(0, len(qd), size=(2000, len(qd)))].mean(1) if len(qd) else np.array([np.nan])
            lo, hi = np.percentile(boot, [2.5, 97.5])
            per_fold_diff = mean_std(fd)
            intervals[(a, b)] = (float(qd.mean()), float(lo), float(hi))
            rows.append(
                [
                    f"`{a}`",
                    f"`{b}`",
                    f"{per_fold_diff['mean']:+.4f} ± {per_fold_diff['std']:.4f}",
                    f"{int((fd > 0).sum())}/{len(fd)}",
                    f"{qd.mean():+.4f}",
                    f"[{lo:+.4f}, {hi:+.4f}]",
                    f"{int((qd > 0).sum())} / {int((qd < 0).sum())}",
                ]
            )
    return [*out, md_table(header, rows)], intervals


def context_notes(summary: dict, per_fold: dict[str, list[dict]], intervals: dict) -> list[str]:
    """Plain statements read off the numbers: significance of querylife vs the peers, and how far training moved
    the models from the untrained MiniLM."""
    out = []
    vs_peers = {k: v for k, v in intervals.items() if k[1] in ("st_mnrl", "st_gist")}
    if vs_peers:
        clear = [f"`{a}` vs `{b}` ({m:+.4f})" for (a, b), (m, lo, hi) in vs_peers.items() if lo > 0 or hi < 0]
        if clear:
            out.append("Paired differences against the peers whose 95% interval excludes 0: " + ", ".join(clear) + ".")
        else:
            out.append(
                f"None of the {len(vs_peers)} querylife-vs-peer NDCG@10 differences is distinguishable from noise: "
                "every per-query 95% interval includes 0. On this data and budget querylife does not beat the "
                "sentence-transformers peers; it ties with them."
            )
    zs = summary.get("zero_shot")
    trained = [m for m in TRAINED if m in summary]
    if zs and trained:
        dn = [summary[m]["ndcg@10"]["mean"] - zs["ndcg@10"]["mean"] for m in trained]
        da = [summary[m]["roc_auc"]["mean"] - zs["roc_auc"]["mean"] for m in trained]
        steps = [r["steps"] for m in trained for r in per_fold[m] if "steps" in r]
        out.append(
            f"Fine-tuning moved mean NDCG@10 by {min(dn):+.4f} to {max(dn):+.4f} and pooled ROC-AUC by "
            f"{min(da):+.4f} to {max(da):+.4f} from the untrained MiniLM"
            + (f", in {int(np.mean(steps))} optimiser steps per fold" if steps else "")
            + ". Pooled ROC-AUC also compares scores across queries (calibration), which contrastive training "
            "improves; NDCG@10 and MRR only rank within a query, where most candidates are relevant "
            "(MRR is near its ceiling) and the fine-tuned towers stay close to their start."
        )
    return out


def write_outputs(args, out: Path, meta: dict, per_fold: dict, per_query: dict, total_s: float) -> dict:
    summary = summarise(per_fold)
    table = md_table(
        ["method", "NDCG@10", "MRR", "ROC-AUC", "train s/fold", "eval s/fold"],
        [
            [f"`{m}`", *(fmt_mean_std(s[k]) for k in KEYS), f"{s['train_s']['mean']:.0f}", f"{s['eval_s']['mean']:.1f}"]
            for m, s in ((m, summary[m]) for m in METHODS if m in summary)
        ],
    )
    desc = [f"- `{m}`: {d}" for m, d in METHODS.items() if m in summary]
    genfilt_runs = per_fold.get("querylife_genfilt", [])
    judge = [r["false_negatives"] for r in genfilt_runs if isinstance(r.get("false_negatives"), dict)]
    judge_line = []
    if judge:
        masked = np.mean([j["masked_fraction"] for j in judge])
        judge_line = [
            f"GenFilt judge (`guide`): masked {masked:.2%} of the in-batch and hard negatives "
            f"({np.mean([j['masked_negatives'] for j in judge]):.0f} per fold-epoch), of which "
            f"{np.mean([j.get('masked_labelled_negatives', 0) for j in judge]):.0f} were labelled grade 1-2 for the "
            "row's own query (the judge overrode the label, as GISTEmbedLoss does); "
            f"{np.mean([j.get('protected_labelled_negatives', 0) for j in judge]):.0f} more flags were kept as "
            f"negatives by `train.protect_labelled_negatives={meta['settings'].get('protect', 'none')}`."
        ]
    paired, intervals = paired_table(per_fold, per_query)
    d = meta["data"]
    md = [
        "# CrowdFlower Search Results Relevance: querylife vs BM25, zero-shot and sentence-transformers peers",
        "",
        *run_header(meta),
        f"Total runtime: {total_s / 60:.1f} min (wall clock; timings are noisy when other jobs share the CPUs)."
        + (f"  \nRe-rendered from the run's JSON with `{meta['rendered_by']}`." if meta.get("rendered_by") else ""),
        "",
        f"Data: `{os.path.relpath(d['file'])}`: {d['pairs']} labelled pairs "
        f"({d['merged_duplicates']} duplicate judgements merged), "
        f"{d['queries']} queries, {d['products']} products; grades "
        + ", ".join(f"{g}: {n}" for g, n in d["grades"].items())
        + f"; relevant (grade >= 3): {d['positive_share']:.1%} of pairs.",
        "",
        f"Protocol: {meta['folds']}-fold cross-validation grouped by query (seeded shuffle of the queries, seed "
        f"{args.seed}); per fold ~{d['fold_queries']['train']:.0f} train / {d['fold_queries']['dev']:.0f} dev / "
        f"{d['fold_queries']['test']:.0f} test queries; training on {d['fold_train_positive_pairs']:.0f} relevant "
        f"pairs "
        f"(at most {args.max_positives or 'all'} per query, a seeded sample, to fit the CPU budget) and "
        f"{d['fold_train_negative_pairs']:.0f} grade 1-2 pairs (hard-negative pools) per fold. "
        "Each test query ranks only its own labelled candidates. NDCG@10 with graded gains (grade - 1), MRR of "
        "the first relevant candidate, ROC-AUC of relevant vs rest pooled over the test fold's pairs. "
        "Mean ± sample std over folds.",
        "",
        f"Training budget, the same for every trained method: {args.epochs} epoch(s), batch size "
        f"{args.batch_size}, lr {args.lr:g} (AdamW, weight decay 0.01 on matrices, 5% warm-up then cosine, "
        f'gradient clip 1.0), max sequence length {args.max_len} tokens of "title | description", seed '
        f"{args.seed}, identical batches (querylife's UniqueBatchSampler: no query or product twice in a batch) "
        f"and {args.hard_negatives} labelled hard negative(s) per pair (grade 1-2 candidates of the same query, "
        "where it has one) in every trained method. "
        f"querylife: all MiniLM layers trained, text-only fusion, embed_dim {args.embed_dim}, separate query "
        f"projection {args.separate_query_projection}, symmetric InfoNCE with learned temperature (init 0.05), "
        "labelled positives of other rows masked. Peers: sentence-transformers loss defaults (MNRL scale 20, "
        "query-to-document; GIST temperature 0.01, anchor-anchor and positive-positive contrasts on, margin 0).",
        "",
        table,
        "",
        *desc,
        "",
        "## Who wins",
        "",
        *verdict(summary, per_fold),
        "",
        *paired,
        "",
        *[x for note in context_notes(summary, per_fold, intervals) for x in (note, "")],
        *judge_line,
        "",
        "The GenFilt row uses querylife's GIST-style `guide` judge (the untrained MiniLM on raw titles): "
        "GenFilt's generative judge needs a describer (a vision-language or language model server), and none "
        "can run offline here.",
        "",
    ]
    notes = meta.get("notes")
    if notes:
        md += ["## Notes", "", *notes, ""]
    payload = {
        **meta,
        "total_seconds": round(total_s, 1),
        "summary": summary,
        "per_fold": per_fold,
        "per_query_ndcg@10": per_query,
    }
    write_results(out, "crowdflower", md, payload)
    return summary


def render_only(path: Path, out: Path) -> None:
    """Re-render a finished run's report from its JSON (no training; the numbers are the run's)."""
    saved = json.loads(path.read_text())
    args = argparse.Namespace(**saved["settings"])
    meta = {k: v for k, v in saved.items() if k not in ("total_seconds", "summary", "per_fold", "per_query_ndcg@10")}
    meta["rendered_by"] = command_line()
    write_outputs(args, out, meta, saved["per_fold"], saved["per_query_ndcg@10"], saved["total_seconds"])
    print(f"wrote {out / 'crowdflower.md'}")


# ---- main -----------------------------------------------------------------------------------------------
def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", default=str(DEFAULT_DATA), help="search_relevance.csv (CrowdFlower layout)")
    parser.add_argument("--folds", type=int, default=5)
    parser.add_argument("--only-folds", type=int, nargs="*", default=None, help="run these fold indices only")
    parser.add_argument("--methods", nargs="+", default=list(METHODS), choices=list(METHODS))
    parser.add_argument("--epochs", type=int, default=1)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--lr", type=float, default=5e-5)
    parser.add_argument("--max-len", type=int, default=32, help="max tokens of query and product text")
    parser.add_argument("--max-positives", type=int, default=12, help="relevant training pairs kept per query (0: all)")
    parser.add_argument("--threads", type=int, default=0, help="torch threads (0: torch's default)")
    parser.add_argument("--hard-negatives", type=int, default=1, help="labelled grade 1-2 negatives per pair")
    parser.add_argument(
        "--protect",
        default="irrelevant",
        choices=["irrelevant", "all", "none"],
        help="train.protect_labelled_negatives for querylife_genfilt (which labelled negatives a judge may not flag)",
    )
    parser.add_argument("--embed-dim", type=int, default=384, help="querylife projection size (384: MiniLM's)")
    parser.add_argument("--separate-query-projection", type=lambda s: s.lower() in ("1", "true", "yes"), default=True)
    parser.add_argument("--query-offset", choices=["none", "top_k"], default="top_k",
                        help="model.query_offset.mode of the querylife rows (querylife_raw: same model, raw scores)")
    parser.add_argument("--offset-strength", default="dev",
                        help="model.query_offset.strength: dev (chosen on each fold's dev split) or a number in [0, 1]")
    parser.add_argument("--dev-fraction", type=float, default=0.1)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--eval-batch-size", type=int, default=256)
    parser.add_argument("--work", default="runs/bench_crowdflower", help="scratch space for checkpoints")
    parser.add_argument("--out", default="benchmarks/results")
    parser.add_argument(
        "--render-only", metavar="JSON", help="rewrite the Markdown (and JSON) from a finished run's crowdflower.json"
    )
    args = parser.parse_args()
    if args.render_only:
        render_only(Path(args.render_only), Path(args.out))
        return

    quiet_transformers()
    logging.getLogger("sentence_transformers").setLevel(logging.ERROR)
    if args.threads:
        torch.set_num_threads(args.threads)
    random.seed(args.seed)
    start = time.time()
    loaded = load_format(args.data, format="crowdflower")
    base = to_dataset(loaded, image_size=8, split=(1.0, 0.0, 0.0), text_fields=TEXT_FIELDS)
    folds = kfold_by_query(base.pairs, args.folds, args.seed, dev_fraction=args.dev_fraction)
    fold_queries = [{s: sorted(split["query"].unique()) for s, split in fold.items()} for fold in folds]
    run_folds = list(range(args.folds)) if args.only_folds is None else sorted(set(args.only_folds))
    pairs = base.pairs
    grades = pairs["label"].astype(str).value_counts().sort_index()
    fold_q = {s: float(np.mean([len(fold_queries[f][s]) for f in run_folds])) for s in ("train", "dev", "test")}
    fold_data = {f: fold_dataset(base, folds[f], args.max_positives, args.seed + f) for f in run_folds}
    train_pos = np.mean([fold_data[f].splits["train"]["positive"].sum() for f in run_folds])
    train_neg = np.mean([(~fold_data[f].splits["train"]["positive"].astype(bool)).sum() for f in run_folds])
    meta: dict[str, Any] = {
        "command": command_line(),
        "machine": machine_info(["sentence-transformers"]),
        "settings": {k: v for k, v in vars(args).items()},
        "folds": args.folds,
        "folds_run": run_folds,
        "data": {
            "file": str(loaded.source.get("file", args.data)),
            "pairs": len(pairs),
            "queries": int(pairs["query"].nunique()),
            "products": len(base.catalog),
            "merged_duplicates": int(loaded.source.get("merged_duplicates", 0)),
            "grades": {str(g): int(n) for g, n in grades.items()},
            "positive_share": float(pairs["positive"].mean()),
            "fold_queries": fold_q,
            "fold_train_positive_pairs": float(train_pos),
            "fold_train_negative_pairs": float(train_neg),
        },
        "fold_queries": fold_queries,
    }
    per_fold: dict[str, list[dict]] = {m: [] for m in args.methods}
    per_query: dict[str, dict[str, float]] = {m: {} for m in args.methods}
    work = Path(args.work)
    zero_model = load_st(args.max_len) if "zero_shot" in args.methods else None
    for f in run_folds:
        data = fold_data[f]
        test = data.splits["test"]
        plan = None
        for m in args.methods:
            if m == "querylife_raw":  # filled by the querylife row (its model without the offset)
                continue
            t0 = time.time()
            extra: dict[str, Any] = {}
            train_s = 0.0
            if m in ("bm25_title", "bm25"):
                scores = bm25_pair_scores(data, test, ("title",) if m == "bm25_title" else TEXT_FIELDS)
            elif m == "zero_shot":
                scores = st_scores(zero_model, data, test, args.eval_batch_size)
            elif m in ("st_mnrl", "st_gist"):
                if plan is None:
                    plan = batch_plan(args, data)
                scores, train_s, eval_s, extra = run_st(args, data, plan, m.removeprefix("st_"))
            else:
                judge = "guide" if m == "querylife_genfilt" else "none"
                scores, train_s, eval_s, extra = run_querylife(args, data, work / f"fold{f}_{m}", judge)
            if m not in TRAINED:
                eval_s = time.time() - t0
            raw = extra.pop("_raw_scores", None)
            if m == "querylife" and raw is not None and "querylife_raw" in per_fold:
                raw_overall, raw_by_query = metrics_of(test, raw)
                per_query["querylife_raw"].update(raw_by_query)
                per_fold["querylife_raw"].append({"fold": f, **raw_overall, "train_s": 0.0, "eval_s": 0.0})
            overall, by_query = metrics_of(test, scores)
            per_query[m].update(by_query)
            row = {"fold": f, **overall, "train_s": round(train_s, 1), "eval_s": round(eval_s, 1)}
            row.update(extra)
            per_fold[m].append(row)
            print(
                f"fold {f} {m:18s} NDCG@10 {row['ndcg@10']:.4f}  MRR {row['mrr']:.4f}  AUC {row['roc_auc']:.4f}  "
                f"train {train_s:.0f}s  eval {eval_s:.1f}s  [{(time.time() - start) / 60:.1f} min]",
                flush=True,
            )
            gc.collect()
        write_outputs(
            args, Path(args.out), meta, per_fold, per_query, time.time() - start
        )  # partial results survive a kill
    summary = write_outputs(args, Path(args.out), meta, per_fold, per_query, time.time() - start)
    print(f"total {(time.time() - start) / 60:.1f} min; wrote {Path(args.out) / 'crowdflower.md'}")
    for m, s in summary.items():
        print(
            f"{m:18s} NDCG@10 {fmt_mean_std(s['ndcg@10'])}  MRR {fmt_mean_std(s['mrr'])}  "
            f"ROC-AUC {fmt_mean_std(s['roc_auc'])}"
        )


if __name__ == "__main__":
    main()
