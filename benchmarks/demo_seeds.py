"""Seed variation of the demo comparison: the same storefront, several training seeds, one table.

Single-seed differences of about 0.005 NDCG@10 are within noise on the demo (docs/TUNING.md), so the headline
comparison (Query-LIFE vs mean / type gate / single modality) is repeated over training seeds here.

Run:  python benchmarks/demo_seeds.py --seeds 0 1 2 --out benchmarks/results
Writes demo_seeds.md and demo_seeds.json (command, machine, per-seed and mean ± std numbers).
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")

from querylife.config import with_overrides  # noqa: E402
from querylife.data.storefront import DemoConfig  # noqa: E402
from querylife.evaluate import metrics_by_group  # noqa: E402
from querylife.methods import resolve_methods  # noqa: E402
from querylife.report import md_table  # noqa: E402
from querylife.runinfo import command_line, machine_info  # noqa: E402
from querylife.seeds import aggregate_seeds, seeds_section  # noqa: E402
from querylife.suite import Suite  # noqa: E402

sys.path.insert(0, str(Path(__file__).parent))
from benchkit import demo_dataset, fmt_mean_std, mean_std, quiet_transformers, run_header, write_results  # noqa: E402

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
    quiet_transformers()
    start = time.time()
    store, base, data = demo_dataset(
        Path(args.work) / "data", args.overrides, DemoConfig(n_products=args.products, seed=0)
    )
    groups = store.type_groups()
    per_seed: dict[str, dict[str, dict]] = {m: {} for m in args.methods}
    runs_by_seed = {}
    for seed in args.seeds:
        cfg = with_overrides(base, {"train.seed": seed})
        suite = Suite(cfg, data, Path(args.work) / f"seed{seed}", progress=False, n_boot=0, log=lambda s: None)
        runs = [suite.run_method(m) for m in args.methods]
        runs_by_seed[seed] = runs
        by_group = metrics_by_group(runs, groups, seed=seed)
        for r in runs:
            per_seed[r.name][seed] = {
                "overall": {k: r.result.overall[k] for k in KEYS},
                "groups": by_group[r.name],
                "seconds": round(r.seconds, 1),
            }
        print(f"seed {seed}: " + ", ".join(f"{r.name} {r.result.overall['ndcg@10']:.4f}" for r in runs), flush=True)

    # One aggregation for the CLI (`querylife eval --suite --seeds N`) and this script: mean ± std, paired
    # intervals against querylife, overall and per type group (querylife.seeds).
    summary = aggregate_seeds(runs_by_seed, n_boot=1000, seed=args.seeds[0], groups=groups)
    weights = {
        m: {g: mean_std(per_seed[m][s]["groups"][g]["image_weight"] for s in args.seeds) for g in groups}
        for m in args.methods
    }
    meta = {"command": command_line(), "machine": machine_info()}
    md = [
        "# Demo storefront: seed variation",
        "",
        *run_header(meta),
        f"Storefront: {args.products} products, data seed 0, split by intent; training seeds {args.seeds}; "
        f"test split; mean ± sample std over seeds. Total {time.time() - start:.0f} s.",
        "",
        seeds_section(summary, n_boot=1000),
        "",
        "Mean image weight of the gate on in-type candidates, per type group (mean ± std over seeds):",
        "",
        md_table(["method", *groups], [[m, *(fmt_mean_std(weights[m][g], 2) for g in groups)] for m in args.methods]),
        "",
    ]
    payload = {**meta, "seeds": args.seeds, "summary": summary.to_dict(), "image_weight": weights, "per_seed": per_seed}
    write_results(args.out, "demo_seeds", md, payload)
    print("\n".join(md))


if __name__ == "__main__":
    main()
