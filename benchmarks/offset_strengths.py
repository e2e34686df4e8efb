"""The query offset's strength as dev chose it (``model.query_offset.strength="dev"``): per storefront and fusion
mode over training seeds, and per CrowdFlower fold, with the dev ROC-AUC in type at raw scores (strength 0), at the
full offset (1) and at the chosen strength.

Reads what the runs recorded, trains nothing: ``best/summary.json`` of every run in fusion_storefronts.py work
directories (``--work NAME=DIR``, repeatable) and the per-fold ``offset_strength`` of a crowdflower.py result
(``--crowdflower crowdflower.json``).

Run:  python benchmarks/offset_strengths.py --work ds0=runs/fusion_strength --work ds1=runs/fusion_strength_ds1 \
          --crowdflower benchmarks/results/crowdflower_strength/crowdflower.json
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).parent))
from benchkit import run_header, write_results  # noqa: E402

from querylife.report import md_table  # noqa: E402
from querylife.runinfo import command_line, machine_info  # noqa: E402


def storefront_rows(name: str, work: Path) -> list[dict]:
    """One row per (storefront, seed, method) run of a fusion_storefronts.py work directory that chose on dev."""
    rows = []
    for summary in sorted(work.glob("*/seed*/runs/*/best/summary.json")):
        fit = json.loads(summary.read_text()).get("query_offset")
        if not fit or fit.get("chosen_by") != "dev":
            continue
        method_dir = summary.parents[1]
        seed_dir = method_dir.parents[1]
        curve = fit["dev_auc"]
        rows.append({"sample": name, "storefront": seed_dir.parent.name, "seed": int(seed_dir.name[4:]),
                     "method": method_dir.name, "strength": fit["strength"], "dev_raw": curve["0.0"],
                     "dev_full": curve["1.0"], "dev_chosen": curve[f"{fit['strength']:.1f}"]})  # fmt: skip
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--work", action="append", default=[], help="NAME=DIR of a fusion_storefronts.py run")
    parser.add_argument("--crowdflower", default=None, help="a crowdflower.py result JSON (per-fold strengths)")
    parser.add_argument("--stem", default="offset_strengths")
    parser.add_argument("--out", default="benchmarks/results")
    args = parser.parse_args()
    rows: list[dict] = []
    for item in args.work:
        name, _, path = item.partition("=")
        rows += storefront_rows(name, Path(path))
    meta = {"command": command_line(), "machine": machine_info()}
    md = ["# The query offset's strength, chosen on dev", "", *run_header(meta), "",
          "Strength 0 = raw fused scores, 1 = minus the mean of the query's 10 best reference scores. Chosen per run "
          "on its dev split (ROC-AUC in type over 0, 0.1, .., 1; ties to the smaller). Dev ROC-AUC in type at raw, "
          "full and chosen strength: means over seeds.", ""]  # fmt: skip
    if rows:
        groups: dict[tuple, list[dict]] = {}
        for r in rows:
            groups.setdefault((r["sample"], r["storefront"], r["method"]), []).append(r)
        body = []
        for (sample, store, method), rs in groups.items():
            s = [r["strength"] for r in sorted(rs, key=lambda r: r["seed"])]
            aucs = [f"{np.mean([r[k] for r in rs]):.4f}" for k in ("dev_raw", "dev_full", "dev_chosen")]
            body.append([sample, store, method, " / ".join(f"{x:.1f}" for x in s), f"{np.mean(s):.2f}", *aucs])
        head = ["sample", "storefront", "method", "strength per seed", "mean", "dev raw", "dev full", "dev chosen"]
        md += ["## Generated storefronts", "", md_table(head, body), ""]
    cf_rows: list[dict] = []
    if args.crowdflower:
        res = json.loads(Path(args.crowdflower).read_text())
        folds = res["per_fold"]
        raw = {r["fold"]: r["roc_auc"] for r in folds.get("querylife_raw", [])}
        for r in folds.get("querylife", []):
            cf_rows.append({"fold": r["fold"], "strength": r.get("offset_strength"), "test_roc_auc": r["roc_auc"],
                            "test_roc_auc_raw": raw.get(r["fold"])})  # fmt: skip
        fmt = lambda v, spec: "-" if v is None else format(v, spec)  # noqa: E731
        body = [[r["fold"], fmt(r["strength"], ".1f"), fmt(r["test_roc_auc"], ".4f"), fmt(r["test_roc_auc_raw"], ".4f")]
                for r in cf_rows]  # fmt: skip
        md += ["## CrowdFlower (real search data, text only)", "", f"From `{args.crowdflower}` "
               f"(its command: `{res.get('command', '?')}`). Test ROC-AUC with the chosen strength "
               "and raw (the same model without the offset).", "",
               md_table(["fold", "strength", "test ROC-AUC", "test ROC-AUC raw"], body), ""]  # fmt: skip
    write_results(args.out, args.stem, md, {**meta, "storefront_runs": rows, "crowdflower_folds": cf_rows})
    print("\n".join(md))


if __name__ == "__main__":
    main()
