"""A data-rule variant of fusion_storefronts.py (e.g. ``--shared-photo-as-missing 3``) against the baseline work
directory, paired by (storefront, seed, method): variant - baseline on every headline metric, and each fusion minus
title only on the title-informative types (issue 14's line) in both. Dev is what a decision is made on; the test
tables are printed as information (``--split test``), never to choose.

Run:  python benchmarks/fusion_shared_photo_compare.py --base runs/fusion_lite0 --variant runs/fusion_shared_photo \
          --stem fusion_shared_photo_dev --out benchmarks/results
      (each WORK holds the runs.jsonl and meta.json fusion_storefronts.py wrote; the commands are copied into the
      results file without any --lock option)
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np
import pandas as pd

sys.path.insert(0, str(Path(__file__).parent))
from benchkit import machine_summary, write_results  # noqa: E402
from fusion_dev_compare import _command, _records  # noqa: E402
from fusion_storefronts import _delta, _seed_delta  # noqa: E402

from querylife.data.storefront import DemoStorefront  # noqa: E402
from querylife.report import md_table  # noqa: E402

STOREFRONTS = ["demo", "home_books", "media_market"]
FUSIONS = ["query_gate", "mean", "dev_type_gate"]
METHODS = [*FUSIONS, "title_only"]


def _groups(work: Path, store: str) -> dict[str, list[str]]:
    return DemoStorefront.at(work / "data" / store).type_groups()


def _type_auc(recs: list[dict], split: str, ptype: str) -> list[float]:
    """Within-type ROC-AUC of one product type's queries per run (NaN where the split has no query of it)."""
    return [r[split].get(ptype, {}).get("roc_auc_in_type", float("nan")) for r in recs]


def _fmt(d: dict) -> str:
    if not np.isfinite(d["mean_diff"]):
        return "–"
    return f"{d['mean_diff']:+.4f} [{d['lo']:+.4f}, {d['hi']:+.4f}]"


def _signs(a: list[float], b: list[float]) -> str:
    return "".join("+" if x > y else ("-" if x < y else "0") for x, y in zip(a, b, strict=True))


def compare_store(base: list[dict], var: list[dict], store: str, groups: dict, qtype: dict, split: str) -> dict:
    """variant - baseline per method and metric (seed-paired t interval; overall NDCG@10 also paired over queries),
    and fusion - title only on the title-informative group (and its types) in each work directory."""
    seeds = sorted({r["seed"] for r in var if r["storefront"] == store and r["method"] == "query_gate"})

    def pick(recs: list[dict], method: str) -> list[dict]:
        got = {r["seed"]: r for r in recs if r["storefront"] == store and r["method"] == method}
        return [got[s] for s in seeds if s in got]

    scopes = [("overall", k) for k in ("ndcg@10", "roc_auc", "roc_auc_in_type")]
    scopes += [(g, k) for g in groups for k in ("ndcg@10", "roc_auc_in_type")]
    out: dict = {"seeds": seeds, "variant_minus_base": {}, "fusion_minus_title": {}}
    for m in METHODS:
        b, v = pick(base, m), pick(var, m)
        if len(b) != len(seeds) or len(v) != len(seeds):
            continue
        rows = {}
        for scope, key in scopes:
            bv = [r[split][scope][key] for r in b]
            vv = [r[split][scope][key] for r in v]
            rows[f"{scope} {key}"] = {"base": bv, "variant": vv, "delta": _seed_delta(vv, bv), "signs": _signs(vv, bv)}
        rows["overall ndcg@10 (queries)"] = _delta(v, b, None, qtype, split=split)
        out["variant_minus_base"][m] = rows
    title_types = groups["title-informative"]
    for name, recs in (("base", base), ("variant", var)):
        t = pick(recs, "title_only")
        if len(t) != len(seeds):
            continue
        per = {}
        for m in FUSIONS:
            f = pick(recs, m)
            if len(f) != len(seeds):
                continue
            line = {
                "ndcg@10": _delta(f, t, set(title_types), qtype, split=split),
                "roc_auc_in_type": _seed_delta(
                    [r[split]["title-informative"]["roc_auc_in_type"] for r in f],
                    [r[split]["title-informative"]["roc_auc_in_type"] for r in t],
                ),
                "by_type": {
                    ty: _seed_delta(_type_auc(f, split, ty), _type_auc(t, split, ty))  # fmt: skip
                    for ty in title_types
                },
            }
            line["met"] = bool(line["ndcg@10"]["hi"] >= 0 and line["roc_auc_in_type"]["hi"] >= 0)
            per[m] = line
        out["fusion_minus_title"][name] = per
    return out


def tables(result: dict, store: str, groups: dict, split: str) -> list[str]:
    """Markdown of :func:`compare_store`'s result for one storefront."""
    vmb = result["variant_minus_base"]
    methods = list(vmb)
    keys = list(next(iter(vmb.values())))
    rows = []
    for k in keys:
        cells = []
        for m in methods:
            c = vmb[m][k]
            if "signs" in c:
                cells.append(f"{np.mean(c['base']):.4f} → {np.mean(c['variant']):.4f}: {_fmt(c['delta'])} {c['signs']}")
            else:
                cells.append(f"{_fmt(c)} ({c['n_queries']} queries)")
        rows.append([k, *cells])
    md = [
        f"### `{store}`: variant minus baseline ({split}, seeds {', '.join(map(str, result['seeds']))})",
        "",
        "Cell: baseline mean → variant mean: Δ mean [95% t interval over seeds] and per-seed signs (+: variant "
        f"higher). The `(queries)` row pairs the per-query {split} NDCG@10 (averaged over seeds) by query, bootstrap.",
        "",
        md_table(["metric", *(f"`{m}`" for m in methods)], rows),
        "",
    ]
    fmt = result["fusion_minus_title"]
    title_types = groups["title-informative"]
    lrows = []
    for name in ("base", "variant"):
        for m, line in fmt.get(name, {}).items():
            lrows.append(
                [
                    name,
                    f"`{m}`",
                    _fmt(line["ndcg@10"]),
                    _fmt(line["roc_auc_in_type"]),
                    *(_fmt(line["by_type"][t]) for t in title_types),
                    "yes" if line["met"] else "**no**",
                ]
            )
    md += [
        f"### `{store}`: fusion minus title only on the title-informative types ({split})",
        "",
        "NDCG@10 paired over the group's queries (bootstrap of seed-averaged per-query values); ROC-AUC in type "
        "paired by seed (t interval), for the group and for each of its types. Met: both group intervals reach 0.",
        "",
        md_table(
            [
                "run",
                "fusion",
                "Δ NDCG@10",
                "Δ ROC-AUC in type",
                *(f"Δ ROC-AUC in type, {t}" for t in title_types),
                "met",
            ],
            lrows,
        ),
        "",
    ]
    return md


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--base", required=True, help="the baseline's fusion_storefronts.py work directory")
    parser.add_argument("--variant", required=True, help="the variant's fusion_storefronts.py work directory")
    parser.add_argument("--stem", default="fusion_variant_dev")
    parser.add_argument("--out", default="benchmarks/results")
    parser.add_argument("--note", default="", help="a paragraph placed under the header")
    parser.add_argument("--reading", default="", help="a paragraph placed after the dev tables")
    args = parser.parse_args()
    bw, vw = Path(args.base), Path(args.variant)
    base, var = _records(bw), _records(vw)
    bmeta, vmeta = (json.loads((w / "meta.json").read_text()) for w in (bw, vw))
    machines = sorted({machine_summary(bmeta["machine"]), machine_summary(vmeta["machine"])})
    payload: dict = {
        "base": {"work": str(bw), "command": _command(bw)},
        "variant": {"work": str(vw), "command": _command(vw), "shared_photos": vmeta.get("shared_photos")},
        "storefronts": {},
    }
    md = [
        "# A data rule against the baseline, dev split, paired by seed",
        "",
        f"Baseline: `{_command(bw)}` (its runs of the same seeds).  ",
        f"Variant: `{_command(vw)}`  ",
        "Machine: " + "; ".join(machines) + ". The machine was shared by several agents (2 cores); no timings.",
        "",
        *([args.note, ""] if args.note else []),
    ]
    sections: dict[str, list[str]] = {"dev": [], "test": []}
    for store in STOREFRONTS:
        if not any(r["storefront"] == store for r in var):
            continue
        groups = _groups(vw, store)
        queries = pd.read_parquet(vw / "data" / store / "queries.parquet")
        qtype = dict(zip(queries["query"], queries["product_type"], strict=True))
        payload["storefronts"][store] = {"groups": groups}
        for split in ("dev", "test"):
            res = compare_store(base, var, store, groups, qtype, split)
            payload["storefronts"][store][split] = res
            sections[split] += tables(res, store, groups, split)
    md += [
        "## Dev split (what a decision is made on)",
        "",
        *sections["dev"],
        *([args.reading, ""] if args.reading else []),
        "## Test split (information only: no decision is made on it)",
        "",
        *sections["test"],
    ]
    path = write_results(args.out, args.stem, md, payload)
    print("\n".join(md))
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
