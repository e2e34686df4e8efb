"""Late fusion of the two single-modality models against the jointly trained fusions (issue 14, a measurement).

For each storefront and training seed of a fusion_storefronts.py work directory, the saved ``title_only`` and
``image_only`` checkpoints score the dev and test pairs; each model's scores are divided by their dev standard
deviation, and each product type gets an image weight w picked on dev NDCG@10 by coordinate ascent over a grid
(``late``: s = (1 - w) s_title + w s_image, w = 0 for products without a photo). Its dev estimate is cross-fitted
over dev halves (weights picked on one half of the intents, scored on the other). The jointly trained methods'
checkpoints are rescored on the same pairs, so every difference is paired.

Run:  python benchmarks/fusion_late_diag.py --work runs/fusion_lite0 --seeds 0 1 2 3 4
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np
import pandas as pd

sys.path.insert(0, str(Path(__file__).parent))
from benchkit import quiet_transformers, run_header, write_results  # noqa: E402
from fusion_storefronts import SavedRuns, _without_lock, dev_halves, file_lock, scored_metrics  # noqa: E402

from querylife.metrics import per_query_metrics  # noqa: E402
from querylife.report import md_table  # noqa: E402
from querylife.runinfo import command_line, machine_info  # noqa: E402
from querylife.scoring import score_pairs  # noqa: E402

GRID = [round(0.1 * i, 1) for i in range(11)]


def _ndcg(pairs: pd.DataFrame, scores: np.ndarray) -> float:
    return float(np.nanmean(per_query_metrics(pairs.assign(score=scores), ks=(10,))["ndcg@10"]))


def fit_late(pairs: pd.DataFrame, st: np.ndarray, si: np.ndarray, types: np.ndarray, has: np.ndarray,
             min_gain: float = 0.001, passes: int = 3) -> dict[str, float]:  # fmt: skip
    """Per-type image weights on ``pairs`` (coordinate ascent from 0.5, most candidates first)."""
    names, counts = np.unique(types[has], return_counts=True)
    weights = {t: 0.5 for t in np.unique(types)}

    def scores(w: dict[str, float]) -> np.ndarray:
        ww = np.array([w[t] for t in types]) * has
        return (1 - ww) * st + ww * si

    best = _ndcg(pairs, scores(weights))
    for _ in range(passes):
        moved = False
        for t in names[np.argsort(-counts, kind="stable")]:
            old = weights[t]
            trials = [(_ndcg(pairs, scores({**weights, t: g})), -abs(g - old), g) for g in GRID]
            score, _, g = max(trials)
            if score > best + min_gain:
                weights[t], best, moved = g, score, True
        if not moved:
            break
    return weights


def late_scores(st: np.ndarray, si: np.ndarray, types: np.ndarray, has: np.ndarray, w: dict[str, float]) -> np.ndarray:
    ww = np.array([w.get(t, 0.5) for t in types]) * has
    return (1 - ww) * st + ww * si


def _parts(df: pd.DataFrame, scored: dict, split: str, norm: dict, pos: pd.Series, has_all: np.ndarray) -> tuple:
    """Title and image scores (each over its dev std), product types and has-photo flags of ``df``'s rows."""
    idx = pos.loc[df["product_id"].to_numpy()].to_numpy()
    return (scored["title_only"][split] / norm["title_only"], scored["image_only"][split] / norm["image_only"],
            df["product_type"].to_numpy(), has_all[idx])  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--work", required=True)
    parser.add_argument("--storefronts", nargs="+", default=["demo", "home_books", "media_market"])
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2, 3, 4])
    parser.add_argument("--methods", nargs="+", default=["query_gate", "mean", "concat"])
    parser.add_argument("--lock", default=None)
    parser.add_argument("--stem", default="fusion_late_diag")
    parser.add_argument("--out", default="benchmarks/results")
    args = parser.parse_args()
    quiet_transformers()
    work = Path(args.work)
    rows: list[dict] = []
    per_query: list[pd.DataFrame] = []
    for store in args.storefronts:
        with file_lock(args.lock):
            runs = SavedRuns.open(work, store)
            data = runs.data
            groups = runs.type_groups()
            pos = pd.Series(np.arange(len(data.catalog)), index=data.catalog["product_id"].to_numpy())
            has_all = data.has_image.numpy().astype(bool)
            for seed in args.seeds:
                scored: dict[str, dict[str, np.ndarray]] = {}
                for method in ["title_only", "image_only", *args.methods]:
                    model = runs.model(seed, method)
                    scored[method] = {s: score_pairs(model, data, data.splits[s], runs.cache).score
                                      for s in ("dev", "test")}  # fmt: skip
                dev, test = data.splits["dev"], data.splits["test"]
                norm = {m: float(np.std(scored[m]["dev"])) for m in ("title_only", "image_only")}

                st_d, si_d, ty_d, has_d = _parts(dev, scored, "dev", norm, pos, has_all)
                w = fit_late(dev, st_d, si_d, ty_d, has_d)
                st_t, si_t, ty_t, has_t = _parts(test, scored, "test", norm, pos, has_all)
                scored["late"] = {"test": late_scores(st_t, si_t, ty_t, has_t, w)}
                # cross-fitted dev: weights from one half of the intents, scored on the other
                a, b = dev_halves(dev)
                dev_late = np.zeros(len(dev))
                for fit_on, apply_to in ((a, b), (b, a)):
                    mf = dev.index.isin(fit_on.index)
                    ma = dev.index.isin(apply_to.index)
                    wf = fit_late(fit_on, st_d[mf], si_d[mf], ty_d[mf], has_d[mf])
                    dev_late[ma] = late_scores(st_d[ma], si_d[ma], ty_d[ma], has_d[ma], wf)
                scored["late"]["dev"] = dev_late
                for method, by_split in scored.items():
                    for split, s in by_split.items():
                        df = data.splits[split].assign(score=s)
                        m = scored_metrics(df, groups)
                        rows.append({"storefront": store, "seed": seed, "method": method, "split": split,
                                     "weights": w if method == "late" else None, **{
                                         f"{g}/{k}": v for g, d in m.items() if g in ("overall", *groups)
                                         for k, v in d.items()}})  # fmt: skip
                        pq = per_query_metrics(df, ks=(10,))[["query", "query_type", "ndcg@10"]]
                        per_query.append(pq.assign(storefront=store, seed=seed, method=method, split=split))
                print(store, seed, {k: v for k, v in w.items()}, flush=True)
                print(pd.DataFrame([r for r in rows if r["storefront"] == store and r["seed"] == seed])
                      .set_index(["method", "split"]).filter(like="ndcg").round(4).to_string(), flush=True)  # fmt: skip
    frame = pd.DataFrame(rows)
    run_meta = {"command": _without_lock(command_line()), "machine": machine_info()}
    md = ["# Late fusion of the single-modality models against the joint fusions", "", *run_header(run_meta),
          "The machine was shared (2 cores).", "",
          "Mean over seeds; `late`'s dev numbers are cross-fitted over dev halves. Columns: NDCG@10 / ROC-AUC in "
          "type, overall and per type group.", ""]  # fmt: skip
    for split in ("dev", "test"):
        md += [f"## {split}", ""]
        for store in args.storefronts:
            sub = frame[(frame.storefront == store) & (frame.split == split)]
            cols = [c for c in sub.columns if c.endswith("/ndcg@10") and sub[c].notna().any()]
            head = ["method", *(c.split("/")[0] for c in cols)]
            table = []
            for method, g in sub.groupby("method", sort=False):
                table.append([method, *(f"{g[c].mean():.4f} / {g[c.replace('ndcg@10', 'roc_auc_in_type')].mean():.4f}"
                                        for c in cols)])  # fmt: skip
            md += [f"**{store}**", "", md_table(head, table), ""]
    pq = pd.concat(per_query, ignore_index=True)
    write_results(args.out, args.stem, md, {**run_meta, "rows": rows, "per_query": pq.to_dict(orient="records")})
    print("\n".join(md))


if __name__ == "__main__":
    main()
