"""Dev-split comparison of fusion_storefronts.py runs against a baseline work directory, paired by (storefront,
seed, method): a variant (e.g. ``--set model.query_heads=per_modality``) minus the baseline, overall and per type
group, NDCG@10 and within-type ROC-AUC. Dev only: this is where choices are made, never on test.

Run:  python benchmarks/fusion_dev_compare.py --base runs/fusion_lite0 --variant "per-modality heads=runs/fusion_heads"
      --variant "..., no title-image term=runs/fusion_heads_noti" --stem fusion_heads_dev --out benchmarks/results
      (each WORK holds the runs.jsonl and meta.json fusion_storefronts.py wrote; the variants' commands are copied
      into the results file, without any --lock option)
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
METHODS = ["query_gate", "mean", "dev_type_gate"]
GROUPS = ["overall", "image-informative", "title-informative", "mixed"]


def _records(work: Path) -> list[dict]:
    return [json.loads(line) for line in (work / "runs.jsonl").read_text().splitlines() if line.strip()]


def _command(work: Path) -> str:
    cmd = json.loads((work / "meta.json").read_text())["command"]
    return re.sub(r"\s--lock\s+\S+", "", cmd)  # a shared machine's lock file is no part of the method


def paired(base: list[dict], variant: list[dict], methods: list[str] = METHODS) -> list[dict]:
    """One row per (storefront, method) with the per-seed dev differences variant - base, overall and per group."""
    rows = []
    for store in STOREFRONTS:
        for method in methods:
            pairs = []
            for r in sorted(variant, key=lambda r: r["seed"]):
                if (r["storefront"], r["method"]) != (store, method):
                    continue
                b = [x for x in base if (x["storefront"], x["seed"], x["method"]) == (store, r["seed"], method)]
                if b:
                    pairs.append((r["seed"], b[0]["dev"], r["dev"]))
            if not pairs:
                continue
            row = {"storefront": store, "method": method, "seeds": [p[0] for p in pairs], "base": {}, "delta": {}}
            for g in GROUPS:
                if g not in pairs[0][1]:
                    continue
                for key in ("ndcg@10", "roc_auc_in_type"):
                    row["base"][f"{g} {key}"] = [p[1][g][key] for p in pairs]
                    row["delta"][f"{g} {key}"] = [p[2][g][key] - p[1][g][key] for p in pairs]
            rows.append(row)
    return rows


def _cell(values: list[float] | None) -> str:
    if not values:
        return "–"
    inner = ", ".join(f"{v:+.4f}" for v in values)
    return f"{np.mean(values):+.4f}" + (f" ({inner})" if len(values) > 1 else "")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--base", required=True, help="the baseline's fusion_storefronts.py work directory")
    parser.add_argument("--variant", action="append", required=True, help="NAME=WORK (repeatable)")
    parser.add_argument("--stem", default="fusion_dev_compare")
    parser.add_argument("--out", default="benchmarks/results")
    parser.add_argument("--methods", nargs="+", default=METHODS, help="the methods compared (rows per storefront)")
    parser.add_argument("--note", default="", help="a paragraph placed under the header")
    parser.add_argument("--reading", default="", help="a paragraph placed after the tables")
    args = parser.parse_args()
    base_work = Path(args.base)
    base = _records(base_work)
    base_meta = json.loads((base_work / "meta.json").read_text())
    md = [
        "# Fusion variants against the default set-up, dev split, paired by seed",
        "",
        f"Baseline: `{_command(base_work)}` ({base_work.name}/runs.jsonl, the same seeds' runs).  ",
    ]
    payload: dict = {"base": {"work": str(base_work), "command": _command(base_work)}, "variants": {}}
    machines = {machine_summary(base_meta["machine"])}
    tables = []
    for spec in args.variant:
        name, _, work = spec.rpartition("=")  # a name may hold "=" (an option), a path rarely
        work = Path(work)
        meta = json.loads((work / "meta.json").read_text())
        machines.add(machine_summary(meta["machine"]))
        rows = paired(base, _records(work), args.methods)
        payload["variants"][name] = {"work": str(work), "command": _command(work), "rows": rows}
        md.append(f"Variant **{name}**: `{_command(work)}`  ")
        header = [
            "storefront",
            "method",
            "seeds",
            *(f"Δ {g} NDCG@10" for g in GROUPS),
            *(f"Δ {g} ROC-AUC in type" for g in ("overall", "image-informative", "title-informative")),
        ]
        body = [
            [
                r["storefront"],
                r["method"],
                ",".join(map(str, r["seeds"])),
                *(_cell(r["delta"].get(f"{g} ndcg@10")) for g in GROUPS),
                *(
                    _cell(r["delta"].get(f"{g} roc_auc_in_type"))
                    for g in ("overall", "image-informative", "title-informative")
                ),
            ]
            for r in rows
        ]
        tables += [f"## {name} minus the baseline (dev)", "", md_table(header, body), ""]
    md += [
        "Machine: " + "; ".join(sorted(machines)) + ". The machine was shared by several agents (2 cores); no timings "
        "are reported.",
        "",
        "Each cell: mean over the seeds of variant - baseline on the dev split (per seed in brackets); the baseline is "
        "the same storefront, seed and method in the baseline's set-up. `dev_type_gate` is the `mean` "
        "run's vectors with per-type weights fitted on the whole dev split (not cross-fitted here).",
        "",
        *([args.note, ""] if args.note else []),
        *tables,
        *([args.reading, ""] if args.reading else []),
    ]
    path = write_results(args.out, args.stem, md, payload)
    print("\n".join(md))
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
