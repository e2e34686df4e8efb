"""Scores across queries: the raw fused score against the score minus each query's offset (``model.query_offset``,
the mean of its k best fused scores over the catalogue), for k in ``--ks`` (issue 14's within-type ROC-AUC lines).

Rescores the saved best checkpoints of fusion_storefronts.py work directories. Training is unchanged by the offset
(it is fitted after it; tests/test_query_offset.py), so each checkpoint gets
:func:`querylife.query_offset.fit_query_offset` exactly as ``Trainer.fit`` runs it under ``top_k``. Reports ROC-AUC,
ROC-AUC in type (overall and per type group) and NDCG@10 (which must not move: the offset keeps every query's
ranking), dev and test, mean over seeds. k is chosen on dev; the test columns are reported, never used to choose.

Run:  python benchmarks/fusion_query_offset.py --work runs/fusion_lite0 --storefronts demo home_books media_market
      (``--dev-strength`` adds the default, the offset times a strength chosen on dev; ``--ks 10`` for k = 10 only)
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np
import pandas as pd

sys.path.insert(0, str(Path(__file__).parent))
from benchkit import quiet_transformers, run_header, write_results  # noqa: E402
from fusion_storefronts import SavedRuns, _without_lock, file_lock  # noqa: E402

from querylife.metrics import classification_metrics, per_query_metrics  # noqa: E402
from querylife.query_offset import QueryOffset, QueryOffsetConfig, fit_query_offset  # noqa: E402
from querylife.report import md_table  # noqa: E402
from querylife.runinfo import command_line, machine_info  # noqa: E402
from querylife.scoring import score_pairs  # noqa: E402


def auc_views(scored: pd.DataFrame, groups: dict[str, list[str]]) -> dict[str, float]:
    """All-pairs ROC-AUC, ROC-AUC in type overall and per type group, and NDCG@10 of scored pairs.

    Example: ``auc_views(df, {"title-informative": ["book"]})`` -> ``{"auc": .., "auc_in_type": .., "in
    title-informative": .., "ndcg@10": ..}``."""
    out = classification_metrics(scored)
    row = {"auc": out["roc_auc"], "auc_in_type": out["roc_auc_in_type"],
           "ndcg@10": float(np.nanmean(per_query_metrics(scored, ks=(10,))["ndcg@10"]))}  # fmt: skip
    for name, types in groups.items():
        sub = scored[scored["query_type"].isin(types)]
        row[f"in {name}"] = classification_metrics(sub)["roc_auc_in_type"] if len(sub) else np.nan
    return row


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--work", required=True, help="a fusion_storefronts.py work directory")
    parser.add_argument("--storefronts", nargs="+", default=["demo", "home_books", "media_market"])
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2, 3, 4])
    parser.add_argument("--methods", nargs="+", default=["query_gate", "mean", "concat", "title_only", "image_only"])
    parser.add_argument("--ks", type=int, nargs="+", default=[1, 10, 50])
    parser.add_argument("--dev-strength", action="store_true",
                        help="also the default: top 10 times the strength chosen on dev (model.query_offset.strength)")
    parser.add_argument("--lock", default=None)
    parser.add_argument("--stem", default="fusion_query_offset")
    parser.add_argument("--out", default="benchmarks/results")
    args = parser.parse_args()
    quiet_transformers()
    work = Path(args.work)
    rows: list[dict] = []
    for store in args.storefronts:
        if not (work / store).exists():
            continue
        with file_lock(args.lock):
            runs = SavedRuns.open(work, store)
            groups = runs.type_groups()
            for seed in args.seeds:
                for method in args.methods:
                    model = runs.model(seed, method)
                    if getattr(model, "query_offset", None) is None:  # trained without the option: give it one
                        model.query_offset = QueryOffset(QueryOffsetConfig(), model.config.embed_dim)
                    model.query_offset.ref_valid.zero_()  # raw first (a checkpoint may carry a fitted reference)
                    variants = [("raw", None), *((f"top {k}", k) for k in args.ks)]
                    variants += [("dev strength", "dev")] if args.dev_strength else []
                    for name, k in variants:
                        strength = None
                        if k is not None:
                            module = model.query_offset
                            if k == "dev":  # the default: top 10, the share picked on dev as Trainer.fit does
                                module.config = module.config.model_copy(update={"k": 10, "strength": "dev"})
                                fit = fit_query_offset(model, runs.data, runs.cache, seed=seed,
                                                       dev=runs.data.splits["dev"])  # fmt: skip
                                strength = fit.strength
                            else:  # the full offset; the reference is fitted once, k only changes the mean taken
                                module.config = module.config.model_copy(update={"k": k, "strength": 1.0})
                                module.strength.fill_(1.0)
                                if not module.ready:
                                    fit_query_offset(model, runs.data, runs.cache, seed=seed)
                        for split in ("dev", "test"):
                            df = runs.data.splits[split]
                            scored = df.assign(score=score_pairs(model, runs.data, df, runs.cache).score)
                            rows.append({"storefront": store, "seed": seed, "method": method, "offset": name,
                                         "split": split, "strength": strength,
                                         **auc_views(scored, groups)})  # fmt: skip
                    print(store, seed, method, flush=True)
    frame = pd.DataFrame(rows)
    work_command = json.loads((work / "meta.json").read_text())["command"]
    run_meta = {"command": _without_lock(command_line()), "machine": machine_info()}
    cols = [c for c in frame.columns if c == "auc" or c.startswith("auc_") or c.startswith("in ") or c == "ndcg@10"]
    cols += ["strength"] if args.dev_strength else []
    frame["strength"] = frame["strength"].astype(float)
    md = [
        "# Scores across queries: raw fused scores against each query's offset (`model.query_offset`)",
        "",
        *run_header(run_meta),
        f"Work directory's training command: `{_without_lock(work_command)}`. The machine was shared (2 cores).",
        "",
        "`raw`: the fused score (`model.query_offset.mode=none`). `top k`: minus the mean of the query's k best "
        "fused scores over the catalogue (fitted after training, no labels). ROC-AUC pools the pairs of all "
        "queries, so it sees per-query offsets; NDCG@10 ranks within each query and must be equal across rows. "
        "Mean over seeds (per-seed values in the JSON). k is chosen on dev. `dev strength` (the default, with "
        "`--dev-strength`): minus the top-10 offset times the strength each run's dev split picks (0 = raw .. 1).",
        "",
    ]
    for split in ("dev", "test"):
        sub = frame[frame["split"] == split]
        agg = sub.groupby(["storefront", "method", "offset"], sort=False)[cols].mean()
        body = [[*key, *("-" if np.isnan(v) else f"{v:.4f}" for v in r)]
                for key, r in zip(agg.index, agg.to_numpy(dtype=float), strict=True)]  # fmt: skip
        names = {"auc": "ROC-AUC", "auc_in_type": "ROC-AUC in type", "ndcg@10": "NDCG@10", "strength": "strength"}
        head = ["storefront", "method", "offset", *(names.get(c, c.replace("in ", "in type, ")) for c in cols)]
        md += [f"## {split}", "", md_table(head, body), ""]
    write_results(args.out, args.stem, md, {**run_meta, "work_command": work_command, "rows": rows})
    print("\n".join(md))


if __name__ == "__main__":
    main()
