"""Seed variation of the demo comparison: the same storefront, several training seeds, one table.

Single-seed differences of about 0.005 NDCG@10 are within noise on the demo (docs/TUNING.md), so the headline
comparison (Query-LIFE vs mean / type gate / single modality) is repeated over training seeds here.

Run:  python benchmarks/demo_seeds.py --seeds 0 1 2 --out benchmarks/results
Writes demo_seeds.md and demo_seeds.json (command, machine, per-seed and mean ± std numbers).
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

from querylife.checkpoint import atomic_write_text  # noqa: E402
from querylife.config import load_config, with_overrides  # noqa: E402
from querylife.data.prepare import prepare_from_config  # noqa: E402
from querylife.data.storefront import DemoConfig, generate_demo  # noqa: E402
from querylife.evaluate import metrics_by_group  # noqa: E402
from querylife.methods import resolve_methods  # noqa: E402
from querylife.report import machine_info  # noqa: E402
from querylife.suite import Suite  # noqa: E402

METHODS = ["querylife", "mean", "type_gate", "concat", "title_only", "image_only"]
KEYS = ["ndcg@10", "roc_auc", "roc_auc_in_type"]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--methods", nargs="+", default=METHODS)
    parser.add_argument("--products", type=int, default=3000)
    parser.add_argument("--work", default="runs/bench_seeds")
    parser.add_argument("--out", default="benchmarks/results")
    parser.add_argument("--set", dest="overrides", action="append", default=[], help="config override KEY=VALUE")
    args = parser.parse_args()
    args.methods = list(resolve_methods(args.methods))  # old names (full) run under their new ones
    from transformers.utils import logging as hf_logging

    hf_logging.set_verbosity_error()
    hf_logging.disable_progress_bar()
    start = time.time()
    store = generate_demo(Path(args.work) / "data", DemoConfig(n_products=args.products, seed=0), progress=False)
    groups = store.type_groups()
    base = load_config(
        None,
        [
            *(f"{k}={v}" for k, v in store.config_overrides().items()),
            *args.overrides,
        ],
    )
    data = prepare_from_config(base, progress=False)
    per_seed: dict[str, dict[str, dict]] = {m: {} for m in args.methods}
    for seed in args.seeds:
        cfg = with_overrides(base, {"train.seed": seed})
        suite = Suite(cfg, data, Path(args.work) / f"seed{seed}", progress=False, n_boot=0, log=lambda s: None)
        runs = [suite.run_method(m) for m in args.methods]
        by_group = metrics_by_group(runs, groups, seed=seed)
        for r in runs:
            per_seed[r.name][seed] = {
                "overall": {k: r.result.overall[k] for k in KEYS},
                "groups": by_group[r.name],
                "seconds": round(r.seconds, 1),
            }
        print(f"seed {seed}: " + ", ".join(f"{r.name} {r.result.overall['ndcg@10']:.4f}" for r in runs), flush=True)

    def stat(method: str, getter) -> tuple[float, float]:
        vals = np.array([getter(per_seed[method][s]) for s in args.seeds], dtype=float)
        return float(vals.mean()), float(vals.std(ddof=1)) if len(vals) > 1 else 0.0

    cols = [
        ("NDCG@10", lambda d: d["overall"]["ndcg@10"]),
        ("ROC-AUC", lambda d: d["overall"]["roc_auc"]),
        ("AUC in type", lambda d: d["overall"]["roc_auc_in_type"]),
    ]
    for g in groups:
        cols += [
            (f"{g} NDCG@10", lambda d, g=g: d["groups"][g]["ndcg@10"]),
            (f"{g} ROC-AUC", lambda d, g=g: d["groups"][g]["roc_auc"]),
            (f"{g} image weight", lambda d, g=g: d["groups"][g]["image_weight"]),
        ]
    lines = ["| method | " + " | ".join(c for c, _ in cols) + " |", "|:---|" + "---:|" * len(cols)]
    summary = {}
    for m in args.methods:
        cells, summary[m] = [], {}
        for name, get in cols:
            mean, std = stat(m, get)
            summary[m][name] = {"mean": mean, "std": std}
            cells.append("–" if np.isnan(mean) else f"{mean:.4f} ± {std:.4f}")
        lines.append(f"| {m} | " + " | ".join(cells) + " |")
    command = "python " + " ".join(sys.argv)
    machine = machine_info()
    md = [
        "# Demo storefront: seed variation",
        "",
        f"Command: `{command}`  ",
        f"Machine: {machine['platform']}, {machine['cpu_count']} CPUs, torch {machine['torch']}  ",
        f"Storefront: {args.products} products, data seed 0, split by intent; training seeds {args.seeds}; "
        f"test split; mean ± sample std over seeds. Total {time.time() - start:.0f} s.",
        "",
        *lines,
        "",
    ]
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    atomic_write_text(out / "demo_seeds.md", "\n".join(md))
    atomic_write_text(
        out / "demo_seeds.json",
        json.dumps(
            {"command": command, "machine": machine, "seeds": args.seeds, "summary": summary, "per_seed": per_seed},
            indent=2,
            default=float,
        )
        + "\n",
    )
    print("\n".join(md))


if __name__ == "__main__":
    main()
