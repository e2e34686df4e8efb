"""Seed variation of the demo comparison: the same storefront, several training seeds, one table.

Single-seed differences of about 0.005 NDCG@10 are within noise on the demo (docs/TUNING.md), so the headline
comparison (Query-LIFE vs mean / type gate / single modality) is repeated over training seeds here.

Run:  python benchmarks/demo_seeds.py --seeds 0 1 2 --out benchmarks/results
Writes demo_seeds.md and demo_seeds.json (command, machine, per-seed and mean ± std numbers).

Vision towers (issue 13): one call per tower, each merged under its ``--label`` into one table, e.g.

    python benchmarks/demo_seeds.py --seeds 0 1 2 3 4 --methods image_only mean querylife --stem towers_demo \
        --label "small cnn" --set model.tower.vision_model=small_cnn --lock /path/to/shared.lock

The results are rewritten after every seed (a cut run keeps its finished seeds). Frozen-tower features (and the
frozen trunk of a partly trained EfficientNet-Lite) are computed once per process and shared by every run of it
through one FeatureCache, as a suite shares them between its methods; the first run pays for the encoding (its own
column).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")

from querylife.config import load_config, with_overrides  # noqa: E402
from querylife.data.storefront import DemoConfig  # noqa: E402
from querylife.evaluate import metrics_by_group  # noqa: E402
from querylife.methods import resolve_methods  # noqa: E402
from querylife.report import md_table  # noqa: E402
from querylife.runinfo import command_line, machine_info  # noqa: E402
from querylife.scoring import FeatureCache  # noqa: E402
from querylife.suite import Suite  # noqa: E402
from querylife.towers import vision_image_size  # noqa: E402

sys.path.insert(0, str(Path(__file__).parent))
from benchkit import (  # noqa: E402
    demo_dataset,
    file_lock,
    fmt_mean_std,
    mean_std,
    quiet_transformers,
    run_header,
    write_results,
)

METHODS = ["querylife", "mean", "type_gate", "concat", "title_only", "image_only"]
KEYS = ["ndcg@10", "roc_auc", "roc_auc_in_type"]


def epoch_seconds(run_dir: Path) -> list[float]:
    """Seconds of each epoch of a finished run, from its ``last/`` trainer state (cumulative times there)."""
    state = run_dir / "last" / "trainer_state.json"
    if not state.exists():
        return []
    cumulative = [h["seconds"] for h in json.loads(state.read_text()).get("history", [])]
    return [round(b - a, 2) for a, b in zip([0.0, *cumulative[:-1]], cumulative, strict=True)]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--methods", nargs="+", default=METHODS)
    parser.add_argument("--products", type=int, default=3000)
    parser.add_argument("--image-size", type=int, default=None,
                        help="storefront render size (default: the configured vision tower's, as the demo renders)")
    parser.add_argument("--work", default="runs/bench_seeds")
    parser.add_argument("--out", default="benchmarks/results")
    parser.add_argument("--stem", default="demo_seeds", help="results file name (STEM.md, STEM.json)")
    parser.add_argument("--label", help="merge this call's rows under LABEL into an existing STEM.json")
    parser.add_argument("--lock", help="hold an exclusive flock on this file during each seed (shared machines)")
    parser.add_argument("--set", dest="overrides", action="append", default=[], help="config override KEY=VALUE")
    parser.add_argument("--render", action="store_true", help="only rewrite STEM.md from STEM.json")
    parser.add_argument(
        "--paired", nargs=2, action="append", default=[], metavar=("A", "B"),
        help="also report A - B paired by seed (repeatable; querylife - mean is reported whenever both ran)",
    )
    args = parser.parse_args()
    if args.render:
        render_only(args.out, args.stem, args.products)
        return
    args.methods = list(resolve_methods(args.methods))  # old names (full) run under their new ones
    quiet_transformers()
    start, cpu_start = time.time(), time.process_time()
    if args.image_size is None:
        args.image_size = vision_image_size(load_config(None, args.overrides).model.tower)
    data_dir = Path(args.work) / ("data" if args.image_size == 64 else f"data_{args.image_size}")
    with file_lock(args.lock):
        store, base, data = demo_dataset(
            data_dir, args.overrides, DemoConfig(n_products=args.products, seed=0, image_size=args.image_size)
        )
    groups = store.type_groups()
    cache = FeatureCache()  # frozen-tower features and trunks: computed by the first run, shared by all (as in a suite)
    per_seed: dict[str, dict[int, dict]] = {m: {} for m in args.methods}
    timing: dict[str, float] = {}
    for i, seed in enumerate(args.seeds):
        with file_lock(args.lock):
            cfg = with_overrides(base, {"train.seed": seed})
            suite = Suite(cfg, data, Path(args.work) / f"seed{seed}", progress=False, n_boot=0, log=lambda s: None)
            suite.cache = cache
            runs = []
            for m in args.methods:
                cpu = time.process_time()
                runs.append(suite.run_method(m))
                runs[-1].extra["cpu_seconds"] = time.process_time() - cpu
        by_group = metrics_by_group(runs, groups, seed=seed)
        for r in runs:
            epochs = epoch_seconds(suite.out_dir / "runs" / r.name)
            per_seed[r.name][seed] = {
                "overall": {k: r.result.overall[k] for k in KEYS},
                "groups": by_group[r.name],
                "seconds": round(r.seconds, 1),
                "cpu_seconds": round(r.extra["cpu_seconds"], 1),
                "train_seconds": r.extra.get("train_seconds"),
                "epoch_seconds": epochs,
                "best_epoch": r.extra.get("best_epoch"),
                "dev_ndcg@10": r.extra.get("dev_ndcg@10"),
                "false_negatives": r.extra.get("false_negatives"),  # per epoch: what the judge masked (if any)
            }
        print(f"seed {seed}: " + ", ".join(f"{r.name} {r.result.overall['ndcg@10']:.4f}" for r in runs), flush=True)
        timing = {
            "wall_seconds": round(time.time() - start, 1),
            "cpu_seconds": round(time.process_time() - cpu_start, 1),
        }
        write_table(args, groups, {m: {s: per_seed[m][s] for s in args.seeds[: i + 1]} for m in args.methods}, timing)


def later_epochs(runs: list[dict]) -> list[float]:
    """Epoch times after each run's first (the first can include encoding a frozen trunk)."""
    return [t for r in runs for t in r["epoch_seconds"][1:]]


def write_table(args, groups: list[str], per_seed: dict[str, dict[int, dict]], timing: dict[str, float]) -> None:
    """Write (or, with ``--label``, merge into) ``STEM.md`` / ``STEM.json`` from the seeds finished so far."""
    seeds = sorted(next(iter(per_seed.values())))
    cols = [
        ("NDCG@10", lambda d: d["overall"]["ndcg@10"]),
        ("ROC-AUC", lambda d: d["overall"]["roc_auc"]),
        ("AUC in type", lambda d: d["overall"]["roc_auc_in_type"]),
    ]
    for g in groups:
        cols += [
            (f"{g} NDCG@10", lambda d, g=g: d["groups"][g]["ndcg@10"]),
            (f"{g} ROC-AUC", lambda d, g=g: d["groups"][g]["roc_auc"]),
            (f"{g} AUC in type", lambda d, g=g: d["groups"][g].get("roc_auc_in_type", float("nan"))),
            (f"{g} image weight", lambda d, g=g: d["groups"][g]["image_weight"]),
        ]
    summary = {m: {name: mean_std(get(per_seed[m][s]) for s in seeds) for name, get in cols} for m in per_seed}
    speed = {}
    for m, runs in per_seed.items():
        rs = [runs[s] for s in seeds]
        later = later_epochs(rs)
        speed[m] = {
            "first_run_seconds": rs[0]["seconds"],
            "run_seconds_after_first": statistics.median(r["seconds"] for r in rs[1:]) if len(rs) > 1 else None,
            "epoch_seconds": statistics.median(later) if later else None,
            "first_epoch_seconds": rs[0]["epoch_seconds"][0] if rs[0]["epoch_seconds"] else None,
            "epochs": statistics.mean(len(r["epoch_seconds"]) for r in rs),
            "cpu_seconds": round(sum(r["cpu_seconds"] for r in rs), 1),
        }
    entry = {
        "command": command_line(),
        "machine": machine_info(),
        "seeds": seeds,
        "image_size": args.image_size,
        "overrides": args.overrides,
        "paired": [list(p) for p in args.paired],
        "summary": summary,
        "speed": speed,
        "per_seed": per_seed,
        **timing,
    }
    path = Path(args.out) / f"{args.stem}.json"
    if args.label:
        merged = json.loads(path.read_text()) if path.exists() else {"towers": {}}
        merged["towers"][args.label] = entry
    else:
        merged = {"towers": {"": entry}}
    md = render(merged, args.products)
    write_results(args.out, args.stem, md, merged)
    print("\n".join(md[-6:]), flush=True)


def paired(e: dict, a: str, b: str, key: str = "ndcg@10") -> str:
    """``a - b`` per seed on ``key``: mean ± std and on how many seeds ``a`` is ahead."""

    def at(method: str, seed: int) -> float:  # seeds are int keys in memory, str keys once read back from JSON
        runs = e["per_seed"][method]
        return runs[seed if seed in runs else str(seed)]["overall"][key]

    diffs = [at(a, s) - at(b, s) for s in e["seeds"]]
    cell = mean_std(diffs)
    return f"{cell['mean']:+.4f} ± {cell['std']:.4f} (ahead on {sum(d > 0 for d in diffs)} of {len(diffs)})"


def render(merged: dict, products: int) -> list[str]:
    """The Markdown of every tower (label) in a results file."""
    md = ["# Demo storefront: seed variation", ""]
    for label, e in merged["towers"].items():
        names = list(next(iter(e["summary"].values())))
        md += [f"## {label}", ""] if label else []
        md += [
            *run_header(e),
            f"Storefront: {products} products rendered at {e['image_size']} px, data seed 0, split by intent; "
            f"overrides {e['overrides'] or 'none'}; training seeds {e['seeds']}; test split; mean ± sample std over "
            f"seeds. Total {e['wall_seconds']:.0f} s wall, {e['cpu_seconds']:.0f} s CPU in this process.",
            "",
            md_table(["method", *names], [[m, *map(fmt_mean_std, e["summary"][m].values())] for m in e["summary"]]),
            "",
            md_table(
                [
                    "method",
                    "first run s",
                    "later runs s (median)",
                    "s / epoch (median, after epoch 1)",
                    "epoch 1 s",
                    "epochs run",
                    "CPU s (all seeds)",
                ],
                [[m, *("–" if v is None else f"{v:.1f}" for v in sp.values())] for m, sp in e["speed"].items()],
            ),
            "",
        ]
        pairs = [("querylife", "mean")] if "querylife" in e["summary"] and "mean" in e["summary"] else []
        pairs += [tuple(p) for p in e.get("paired", []) if all(m in e["summary"] for m in p)]
        for a, b in pairs:
            md += [f"{a} - {b}, paired by seed: " + "; ".join(f"{k} {paired(e, a, b, k)}" for k in KEYS), ""]
    return md


def render_only(out: str, stem: str, products: int) -> None:
    """Rewrite ``STEM.md`` from ``STEM.json`` (e.g. after a cut run)."""
    merged = json.loads((Path(out) / f"{stem}.json").read_text())
    write_results(out, stem, render(merged, products), merged)


if __name__ == "__main__":
    main()
