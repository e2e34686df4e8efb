"""Which vision tower should be the default? Two recorded fusion_storefronts.py result sets, one per tower, read back
and compared per (storefront, data sample): each fusion's mean over training seeds on **dev** (what the choice is
made on) and test (information only), and, paired by training seed, the query-aware gate on tower B minus the best
fusion of tower A picked on dev (its best chance).

Run:  python benchmarks/tower_default_compare.py --a cnn_current --b lite0_strength --stem tower_default
      (reads benchmarks/results/fusion_<storefront>_<tag>[_ds1].json, as `fusion_storefronts.py --report --tag`
      wrote them; no training)
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
from benchkit import write_results  # noqa: E402

from querylife.report import md_table  # noqa: E402
from querylife.runinfo import command_line  # noqa: E402

STOREFRONTS = ["demo", "home_books", "media_market"]
FUSIONS = ["query_gate", "mean", "concat"]
METRICS = {"ndcg@10": "NDCG@10", "roc_auc_in_type": "ROC-AUC in type"}


def _load(results: Path, store: str, tag: str, sample: str) -> dict | None:
    path = results / f"fusion_{store}_{tag}{sample}.json"
    return json.loads(path.read_text()) if path.exists() else None


def _mean(values: list[float]) -> float:
    return statistics.fmean(values)


def compare(results: Path, tag_a: str, tag_b: str) -> tuple[list[list[str]], list[dict]]:
    """Rows of the table and the per-pair records for the JSON payload."""
    rows, records = [], []
    for sample, label in (("", "data seed 0"), ("_ds1", "data seed 1")):
        for store in STOREFRONTS:
            a, b = _load(results, store, tag_a, sample), _load(results, store, tag_b, sample)
            if a is None or b is None:
                continue
            if a["seeds"] != b["seeds"]:
                raise SystemExit(f"{store}{sample}: the two result sets have different training seeds")
            ma, mb = a["methods"], b["methods"]
            # tower A's best fusion on dev NDCG@10: the strongest rival the gate on tower B has to meet
            best_a = max(FUSIONS, key=lambda m: _mean(ma[m]["dev"]["ndcg@10"]))
            rec = {"storefront": store, "sample": label, "seeds": a["seeds"], "best_a_on_dev": best_a}
            for split in ("dev", "test"):
                for metric, name in METRICS.items():
                    gate_b, rival = mb["query_gate"][split][metric], ma[best_a][split][metric]
                    diffs = [x - y for x, y in zip(gate_b, rival, strict=True)]
                    rec[f"{split} {metric}"] = {
                        "a": {m: _mean(ma[m][split][metric]) for m in FUSIONS},
                        "b": {m: _mean(mb[m][split][metric]) for m in FUSIONS},
                        "gate_b_minus_best_a": {"mean": _mean(diffs), "min": min(diffs), "max": max(diffs),
                                                "ahead": sum(d > 0 for d in diffs)},
                    }
                    cell = rec[f"{split} {metric}"]
                    d = cell["gate_b_minus_best_a"]
                    rows.append([
                        f"{store} ({label})", split, name,
                        " / ".join(f"{cell['a'][m]:.4f}" for m in FUSIONS),
                        " / ".join(f"{cell['b'][m]:.4f}" for m in FUSIONS),
                        f"`{best_a}`", f"{d['mean']:+.4f} [{d['min']:+.4f}, {d['max']:+.4f}]",
                        f"{d['ahead']} / {len(diffs)}",
                    ])
            records.append(rec)
    return rows, records


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--a", required=True, help="tag of tower A's result files (e.g. cnn_current)")
    parser.add_argument("--b", required=True, help="tag of tower B's result files (e.g. lite0_strength)")
    parser.add_argument("--results", default="benchmarks/results")
    parser.add_argument("--out", default="benchmarks/results")
    parser.add_argument("--stem", default="tower_default")
    args = parser.parse_args()
    rows, records = compare(Path(args.results), args.a, args.b)
    if not records:
        raise SystemExit(f"no storefront has both fusion_*_{args.a}.json and fusion_*_{args.b}.json")
    header = ["storefront (sample)", "split", "metric", f"A = {args.a}: gate / mean / concat",
              f"B = {args.b}: gate / mean / concat", "A's best on dev NDCG@10",
              "B gate - A best, paired by seed: mean [min, max]", "seeds B gate ahead"]
    commands = sorted({json.loads((Path(args.results) / f"fusion_{r['storefront']}_{t}{s}.json").read_text())["command"]
                       for r in records for t in (args.a, args.b)
                       for s in ("_ds1" if r["sample"] == "data seed 1" else "",)})
    md = [
        f"# Vision tower for the default: {args.a} (A) vs {args.b} (B)",
        "",
        f"Command: `{command_line()}` (reads the recorded results; no training)  ",
        "Source runs (each file's own header has its machine and commit):",
        "",
        *[f"- `{c}`" for c in commands],
        "",
        "Mean over the training seeds of each fusion. The last two columns pair B's query-aware gate with A's best "
        "fusion on dev NDCG@10, training seed by seed (same storefront, same split, same seed; only the tower and "
        "what follows from it differ): the mean difference and its range over seeds. Dev decides; test is shown "
        "as information.",
        "",
        md_table(header, rows),
        "",
    ]
    write_results(args.out, args.stem, md, {"a": args.a, "b": args.b, "command": command_line(),
                                            "source_commands": commands, "pairs": records})
    print("\n".join(md))


if __name__ == "__main__":
    main()
