"""GenFilt with a real (small) generative model: SmolLM2-135M-Instruct as yes / no judge and describer, on the demo
storefront, where the truth of every in-batch pair is known.

Truth: the demo's queries carry their intent (product type + asked-for attributes); product j is a true false
negative for query i when it has that type and every asked attribute (``intent``: this equals the "exact" labels
on labelled pairs and covers the unlabelled in-batch pairs too). The project's usual lower-bound truth (same
``group_id`` or labelled positive, :func:`querylife.genfilt.mask_eval.known_equivalents`) is reported beside it.

Rows (all on the same first ``--batches`` training batches, :func:`querylife.genfilt.mask_eval.sample_batches`):

* ``guide``: the GIST-style guide (MiniLM on titles, ``genfilt.margin``), labelled pairs protected (the default).
* ``guide + LM verify``: the generative judge over that guide: the ``--cap`` most suspicious unprotected flags per
  batch are asked (one forward pass each; score = log P(yes) - log P(no) on the title), a "no" (score below the
  threshold) unmasks; pairs over the cap keep the guide's flag (``on_undecided=prefilter``, the default).
* ``LM-confirmed only``: the same, but only pairs the model confirmed stay masked (``on_undecided=negative``).
* ``score AUC``: how well the model's score separates true from false flags among the asked pairs (0.5 = chance).
* descriptions: the products of the first ``--describe-batches`` batches are described by SmolLM2 (title + type;
  no images: a text-only model), then the description-similarity judge and the yes / no judge on descriptions.

Run (shared 2-core machine: one heavy job at a time):
  OMP_NUM_THREADS=1 python benchmarks/genfilt_smollm2.py --batches 6 --cap 32
Writes genfilt_smollm2.md and .json (command, machine, numbers).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
import torch  # noqa: E402
from sklearn.metrics import roc_auc_score  # noqa: E402

from querylife.data.storefront import DemoConfig  # noqa: E402
from querylife.genfilt.base import ProductInput  # noqa: E402
from querylife.genfilt.cache import DescriptionCache  # noqa: E402
from querylife.genfilt.describe import describe_catalog  # noqa: E402
from querylife.genfilt.hf import HFDescriber  # noqa: E402
from querylife.genfilt.judges import DescriptionSimilarityJudge, GuideModelJudge, text_tower_encoder  # noqa: E402
from querylife.genfilt.lm import local_model_dir  # noqa: E402
from querylife.genfilt.lm_judge import LogprobYesNo  # noqa: E402
from querylife.genfilt.mask_eval import known_equivalents, sample_batches  # noqa: E402
from querylife.genfilt.training import protected_pairs  # noqa: E402
from querylife.report import md_table  # noqa: E402
from querylife.runinfo import command_line, machine_info  # noqa: E402

sys.path.insert(0, str(Path(__file__).parent))
from benchkit import demo_dataset, quiet_transformers, run_header, write_results  # noqa: E402


def intent_truth(raw_pairs: pd.DataFrame, catalog: pd.DataFrame):
    """``truth(query, other_id)``: the product has the query's type and every attribute it asks for."""
    intents = dict(zip(raw_pairs["query"].astype(str), raw_pairs["intent"].astype(str), strict=True))
    ptype = dict(zip(catalog["product_id"], catalog["product_type"], strict=True))
    attrs = {pid: json.loads(a) for pid, a in zip(catalog["product_id"], catalog["attributes"], strict=True)}
    parsed = {q: (i.split("|", 1)[0], json.loads(i.split("|", 1)[1])) for q, i in intents.items()}

    def truth(query: str, other: str) -> bool:
        t, asked = parsed[query]
        return ptype[other] == t and all(attrs[other].get(k) == v for k, v in asked.items())

    return truth


def prf(mask: np.ndarray, truth: np.ndarray, valid: np.ndarray) -> dict[str, float]:
    m, t = mask & valid, truth & valid
    tp, n_m, n_t = int((m & t).sum()), int(m.sum()), int(t.sum())
    p = tp / n_m if n_m else float("nan")
    r = tp / n_t if n_t else float("nan")
    return {"precision": p, "recall": r, "masked": n_m, "true": n_t, "tp": tp}


def auc(scores: list[float], labels: list[bool]) -> float:
    return float(roc_auc_score(labels, scores)) if 0 < sum(labels) < len(labels) else float("nan")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--batches", type=int, default=6)
    parser.add_argument("--cap", type=int, default=32, help="questions per batch (genfilt.max_questions_per_batch)")
    parser.add_argument("--thresholds", type=float, nargs="+", default=[-2.0, -1.5, -1.25, -1.0, -0.75, -0.5, 0.0])
    parser.add_argument("--describe-batches", type=int, default=1, help="batches whose products are described")
    parser.add_argument("--products", type=int, default=3000)
    parser.add_argument("--model", default="smollm2-135m")
    parser.add_argument("--work", default="runs/bench_genfilt")
    parser.add_argument("--out", default="benchmarks/results")
    parser.add_argument("--stem", default="genfilt_smollm2")
    parser.add_argument("--set", dest="overrides", action="append", default=[], help="config override KEY=VALUE")
    args = parser.parse_args()
    quiet_transformers()
    torch.set_num_threads(int(os.environ.get("OMP_NUM_THREADS", "1")))
    start = time.time()
    work = Path(args.work)
    store, cfg, data = demo_dataset(work / "data", args.overrides, DemoConfig(n_products=args.products, seed=0))
    catalog = data.catalog
    titles = dict(zip(catalog["product_id"], catalog["title"], strict=True))
    types = dict(zip(catalog["product_id"], catalog["product_type"], strict=True))
    truth_intent = intent_truth(pd.read_parquet(store.pairs_path), catalog)
    known = known_equivalents(catalog, data.pairs)
    protect = protected_pairs(cfg, data)
    batches = sample_batches(data, cfg, args.batches)
    steps_per_epoch = -(-len(data.splits["train"].query("positive")) // cfg.train.batch_size)

    def matrices(batch):
        qs, cols, pos = batch
        own = np.array([[c == p for c in cols] for p in pos])
        ti = np.array([[truth_intent(q, c) for c in cols] for q in qs]) & ~own
        tk = np.array([[known(q, p, c) for c in cols] for q, p in zip(qs, pos, strict=True)]) & ~own
        prot = np.array([[(q, c) in protect for c in cols] for q in qs])
        return own, ti, tk, prot

    mats = [matrices(b) for b in batches]
    encoder = text_tower_encoder(cfg.genfilt.guide_model)
    guide = GuideModelJudge(encoder, titles, margin=cfg.genfilt.margin, margin_kind=cfg.genfilt.margin_kind)
    t0 = time.perf_counter()
    guide_out = []
    for b in batches:
        m = guide.mask(*b)
        guide_out.append((m, guide.last_scores.copy()))
    guide_s = time.perf_counter() - t0

    print(f"loading {args.model}", flush=True)
    judge = LogprobYesNo.from_spec(args.model, cfg.genfilt.judge_prompt, batch_size=16, log=print)
    asked, ask_s = [], 0.0  # per batch: list of (i, j) cells asked, their scores
    for (qs, cols, _pos), (m, scores), (_own, _ti, _tk, prot) in zip(batches, guide_out, mats, strict=True):
        cells = np.argwhere(m & ~prot)
        cells = cells[np.argsort(-scores[cells[:, 0], cells[:, 1]], kind="stable")][: args.cap]
        questions = [(qs[i], titles[cols[j]], types[cols[j]], None) for i, j in cells.tolist()]
        t0 = time.perf_counter()
        s = judge.scores(questions) if questions else np.zeros(0, np.float32)
        ask_s += time.perf_counter() - t0
        asked.append((cells, s))
        print(f"batch {len(asked)}/{len(batches)}: asked {len(cells)} ({ask_s:.0f} s so far)", flush=True)
    n_asked = sum(len(c) for c, _ in asked)
    s_per_pair = ask_s / n_asked if n_asked else float("nan")

    def evaluate(masks: list[np.ndarray], idx: list[int] | None = None) -> dict[str, dict[str, float]]:
        idx = list(range(len(batches))) if idx is None else idx
        out = {}
        for name, k in (("intent", 1), ("known", 2)):
            mask = np.concatenate([masks[b].ravel() for b in idx])
            truth = np.concatenate([mats[b][k].ravel() for b in idx])
            valid = np.concatenate([(~mats[b][0]).ravel() for b in idx])
            out[name] = prf(mask, truth, valid)
        return out

    guide_masks = [m & ~prot for (m, _), (_o, _ti, _tk, prot) in zip(guide_out, mats, strict=True)]
    rows: dict[str, dict] = {"guide": evaluate(guide_masks)}
    for t in args.thresholds:
        verify, confirmed = [], []
        for gm, (cells, s) in zip(guide_masks, asked, strict=True):
            v, c = gm.copy(), np.zeros_like(gm)
            for (i, j), score in zip(cells.tolist(), s.tolist(), strict=True):
                v[i, j] = score >= t
                c[i, j] = score >= t
            verify.append(v)
            confirmed.append(c)
        rows[f"guide + LM verify (t={t:g})"] = evaluate(verify)
        rows[f"LM-confirmed only (t={t:g})"] = evaluate(confirmed)
    labels = [bool(mats[b][1][i, j]) for b, (cells, _) in enumerate(asked) for i, j in cells.tolist()]
    all_scores = [float(x) for _, s in asked for x in s.tolist()]
    title_auc = auc(all_scores, labels)
    print(f"asked {n_asked} pairs, {sum(labels)} true; score AUC on titles {title_auc:.3f}", flush=True)

    # ---- descriptions --------------------------------------------------------------------------------------
    nd = min(args.describe_batches, len(batches))
    described_ids = list(dict.fromkeys(p for b in batches[:nd] for p in [*b[1], *b[2]]))
    cache = DescriptionCache(work / "descriptions.jsonl")
    describer = HFDescriber(
        str(local_model_dir(args.model)), kind="text", batch_size=8, max_new_tokens=48, name=f"local:{args.model}"
    )
    prompt = cfg.genfilt.prompt
    items = [ProductInput(p, titles[p], types[p]) for p in described_ids]
    t0 = time.perf_counter()
    summary = describe_catalog(items, describer, prompt, cache, batch_size=8, progress=True)
    describe_s = time.perf_counter() - t0
    descriptions = {
        p: cache.get(it, describer.name, prompt.version) for p, it in zip(described_ids, items, strict=True)
    }
    examples = [(titles[p], types[p], descriptions[p]) for p in described_ids[:6]]
    sim = DescriptionSimilarityJudge(
        encoder, descriptions, titles, margin=cfg.genfilt.margin, margin_kind=cfg.genfilt.margin_kind
    )
    sim_masks = [np.asarray(sim.mask(*batches[b]), bool) & ~mats[b][3] for b in range(nd)]
    desc_rows = {
        "guide (titles)": evaluate(guide_masks, list(range(nd))),
        "description similarity": evaluate(sim_masks, list(range(nd))) if nd else {},
    }
    # yes / no on descriptions, the same asked pairs of those batches
    d_scores, d_labels, t_scores = [], [], []
    for b in range(nd):
        cells, s = asked[b]
        qs, cols, _ = batches[b]
        qq = [(qs[i], descriptions.get(cols[j]) or titles[cols[j]], types[cols[j]], None) for i, j in cells.tolist()]
        d_scores += [float(x) for x in judge.scores(qq).tolist()] if qq else []
        d_labels += [bool(mats[b][1][i, j]) for i, j in cells.tolist()]
        t_scores += [float(x) for x in s.tolist()]
    desc_auc, title_auc_same = auc(d_scores, d_labels), auc(t_scores, d_labels)

    # ---- report ----------------------------------------------------------------------------------------------
    def fmt(x: float) -> str:
        return "–" if x != x else f"{x:.3f}"

    def table(rs: dict[str, dict]) -> str:
        return md_table(
            ["judge", "precision (intent)", "recall (intent)", "masked", "precision (known)", "recall (known)"],
            [
                [k, fmt(v["intent"]["precision"]), fmt(v["intent"]["recall"]), v["intent"]["masked"],
                 fmt(v["known"]["precision"]), fmt(v["known"]["recall"])]
                for k, v in rs.items()
            ],
        )

    meta = {"command": command_line(), "machine": machine_info()}
    n_pairs = sum(int((~m[0]).sum()) for m in mats)
    n_true = sum(int(m[1].sum()) for m in mats)
    n_prot_flags = sum(int((g & prot).sum()) for (g, _), (_o, _t, _k, prot) in zip(guide_out, mats, strict=True))
    per_epoch = steps_per_epoch * args.cap * s_per_pair
    md = [
        "# GenFilt with SmolLM2-135M-Instruct on the demo storefront",
        "",
        *run_header(meta),
        "The machine was shared with other jobs (2 cores, one torch thread here): times are indicative.",
        "",
        f"Data: the default demo storefront ({args.products} products), its default config; the first {len(batches)} "
        f"training batches (batch {cfg.train.batch_size}, exactly those training sees): {n_pairs} in-batch pairs, "
        f"{n_true} of them true false negatives by intent (type + every asked attribute). Labelled pairs protected "
        f"(`train.protect_labelled_negatives={cfg.train.protect_labelled_negatives}`): the guide flagged "
        f"{n_prot_flags} "
        "of them, kept as negatives in every row. Yes / no judge: one forward pass per pair, score = log P(yes) - "
        f"log P(no), the {args.cap} most suspicious unprotected guide flags per batch asked, on titles.",
        "",
        "## Mask quality (titles)",
        "",
        table(rows),
        "",
        f"Score AUC among the {n_asked} asked pairs ({sum(labels)} true): **{fmt(title_auc)}** (0.5 = chance).",
        "",
        "## Cost",
        "",
        md_table(
            ["step", "value"],
            [
                ["guide, all batches (MiniLM, first time)", f"{guide_s:.1f} s"],
                ["yes / no judge per pair (1 thread, batch 16)", f"{1000 * s_per_pair:.0f} ms"],
                [f"yes / no per epoch ({steps_per_epoch} batches x {args.cap} pairs)", f"{per_epoch:.0f} s"],
                ["description per product (greedy, <= 48 new tokens, batch 8)",
                 f"{describe_s / max(summary.described, 1):.2f} s"],
                ["describing the whole catalogue (estimate)",
                 f"{args.products * describe_s / max(summary.described, 1) / 60:.0f} min"],
            ],
        ),
        "",
        f"## Descriptions (first {nd} batch(es): {len(described_ids)} products described)",
        "",
        table(desc_rows) if nd else "",
        "",
        f"Yes / no score AUC on the asked pairs of these batches: descriptions **{fmt(desc_auc)}**, titles "
        f"{fmt(title_auc_same)} ({len(d_labels)} pairs, {sum(d_labels)} true).",
        "",
        "Examples (title | type => SmolLM2's description):",
        "",
        *[f"- {t} | {ty} => {d}" for t, ty, d in examples],
        "",
        f"Total runtime {(time.time() - start) / 60:.1f} min.",
    ]
    payload = {
        **meta,
        "args": vars(args),
        "batches": len(batches),
        "pairs": n_pairs,
        "true_pairs": n_true,
        "protected_flags": n_prot_flags,
        "rows": rows,
        "asked": n_asked,
        "asked_true": sum(labels),
        "title_score_auc": title_auc,
        "seconds": {"guide": guide_s, "ask": ask_s, "per_pair": s_per_pair, "per_epoch": per_epoch,
                    "describe": describe_s, "described": summary.described},
        "descriptions": {"rows": desc_rows, "auc_descriptions": desc_auc, "auc_titles_same_pairs": title_auc_same,
                         "pairs": len(d_labels), "examples": examples},
        "scores": {"title": all_scores, "labels": labels},
    }
    path = write_results(args.out, args.stem, md, payload)
    print("\n".join(md))
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
