"""Dev-split experiments on the fusion gate (issue: Query-LIFE vs mean fusion on the demo storefront).

Trains each named variant (config overrides on top of the defaults) for each training seed on the default demo
storefront and scores the **dev** split only (these runs informed choices, so they never look at test): NDCG@10
overall, per query modality (queries naming only photo attributes, only title attributes, or both), on the
image-informative types, pooled ROC-AUC, and the mean image weight of the gate on in-type candidates of
photo-attribute and title-attribute queries.

Run:  python benchmarks/dev_variants.py --seeds 0 1 2 --variants full mean type_gate > runs/dev_variants.jsonl
      (one JSON line per run, then a table of means per variant)
      --store DIR uses another storefront directory (e.g. a generator variant).

Variants of options that have since been removed (a separate gate-network learning rate, a gate that sees the
modality vectors, no renormalisation, the image score offset, a same-type-negatives term: gnet*, mods, *norenorm,
*offset, *_it*) are no longer in the table: benchmarks/results/dev_variants.md keeps their record and
docs/TUNING.md summarises it.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import pandas as pd  # noqa: E402

from querylife.config import with_overrides  # noqa: E402
from querylife.metrics import classification_metrics, per_query_metrics  # noqa: E402
from querylife.scoring import FeatureCache, score_pairs  # noqa: E402
from querylife.towers import TextTower  # noqa: E402
from querylife.train import Trainer  # noqa: E402

sys.path.insert(0, str(Path(__file__).parent))
from benchkit import demo_dataset, quiet_transformers  # noqa: E402

CNN = {"model.tower.vision_model": "small_cnn"}  # the small CNN's own variants (it was the default tower then)
BIG_CNN = {**CNN, "model.tower.small_cnn.channels": [32, 64, 128, 256], "train.epochs": 15, "train.patience": 5}
VARIANTS: dict[str, dict] = {
    "full": {},
    "mean": {"model.fusion.mode": "mean"},
    "type_gate": {"model.fusion.mode": "type_gate"},
    "aux1": {"loss.query_title": 1.0, "loss.query_image": 1.0},
    "mean_aux1": {"model.fusion.mode": "mean", "loss.query_title": 1.0, "loss.query_image": 1.0},
    "hn1": {"train.hard_negatives": 1},
    "mean_hn1": {"model.fusion.mode": "mean", "train.hard_negatives": 1},
    "full_big": BIG_CNN,
    "mean_big": {"model.fusion.mode": "mean", **BIG_CNN},
    "full_d32": {"model.embed_dim": 32},
    "mean_d32": {"model.fusion.mode": "mean", "model.embed_dim": 32},
    "full_gs0": {"train.gate_start_fraction": 0.0},
    "full_gs30": {"train.gate_start_fraction": 0.3},
    "full_gs50": {"train.gate_start_fraction": 0.5},
    "type_gate_gs50": {"model.fusion.mode": "type_gate", "train.gate_start_fraction": 0.5},
    "full_glr1": {"train.gate_lr_multiplier": 1.0},
    "full_fcnn": {**CNN, "model.tower.train_vision_layers": 0},
    "mean_fcnn": {"model.fusion.mode": "mean", **CNN, "model.tower.train_vision_layers": 0},
    "full_sharedq": {"model.separate_query_projection": False},
    "mean_sharedq": {"model.fusion.mode": "mean", "model.separate_query_projection": False},
    "type_gate_sharedq": {"model.fusion.mode": "type_gate", "model.separate_query_projection": False},
}


def query_modality(attributes: str, product_type: str, drawn: dict[str, set[str]]) -> str:
    keys = set(json.loads(attributes))
    if not keys:
        return "bare"
    if keys <= drawn[product_type]:
        return "photo"
    return "title" if not keys & drawn[product_type] else "both"


def query_kinds(store) -> tuple[dict[str, str], set[str]]:
    """query -> its kind (photo / title / both / bare, from the attributes it names), and the image-informative
    product types, from a demo storefront's metadata."""
    meta = json.loads(store.meta_path.read_text())
    drawn = {t: set(v["image_attributes"]) for t, v in meta["product_types"].items()}
    queries = pd.read_parquet(store.out_dir / "queries.parquet")
    triples = zip(queries["query"], queries["attributes"], queries["product_type"], strict=True)
    return {q: query_modality(a, t, drawn) for q, a, t in triples}, set(meta["image_informative_types"])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--variants", nargs="+", default=["full", "mean"], choices=list(VARIANTS))
    parser.add_argument("--store", default="runs/bench_seeds/data", help="storefront dir (made if missing)")
    parser.add_argument("--work", default="runs/dev_variants", help="run directories (VARIANT_SEED); use one per store")
    parser.add_argument(
        "--base-set", action="append", default=[], metavar="KEY=VALUE", help="override applied to every variant"
    )
    args = parser.parse_args()
    quiet_transformers()
    store, base, data = demo_dataset(args.store, args.base_set)
    modality, image_types = query_kinds(store)
    cache = FeatureCache()
    tc = base.model.tower
    tower = TextTower(tc.text_model, pooling=tc.pooling, max_length=tc.max_text_length)
    dev = data.splits["dev"]
    rows = []
    for name in args.variants:
        for seed in args.seeds:
            start = time.time()
            cfg = with_overrides(base, {**VARIANTS[name], "train.seed": seed})
            run_dir = f"{args.work}/{name}_{seed}"
            trained = Trainer(cfg, data, run_dir, cache=cache, towers=(tower, None, None), progress=False).fit()
            s = score_pairs(trained.model, data, dev, cache)
            scored = dev.assign(score=s.score, w=s.image_weight, mod=dev["query"].map(modality))
            pq = per_query_metrics(scored)
            pq["mod"] = pq["query"].map(modality)
            img_queries = set(scored.loc[scored["query_type"].isin(image_types), "query"])
            in_type = scored[scored["product_type"] == scored["query_type"]]
            row = {
                "variant": name,
                "seed": seed,
                "ndcg": pq["ndcg@10"].mean(),
                "auc": classification_metrics(scored)["roc_auc"],
                "ndcg_image_types": pq.loc[pq["query"].isin(img_queries), "ndcg@10"].mean(),
                "auc_image_types": classification_metrics(scored[scored["query_type"].isin(image_types)])["roc_auc"],
                **{f"ndcg_{m}": v for m, v in pq.groupby("mod")["ndcg@10"].mean().items() if m != "bare"},
                **{f"w_{m}": v for m, v in in_type.groupby("mod")["w"].mean().items() if m != "bare"},
                "best_epoch": trained.best_epoch,
                "seconds": round(time.time() - start, 1),
            }
            rows.append(row)
            print(json.dumps({k: round(v, 4) if isinstance(v, float) else v for k, v in row.items()}), flush=True)
    table = pd.DataFrame(rows).drop(columns=["seed"]).groupby("variant", sort=False).mean().round(4)
    print(table.to_string())


if __name__ == "__main__":
    main()
