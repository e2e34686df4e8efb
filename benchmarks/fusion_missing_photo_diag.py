"""Where products without a photo rank on the visual types, and how much of a fusion's gap to image only they make
(issue 14's failing `media_market` line). Rescores the saved best checkpoints of a fusion_storefronts.py work
directory on the image-informative queries: NDCG@10 over all candidates and over the candidates with a photo only,
and the mean within-query percentile of the photo-less candidates' scores (0.5: the middle of the list).

Run:  python benchmarks/fusion_missing_photo_diag.py --work runs/fusion_lite0 --storefront media_market
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np
import pandas as pd

sys.path.insert(0, str(Path(__file__).parent))
from benchkit import quiet_transformers, run_header, write_results  # noqa: E402
from fusion_storefronts import SavedRuns, _without_lock  # noqa: E402

from querylife.metrics import per_query_metrics  # noqa: E402
from querylife.report import md_table  # noqa: E402
from querylife.runinfo import command_line, machine_info  # noqa: E402
from querylife.scoring import score_pairs  # noqa: E402


def photo_views(scored: pd.DataFrame) -> dict[str, float]:
    """NDCG@10 over all candidates, over those with a photo (column ``has``), and the photo-less candidates' mean
    within-query percentile. Example: ``photo_views(df)`` -> ``{"ndcg_all": .., "ndcg_photo": .., "pct_no_photo": ..}``.
    """
    pct = scored.groupby("query")["score"].rank(pct=True)
    return {
        "ndcg_all": float(np.nanmean(per_query_metrics(scored, ks=(10,))["ndcg@10"])),
        "ndcg_photo": float(np.nanmean(per_query_metrics(scored[scored["has"]], ks=(10,))["ndcg@10"])),
        "pct_no_photo": float(pct[~scored["has"]].mean()),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--work", required=True)
    parser.add_argument("--storefront", default="media_market")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2, 3, 4])
    parser.add_argument("--methods", nargs="+", default=["query_gate", "mean", "image_only", "title_only"])
    parser.add_argument("--stem", default="fusion_missing_photo_diag")
    parser.add_argument("--out", default="benchmarks/results")
    args = parser.parse_args()
    quiet_transformers()
    work, store = Path(args.work), args.storefront
    runs = SavedRuns.open(work, store)
    meta, data = runs.meta(), runs.data
    visual = runs.type_groups()["image-informative"]
    photo = pd.Series(data.has_image.numpy().astype(bool), index=data.catalog["product_id"].to_numpy())
    rows: list[dict] = []
    for seed in args.seeds:
        for method in args.methods:
            model = runs.model(seed, method)
            for split in ("dev", "test"):
                df = data.splits[split]
                df = df[df["query_type"].isin(visual)]
                df = df.assign(has=photo.loc[df["product_id"].to_numpy()].to_numpy())
                scored = df.assign(score=score_pairs(model, data, df, runs.cache).score)
                rows.append({"seed": seed, "method": method, "split": split, "queries": int(df["query"].nunique()),
                             "no_photo_share": float(1 - df["has"].mean()), **photo_views(scored)})  # fmt: skip
                print(rows[-1], flush=True)
    frame = pd.DataFrame(rows)
    run_meta = {"command": _without_lock(command_line()), "machine": machine_info()}
    md = [
        f"# Photo-less candidates on `{store}`'s visual types ({', '.join(visual)})",
        "",
        *run_header(run_meta),
        f"Work directory's training command: `{_without_lock(meta['command'])}`. The machine was shared (2 cores).",
        "",
        "Mean over seeds. `NDCG@10 all`: every candidate; `with a photo`: the candidates without a photo removed; "
        "`photo-less percentile`: the mean within-query percentile of the photo-less candidates' scores (1: top).",
        "",
    ]
    for split in ("dev", "test"):
        sub = frame[frame["split"] == split]
        agg = sub.groupby("method", sort=False)[["ndcg_all", "ndcg_photo", "pct_no_photo"]].mean()
        body = [[m, *(f"{v:.4f}" for v in r)] for m, r in zip(agg.index, agg.to_numpy(), strict=True)]
        first = sub.iloc[0]
        head = ["method", "NDCG@10 all", "NDCG@10 with a photo", "photo-less percentile"]
        md += [f"## {split} ({first['queries']} visual queries, {first['no_photo_share']:.1%} of their candidates "
               "without a photo)", "", md_table(head, body), ""]  # fmt: skip
    write_results(args.out, args.stem, md, {**run_meta, "work_command": meta["command"], "rows": rows})
    print("\n".join(md))


if __name__ == "__main__":
    main()
