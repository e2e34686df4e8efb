"""Why a fusion's within-type ROC-AUC on the title-informative types moves: pooled over queries (what
``roc_auc_in_type`` reports) against the same pairs with each query's mean in-type score subtracted (no per-query
offset left) and the mean per-query AUC. Rescores the saved best checkpoints of fusion_storefronts.py work
directories on the in-type pairs of the title-informative queries only (cheap: their products show a few shared
icons, or nothing under ``--shared-photo-as-missing``).

Run:  python benchmarks/fusion_in_type_auc_diag.py --work base=runs/fusion_lite0 --work rule=runs/fusion_shared_photo \
          --storefronts home_books media_market --seeds 0 1 2 --stem fusion_shared_photo_auc_diag
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np
import pandas as pd
from sklearn.metrics import roc_auc_score

sys.path.insert(0, str(Path(__file__).parent))
from benchkit import quiet_transformers, run_header, write_results  # noqa: E402
from fusion_storefronts import SavedRuns, _without_lock, file_lock  # noqa: E402

from querylife.report import md_table  # noqa: E402
from querylife.runinfo import command_line, machine_info  # noqa: E402
from querylife.scoring import encode_pairs, score_pairs  # noqa: E402

VIEWS = ["pooled", "centred", "per_query", "per_query_title"]


def _per_query_auc(scored: pd.DataFrame, column: str) -> float:
    return float(np.mean([
        roc_auc_score(g["positive"].astype(int), g[column]) for _, g in scored.groupby("query")
        if g["positive"].nunique() == 2
    ]))  # fmt: skip


def auc_views(scored: pd.DataFrame) -> dict[str, float]:
    """Pooled AUC, pooled AUC of per-query centred scores, mean per-query AUC (queries with both classes) and, with
    a ``title`` column (the model's own q.t), the mean per-query AUC of the title part alone.

    Example: ``auc_views(df)`` (columns query, positive, score[, title]) -> ``{"pooled": .., "centred": ..,
    "per_query": ..[, "per_query_title": ..]}``.
    """
    y = scored["positive"].astype(int).to_numpy()
    s = scored["score"].to_numpy()
    centred = s - scored.groupby("query")["score"].transform("mean").to_numpy()
    out = {
        "pooled": float(roc_auc_score(y, s)),
        "centred": float(roc_auc_score(y, centred)),
        "per_query": _per_query_auc(scored, "score"),
    }
    if "title" in scored:
        out["per_query_title"] = _per_query_auc(scored, "title")
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--work", action="append", required=True, help="NAME=WORK (fusion_storefronts.py)")
    parser.add_argument("--storefronts", nargs="+", default=["home_books", "media_market"])
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--methods", nargs="+", default=["query_gate", "mean", "title_only"])
    parser.add_argument("--splits", nargs="+", default=["dev", "test"])
    parser.add_argument("--lock", default=None)
    parser.add_argument("--stem", default="fusion_in_type_auc_diag")
    parser.add_argument("--out", default="benchmarks/results")
    args = parser.parse_args()
    quiet_transformers()
    results: list[dict] = []
    for spec in args.work:
        name, _, work = spec.partition("=")
        work = Path(work)
        for store in args.storefronts:
            with file_lock(args.lock):
                runs = SavedRuns.open(work, store)
                title_types = runs.type_groups()["title-informative"]
                for seed in args.seeds:
                    for method in args.methods:
                        model = runs.model(seed, method)
                        for split in args.splits:
                            df = runs.data.splits[split]
                            df = df[df["query_type"].isin(title_types) & (df["product_type"] == df["query_type"])]
                            enc = encode_pairs(model, runs.data, df, runs.cache)
                            qt = (enc.queries[enc.query_pos] * enc.products.t[enc.product_pos]).sum(-1)  # (N,)
                            scored = df.assign(score=score_pairs(model, runs.data, df, runs.cache).score,
                                               title=qt.double().numpy())  # fmt: skip
                            row = {"run": name, "storefront": store, "seed": seed, "method": method, "split": split}
                            results.append({**row, **auc_views(scored)})
                            print(results[-1], flush=True)
    frame = pd.DataFrame(results)
    run_meta = {"command": _without_lock(command_line()), "machine": machine_info()}
    md = [
        "# Within-type ROC-AUC on the title-informative types: pooled, per-query centred, per query",
        "",
        *run_header(run_meta),
        "The machine was shared by several agents (2 cores).",
        "",
        "The in-type pairs of the title-informative queries (candidates of the query's own type). `pooled` is "
        "`roc_auc_in_type` of those queries; `centred` subtracts each query's mean in-type score first (a per-query "
        "offset such as w·q·v_icon is then gone); `per_query` is the mean AUC of the queries that have both classes; "
        "`per query, title part` the same for the model's own q.t alone (for title only it is the score). "
        "Mean over seeds (per-seed values in the JSON).",
        "",
    ]
    for split in args.splits:
        sub = frame[frame["split"] == split]
        agg = sub.groupby(["storefront", "run", "method"], sort=False)[VIEWS].mean()
        rows = [[*k, *(f"{v:.4f}" for v in r)] for k, r in zip(agg.index, agg.to_numpy(), strict=True)]
        head = ["storefront", "run", "method", "pooled", "centred", "per query", "per query, title part"]
        md += [f"## {split}", "", md_table(head, rows), ""]
    write_results(args.out, args.stem, md, {**run_meta, "works": args.work, "rows": results})
    print("\n".join(md))


if __name__ == "__main__":
    main()
