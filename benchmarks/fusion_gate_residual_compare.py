"""Dev-split comparison of ``query_gate_residual`` (fusion mode ``query_type_gate_residual``, issue 14's "gate over
concatenated features") against the baseline work directory's ``query_gate`` and ``concat`` runs, paired by
(storefront, training seed): per storefront and per type group, NDCG@10, pooled ROC-AUC and within-type ROC-AUC.
Decisions are made on dev only; the test split's numbers are written as information (never a decision).

Run:  python benchmarks/fusion_gate_residual_compare.py --base runs/fusion_lite0 --variant runs/fusion_gate_residual
      --stem fusion_gate_residual_dev --out benchmarks/results
      (each WORK holds the runs.jsonl and meta.json fusion_storefronts.py wrote; commands are copied without --lock)
"""

from __future__ import annotations

import argparse
import json
import re
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).parent))
from benchkit import machine_summary, write_results  # noqa: E402

from querylife.report import md_table  # noqa: E402

STOREFRONTS = ["demo", "home_books", "media_market"]
GROUPS = ["overall", "image-informative", "title-informative", "mixed"]
KEYS = {"ndcg@10": "NDCG@10", "roc_auc": "ROC-AUC", "roc_auc_in_type": "ROC-AUC in type"}
VARIANT = "query_gate_residual"
BASELINES = ("query_gate", "concat")


def _records(work: Path) -> list[dict]:
    return [json.loads(line) for line in (work / "runs.jsonl").read_text().splitlines() if line.strip()]


def _command(work: Path) -> str:
    cmd = json.loads((work / "meta.json").read_text())["command"]
    return re.sub(r"\s--lock\s+\S+", "", cmd)  # a shared machine's lock file is no part of the method


def compare(base: list[dict], variant: list[dict], split: str) -> list[dict]:
    """One row per (storefront, group, metric): per-seed values of the variant and each baseline, and the paired
    differences variant - baseline, on ``split`` ("dev" or "test")."""
    rows = []
    for store in STOREFRONTS:
        var = {r["seed"]: r for r in variant if (r["storefront"], r["method"]) == (store, VARIANT)}
        bases = {m: {r["seed"]: r for r in base if (r["storefront"], r["method"]) == (store, m)} for m in BASELINES}
        seeds = sorted(s for s in var if all(s in bases[m] for m in BASELINES))
        if not seeds:
            continue
        for g in GROUPS:
            if g not in var[seeds[0]][split]:
                continue
            for key in KEYS:
                row = {"storefront": store, "group": g, "metric": key, "seeds": seeds,
                       VARIANT: [var[s][split][g][key] for s in seeds]}  # fmt: skip
                for m in BASELINES:
                    row[m] = [bases[m][s][split][g][key] for s in seeds]
                    row[f"delta_{m}"] = [a - b for a, b in zip(row[VARIANT], row[m], strict=True)]
                rows.append(row)
    return rows


def _mean(values: list[float]) -> str:
    return f"{np.mean(values):.4f}"


def _delta(values: list[float]) -> str:
    inner = ", ".join(f"{v:+.4f}" for v in values)
    return f"{np.mean(values):+.4f}" + (f" ({inner})" if len(values) > 1 else "")


def _table(rows: list[dict]) -> str:
    header = ["storefront", "group", "metric", "seeds", f"`{VARIANT}`", "`query_gate`", "`concat`",
              "Δ vs query_gate (per seed)", "Δ vs concat (per seed)"]  # fmt: skip
    body = [
        [r["storefront"], r["group"], KEYS[r["metric"]], ",".join(map(str, r["seeds"])), _mean(r[VARIANT]),
         _mean(r["query_gate"]), _mean(r["concat"]), _delta(r["delta_query_gate"]), _delta(r["delta_concat"])]
        for r in rows
    ]  # fmt: skip
    return md_table(header, body)


def _gate_weights(variant: list[dict], base: list[dict]) -> list[str]:
    """Mean in-type image weight per product type on test (the gate's, as fusion_storefronts reports)."""
    lines = []
    for store in STOREFRONTS:
        seeds = {r["seed"] for r in variant if (r["storefront"], r["method"]) == (store, VARIANT)}
        for name, recs in ((VARIANT, variant), ("query_gate", base)):
            rs = [r for r in recs if (r["storefront"], r["method"]) == (store, name) and r.get("gate_by_type")
                  and r["seed"] in seeds]  # fmt: skip
            if not rs:
                continue
            types = sorted(rs[0]["gate_by_type"])
            cells = ", ".join(f"{t} {np.mean([r['gate_by_type'][t] for r in rs]):.2f}" for t in types)
            lines.append(f"- {store}, `{name}` (seeds {','.join(str(r['seed']) for r in rs)}): {cells}")
    return lines


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--base", required=True, help="fusion_storefronts.py work directory with query_gate, concat")
    parser.add_argument("--variant", required=True, help="work directory with query_gate_residual runs")
    parser.add_argument("--stem", default="fusion_gate_residual_dev")
    parser.add_argument("--out", default="benchmarks/results")
    parser.add_argument("--note", default="", help="a paragraph placed under the header")
    parser.add_argument("--reading", default="", help="a paragraph placed after the dev tables")
    args = parser.parse_args()
    base_work, var_work = Path(args.base), Path(args.variant)
    base, variant = _records(base_work), _records(var_work)
    machines = sorted({machine_summary(json.loads((w / "meta.json").read_text())["machine"])
                       for w in (base_work, var_work)})  # fmt: skip
    dev, test = compare(base, variant, "dev"), compare(base, variant, "test")
    md = [
        "# Query-aware gate + concat's MLP as a residual (`query_type_gate_residual`), dev split",
        "",
        f"Variant: `{_command(var_work)}`  ",
        f"Baseline (`query_gate`, `concat`, the same storefronts, data seed and training seeds): "
        f"`{_command(base_work)}`  ",
        f"Compared with: `python benchmarks/fusion_gate_residual_compare.py --base {base_work} --variant {var_work} "
        f"--stem {args.stem}`  ",
        "Machine: " + "; ".join(machines) + ". The machine was shared by several agents (2 cores); no timings "
        "are reported.",
        "",
        "Each cell: mean over the seeds; Δ = variant - baseline paired by training seed (per seed in brackets). "
        "Frozen EfficientNet-Lite0 image features, data seed 0, each storefront's split by intent.",
        "",
        *([args.note, ""] if args.note else []),
        "## Dev (where the decision is made)",
        "",
        _table(dev),
        "",
        *([args.reading, ""] if args.reading else []),
        "## Test (information only: no decision is taken on it)",
        "",
        _table(test),
        "",
        "## Gate image weight per product type (test, in-type candidates, mean over seeds)",
        "",
        *_gate_weights(variant, base),
        "",
    ]
    payload = {
        "variant": {"work": str(var_work), "command": _command(var_work), "method": VARIANT},
        "base": {"work": str(base_work), "command": _command(base_work), "methods": list(BASELINES)},
        "machines": machines,
        "dev": dev,
        "test": test,
    }
    path = write_results(args.out, args.stem, md, payload)
    print("\n".join(md))
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
