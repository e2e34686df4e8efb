"""How much could any modality gate add on top of trained embeddings? (issue: Query-LIFE vs mean fusion)

Loads models trained by ``benchmarks/dev_variants.py`` (``runs/dev_variants/VARIANT_SEED/best``), takes their
query, title and image vectors on the demo storefront's **dev** split, and re-scores every pair with image weights
chosen after the fact, with the fused score the model uses (cosine of the renormalised convex combination):

- ``learned``: the model's own gate (0.5 everywhere for mean fusion);
- ``mean``: w = 0.5 for every pair;
- ``global``: the single best w for all pairs;
- ``per kind``: the best w for each (query kind, product-type group): photo-attribute, title-attribute, both or bare
  queries on image- or title-informative types; 8 numbers, the most a query+type gate that knows what each
  query asks for could do with these vectors;
- ``per query``: each query its own best w (an upper bound that also fits noise).

All weights are chosen on the same dev pairs they are scored on, so every row but ``learned`` and ``mean`` is an
optimistic upper bound: if even ``per kind`` is close to ``mean``, no gate can add much to these embeddings.

Run:  python benchmarks/gate_oracle.py --variants mean full --seeds 0 1 2 3 4 --out benchmarks/results
      (after python benchmarks/dev_variants.py --variants mean full --seeds 0 1 2 3 4)
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

from querylife.metrics import per_query_metrics  # noqa: E402
from querylife.model import QueryLifeModel  # noqa: E402
from querylife.report import md_table  # noqa: E402
from querylife.runinfo import command_line, machine_info  # noqa: E402
from querylife.scoring import FeatureCache, encode_products, encode_query_vectors  # noqa: E402

sys.path.insert(0, str(Path(__file__).parent))
from benchkit import demo_dataset, run_header, write_results  # noqa: E402
from dev_variants import query_kinds  # noqa: E402

GRID = np.round(np.linspace(0.0, 1.0, 21), 2)  # candidate image weights


def fused(model: QueryLifeModel, parts: dict[str, torch.Tensor], w: np.ndarray | float) -> np.ndarray:
    """The model's own fused score (:meth:`Fusion.combine`) for image weight ``w`` (0 where there is no image)."""
    w = torch.as_tensor(w, dtype=parts["st"].dtype) * parts["has"]
    return model.fusion.combine(parts["st"], parts["sv"], parts["stv"], w).numpy()


def ndcg_by_query(pairs: pd.DataFrame, score: np.ndarray) -> pd.Series:
    return per_query_metrics(pairs.assign(score=score)).set_index("query")["ndcg@10"]


def best_w(model: QueryLifeModel, pairs: pd.DataFrame, parts: dict[str, torch.Tensor], mask: np.ndarray) -> float:
    """The grid weight with the best mean NDCG@10 over the queries of ``pairs[mask]``."""
    sub = pairs[mask]
    keep = torch.from_numpy(mask)
    p = {k: v[keep] for k, v in parts.items()}
    means = [ndcg_by_query(sub, fused(model, p, w)).mean() for w in GRID]
    return float(GRID[int(np.argmax(means))])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--variants", nargs="+", default=["mean", "full"])
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--store", default="runs/bench_seeds/data")
    parser.add_argument("--runs", default="runs/dev_variants", help="dev_variants.py's run directories")
    parser.add_argument("--out", default=None, help="write gate_oracle.md / .json here")
    args = parser.parse_args()
    start = time.time()
    store, _, data = demo_dataset(args.store)
    kind_of, image_types = query_kinds(store)
    dev = data.splits["dev"].reset_index(drop=True)
    group = np.where(dev["query_type"].isin(image_types), "image types", "title types")
    cell = np.array([f"{kind_of[q]} / {g}" for q, g in zip(dev["query"], group, strict=True)])
    rows = []
    for variant in args.variants:
        for seed in args.seeds:
            path = Path(args.runs) / f"{variant}_{seed}" / "best"
            if not path.exists():
                print(f"skipping {path}: not found (run benchmarks/dev_variants.py first)", file=sys.stderr)
                continue
            model = QueryLifeModel.from_pretrained(path).eval()
            cache = FeatureCache()
            prod_rows = data.rows(dev["product_id"])
            uniq, pos = np.unique(prod_rows, return_inverse=True)
            with torch.no_grad():
                pv = encode_products(model, data, uniq, cache)
                qs = list(dict.fromkeys(dev["query"]))
                qv = encode_query_vectors(model, qs, cache)
                index = {q: i for i, q in enumerate(qs)}
                qi = torch.tensor([index[q] for q in dev["query"]])
                q, t, v = qv[qi], pv.t[pos], pv.v[pos]  # (N, D) each
                learned = model.score(q, t, v, pv.type_ids[pos], pv.has_image[pos], pairwise=False).scores.numpy()
                parts = {  # (N,) each, in float64 so that re-scoring is exact
                    "st": (q * t).sum(-1).double(),
                    "sv": (q * v).sum(-1).double(),
                    "stv": (t * v).sum(-1).double(),
                    "has": pv.has_image[pos].double(),
                }
                everything = np.ones(len(dev), dtype=bool)
                res = {"learned": ndcg_by_query(dev, learned).mean()}
                res["mean"] = ndcg_by_query(dev, fused(model, parts, 0.5)).mean()
                w_global = best_w(model, dev, parts, everything)
                res["global"] = ndcg_by_query(dev, fused(model, parts, w_global)).mean()
                w_cell = np.zeros(len(dev))
                for c in np.unique(cell):
                    w_cell[cell == c] = best_w(model, dev, parts, cell == c)
                res["per kind"] = ndcg_by_query(dev, fused(model, parts, w_cell)).mean()
                per_w = pd.DataFrame({w: ndcg_by_query(dev, fused(model, parts, w)) for w in GRID})
            res["per query"] = per_w.max(axis=1).mean()
            kinds = {c: float(w_cell[cell == c][0]) for c in np.unique(cell)}
            rows.append({"variant": variant, "seed": seed, **res, "global w": w_global, "per-kind w": kinds})
            shown = {k: (round(x, 4) if isinstance(x, float) else x) for k, x in rows[-1].items()}
            print(json.dumps(shown), flush=True)
    if not rows:
        raise SystemExit("no trained runs found")
    df = pd.DataFrame(rows)
    cols = ["learned", "mean", "global", "per kind", "per query"]
    table = df.groupby("variant", sort=False)[cols].mean()
    table.insert(0, "seeds", df.groupby("variant", sort=False)["seed"].apply(lambda s: " ".join(map(str, s))))
    kinds = pd.DataFrame([{"variant": r["variant"], **r["per-kind w"]} for r in rows])
    kind_table = kinds.groupby("variant", sort=False).mean()
    run_meta = {"command": command_line(), "machine": machine_info()}
    text = "\n".join([
        "# Gate headroom on trained embeddings (dev split)",
        "",
        *run_header(run_meta),
        f"Dev split of the default demo storefront ({dev['query'].nunique()} queries). NDCG@10, mean over seeds; "
        "every row but learned / mean picks its weights on the pairs it is scored on (an upper bound). "
        f"{time.time() - start:.0f} s.",
        "",
        md_table(
            ["variant", *table.columns],
            [[v, r["seeds"], *(f"{x:.4f}" for x in r[cols])] for v, r in table.iterrows()],
        ),
        "",
        "Best image weight per (query kind, product-type group), mean over seeds:",
        "",
        md_table(
            ["variant", *kind_table.columns], [[v, *(f"{x:.2f}" for x in r)] for v, r in kind_table.iterrows()]
        ),
    ])
    print(text)
    if args.out:
        write_results(args.out, "gate_oracle", text + "\n", {**run_meta, "runs": rows})


if __name__ == "__main__":
    main()
