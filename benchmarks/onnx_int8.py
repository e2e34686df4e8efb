"""What int8 query vectors cost in ranking quality, and what they save in forward time (issue 11, ONNX serving).

For every trained checkpoint of ``benchmarks/fusion_storefronts.py`` (``RUNS/<storefront>/seed<k>/runs/<method>/best``;
all-MiniLM-L6-v2 query tower, frozen EfficientNet-Lite0 photos), ``querylife.onnx_export.export_query_encoder`` writes
the fp32 graph and its ``--quantize int8`` twin (into WORK, not into the run directories). Then:

- **quality**: test and dev NDCG@10 (``querylife.metrics.per_query_metrics``) with the fp32-ONNX query vectors and
  with the int8 ones, the product side identical (``scoring.encode_products``: the vectors eval scores with; the
  frozen photo features computed once per storefront and shared by its seeds through one ``FeatureCache``) and the
  model's own fused score (``model.score(pairwise=False)``, as ``scoring.score_pairs``). Each query is encoded alone,
  as the service does (dynamic quantisation takes each activation's range from the whole batch, so batching would
  change the int8 vectors). Paired difference int8 - fp32: per seed, and pooled (per-query NDCG averaged over seeds,
  bootstrap CI over queries, ``metrics.paired_bootstrap``);
- **parity**: min / median cosine and max |diff| between the fp32 and int8 vectors of all the storefront's queries;
  the fp32-ONNX vectors against PyTorch's ``encode_queries`` (max |diff|, ~1e-7) as a check;
- **speed**: one thread (``intra_op_threads=1``), one query at a time, the storefront's own queries, fp32 and int8
  alternating query by query so both see the same neighbours: median per-query forward (tokenisation included)
  and the ratio int8 / fp32. On a shared machine only the ratio means something;
- **variants** (``--variants``): other settings of ``quantize_dynamic`` on the same fp32 graph (per-tensor weights,
  int8 embedding tables, the FFN output layers kept fp32), scored on dev only, to show why
  ``quantize_query_encoder``'s setting was chosen.

Run:  OMP_NUM_THREADS=1 python benchmarks/onnx_int8.py --storefronts demo --seeds 0 1 2 3 4 --runs runs/fusion_lite0
      --work runs/onnx_int8 --out benchmarks/results --variants
      (--lock FILE takes that file lock around each checkpoint's work on a shared machine)
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
import torch  # noqa: E402
import torch.nn.functional as F  # noqa: E402

from querylife.config import load_config  # noqa: E402
from querylife.data.prepare import prepare_from_config  # noqa: E402
from querylife.data.storefront import DemoStorefront  # noqa: E402
from querylife.metrics import paired_bootstrap, per_query_metrics  # noqa: E402
from querylife.model import QueryLifeModel  # noqa: E402
from querylife.onnx_export import (  # noqa: E402
    CHECK_QUERIES,  # noqa: E402
    DEFAULT_MIN_COSINE,
    OnnxQueryEncoder,
    export_query_encoder,
    fp32_nodes,
    parity_stats,
    quiet_export,
)
from querylife.runinfo import command_line, machine_info  # noqa: E402
from querylife.scoring import FeatureCache, encode_products  # noqa: E402

sys.path.insert(0, str(Path(__file__).parent))
from benchkit import file_lock, quiet_transformers, run_header, write_results  # noqa: E402

OVERRIDES = ["model.tower.vision_model=efficientnet-lite0", "model.tower.train_vision_layers=0"]
SPLITS = ("test", "dev")


def encode_one_by_one(encoder, queries: list[str]) -> torch.Tensor:
    """(Q, D) query vectors, each query encoded alone (as the service encodes a request's query)."""
    return torch.cat([encoder([q]) for q in queries])


def interleaved_times(fp32, int8, queries: list[str], warmup: int = 20) -> dict:
    """Median per-query encode time (ms) of each encoder, alternating query by query (same neighbours for both)."""
    for q in queries[:warmup]:
        fp32([q])
        int8([q])
    times = {"fp32": [], "int8": []}
    for i, q in enumerate(queries):
        order = (("fp32", fp32), ("int8", int8)) if i % 2 == 0 else (("int8", int8), ("fp32", fp32))
        for name, enc in order:
            t0 = time.perf_counter()
            enc([q])
            times[name].append(time.perf_counter() - t0)
    f, q = np.array(times["fp32"]) * 1e3, np.array(times["int8"]) * 1e3
    return {
        "fp32_p50_ms": float(np.median(f)),
        "int8_p50_ms": float(np.median(q)),
        "fp32_p99_ms": float(np.percentile(f, 99)),
        "int8_p99_ms": float(np.percentile(q, 99)),
        "ratio_p50": float(np.median(q) / np.median(f)),
        "ratio_of_paired_median": float(np.median(q / f)),
        "n_queries": len(queries),
    }


@torch.no_grad()
def split_ndcg(model: QueryLifeModel, split: pd.DataFrame, products, prod_pos, qvec: dict[str, torch.Tensor]):
    """Per-query NDCG@10 of ``split`` scored with the query vectors ``qvec`` (query -> (D,)) and ``products``."""
    qv = torch.stack([qvec[q] for q in split["query"]])  # (N, D)
    scores = []
    for start in range(0, len(split), 1024):
        pi = torch.from_numpy(prod_pos[start : start + 1024])
        out = model.score(
            qv[start : start + 1024],
            products.t[pi],
            products.v[pi],
            products.type_ids[pi],
            products.has_image[pi],
            pairwise=False,
        )
        scores.append(out.scores)
    score = torch.cat(scores).numpy().astype(np.float64)
    return per_query_metrics(split.assign(score=score), ks=(10,))[["query", "ndcg@10"]]


def cosine_stats(a: torch.Tensor, b: torch.Tensor) -> dict:
    cos = F.cosine_similarity(a, b, dim=-1)  # (Q,)
    return {
        "min_cosine": float(cos.min()),
        "median_cosine": float(cos.median()),
        "p01_cosine": float(torch.quantile(cos, 0.01)),
        "max_abs_diff": float((a - b).abs().max()),
    }


def variant_graphs(src: Path, dst_dir: Path) -> dict[str, Path]:
    """Other quantize_dynamic settings on the same fp32 graph (tokenizer beside it: same folder)."""
    import onnx
    from onnxruntime.quantization import QuantType, quantize_dynamic

    graph = onnx.load(str(src)).graph
    weights = {i.name for i in graph.initializer}
    linear = [n.name for n in graph.node if n.op_type in ("MatMul", "Gemm") and any(i in weights for i in n.input)]
    chosen = fp32_nodes(graph)  # embedding tables + head
    # BERT blocks, in node order: Q, K, V, attention output, FFN in, FFN out (6 weighted MatMuls a block)
    ffn_out = [name for j, name in enumerate(linear[:-1]) if j % 6 == 5] if (len(linear) - 1) % 6 == 0 else []
    settings = {
        "per_tensor": {"per_channel": False, "nodes_to_exclude": chosen},
        "per_channel_int8_embeddings": {"per_channel": True, "nodes_to_exclude": linear[-1:]},
        "per_channel_fp32_ffn_out": {"per_channel": True, "nodes_to_exclude": chosen + ffn_out},
    }
    out = {}
    root = logging.getLogger()
    level = root.level
    root.setLevel(logging.ERROR)
    try:
        for name, kw in settings.items():
            path = dst_dir / f"query_encoder.variant_{name}.onnx"
            quantize_dynamic(src, path, weight_type=QuantType.QInt8, **kw)
            out[name] = path
    finally:
        root.setLevel(level)
    return out


def batch_dependence(work: Path, queries: list[str], sizes=(8, 32)) -> dict:
    """Cosine of each query's vector encoded in a batch (consecutive queries, padded to the longest) to the same
    query encoded alone: 1 for fp32; for int8, dynamic quantisation takes each activation's range from the whole
    batch (padding included), so a query's vector depends on its batch-mates (the service's micro-batcher)."""

    def stats(a: torch.Tensor, b: torch.Tensor) -> dict:
        cos = F.cosine_similarity(a, b, dim=-1)  # (Q,)
        return {"min_cosine": float(cos.min()), "median_cosine": float(cos.median())}

    fp32 = OnnxQueryEncoder(work / "query_encoder.onnx", intra_op_threads=1)
    int8 = OnnxQueryEncoder(work / "query_encoder.int8.onnx", intra_op_threads=1)
    fp32_alone, int8_alone = encode_one_by_one(fp32, queries), encode_one_by_one(int8, queries)  # (Q, D) each
    out = {}
    for size in sizes:
        chunks = [queries[i : i + size] for i in range(0, len(queries), size)]
        fp32_batched = torch.cat([fp32(c) for c in chunks])  # (Q, D)
        int8_batched = torch.cat([int8(c) for c in chunks])  # (Q, D)
        out[f"fp32_batch{size}_vs_alone"] = stats(fp32_batched, fp32_alone)
        out[f"int8_batch{size}_vs_alone"] = stats(int8_batched, int8_alone)
        out[f"int8_batch{size}_vs_fp32"] = stats(int8_batched, fp32_alone)
    return out


def recorded_test_ndcg(runs: Path, storefront: str, seed: int, method: str) -> float | None:
    """The test NDCG@10 fusion_storefronts.py recorded for this run (what eval gave), if its log is there."""
    log = runs / "runs.jsonl"
    if not log.exists():
        return None
    for line in log.read_text().splitlines():
        r = json.loads(line)
        if (r["storefront"], r["seed"], r["method"]) == (storefront, seed, method):
            return float(r["test"]["overall"]["ndcg@10"])
    return None


def storefront_data(path: Path):
    """The prepared dataset of a storefront fusion_storefronts.py generated (read as it is, never regenerated)."""
    if not (path / "meta.json").exists():
        raise FileNotFoundError(f"{path}: no generated storefront (fusion_storefronts.py writes RUNS/data/NAME)")
    store = DemoStorefront.at(path)
    cfg = load_config(None, [*(f"{k}={v}" for k, v in store.config_overrides().items()), *OVERRIDES])
    return prepare_from_config(cfg, progress=False)


def run_checkpoint(args, storefront: str, seed: int, data, cache: FeatureCache, all_queries: list[str]) -> dict:
    ckpt = Path(args.runs) / storefront / f"seed{seed}" / "runs" / args.method / "best"
    work = Path(args.work) / storefront / f"seed{seed}"
    t0 = time.time()
    with quiet_export():
        # min_cosine 0: the benchmark measures the cost, so no export is refused here
        result = export_query_encoder(ckpt, work / "query_encoder.onnx", quantize="int8", min_cosine=0.0)
    model = QueryLifeModel.from_pretrained(ckpt).eval()
    fp32 = OnnxQueryEncoder(result.path, intra_op_threads=1)
    int8 = OnnxQueryEncoder(result.quantized.path, intra_op_threads=1)
    with torch.no_grad():
        ref = model.encode_queries(all_queries).float()  # (Q, D) PyTorch, batched
    vec_fp32 = encode_one_by_one(fp32, all_queries)
    vec_int8 = encode_one_by_one(int8, all_queries)
    rec: dict = {
        "storefront": storefront,
        "seed": seed,
        "checkpoint": str(ckpt),
        "export": {
            "fp32_bytes": result.path.stat().st_size,
            "int8_bytes": result.quantized.path.stat().st_size,
            "check_queries_min_cosine": result.quantized.min_cosine,
            "check_queries_max_abs_diff": result.quantized.max_abs_diff,
            "excluded_nodes": result.quantized.excluded_nodes,
        },
        "fp32_onnx_vs_pytorch_max_abs_diff": float((vec_fp32 - ref).abs().max()),
        "parity": cosine_stats(vec_int8, vec_fp32),
        "parity_vs_pytorch": cosine_stats(vec_int8, ref),
        "unit_norm_max_dev": float((vec_int8.norm(dim=-1) - 1).abs().max()),
    }
    rows = data.rows(pd.concat([data.splits[s]["product_id"] for s in SPLITS]))
    uniq, _ = np.unique(rows, return_inverse=True)
    products = encode_products(model, data, uniq, cache)
    where = {int(r): i for i, r in enumerate(uniq)}
    qpos = {q: i for i, q in enumerate(all_queries)}
    per_query: dict = {}
    for split in SPLITS:
        frame = data.splits[split].reset_index(drop=True)
        prod_pos = np.fromiter((where[int(r)] for r in data.rows(frame["product_id"])), dtype=np.int64)
        cell = {}
        for name, vecs in (("fp32", vec_fp32), ("int8", vec_int8)):
            qvec = {q: vecs[qpos[q]] for q in frame["query"].unique()}
            cell[name] = split_ndcg(model, frame, products, prod_pos, qvec)
        diff = paired_bootstrap(cell["int8"], cell["fp32"], "ndcg@10", n_boot=args.n_boot)
        rec[split] = {
            "ndcg_fp32": float(cell["fp32"]["ndcg@10"].mean()),
            "ndcg_int8": float(cell["int8"]["ndcg@10"].mean()),
            "diff": {k: float(diff[k]) for k in ("mean_diff", "lo", "hi", "n_queries")},
            "queries_changed": int((cell["int8"]["ndcg@10"].to_numpy() != cell["fp32"]["ndcg@10"].to_numpy()).sum()),
        }
        per_query[split] = {n: c.to_dict("list") for n, c in cell.items()}
    rec["recorded_test_ndcg"] = recorded_test_ndcg(Path(args.runs), storefront, seed, args.method)
    if args.variants:
        rec["variants"] = {}
        dev = data.splits["dev"].reset_index(drop=True)
        prod_pos = np.fromiter((where[int(r)] for r in data.rows(dev["product_id"])), dtype=np.int64)
        base = split_ndcg(model, dev, products, prod_pos, {q: vec_fp32[qpos[q]] for q in dev["query"].unique()})
        for name, path in variant_graphs(result.path, work).items():
            enc = OnnxQueryEncoder(path, intra_op_threads=1)
            vecs = encode_one_by_one(enc, all_queries)
            nd = split_ndcg(model, dev, products, prod_pos, {q: vecs[qpos[q]] for q in dev["query"].unique()})
            d = paired_bootstrap(nd, base, "ndcg@10", n_boot=args.n_boot)
            t = interleaved_times(fp32, enc, all_queries[: args.timing_queries])
            check = parity_stats(model, enc, CHECK_QUERIES)
            rec["variants"][name] = {
                **cosine_stats(vecs, vec_fp32),
                "check_queries_min_cosine": check.min_cosine,
                "dev_diff": {k: float(d[k]) for k in ("mean_diff", "lo", "hi")},
                "ratio_p50": t["ratio_p50"],
                "bytes": path.stat().st_size,
            }
            path.unlink()
    rec["batching"] = batch_dependence(work, all_queries)
    rec["timing"] = interleaved_times(fp32, int8, all_queries[: args.timing_queries])
    rec["seconds"] = round(time.time() - t0, 1)
    rec["per_query"] = per_query
    return rec


def pooled(recs: list[dict], split: str, n_boot: int) -> dict:
    """Per-query NDCG@10 averaged over seeds, int8 - fp32 paired over queries (bootstrap CI)."""
    frames = {}
    for name in ("fp32", "int8"):
        parts = [pd.DataFrame(r["per_query"][split][name]) for r in recs]
        frames[name] = pd.concat(parts).groupby("query", as_index=False)["ndcg@10"].mean()
    d = paired_bootstrap(frames["int8"], frames["fp32"], "ndcg@10", n_boot=n_boot)
    return {k: float(d[k]) for k in ("mean_diff", "lo", "hi", "n_queries")}


def write_report(recs: list[dict], args, meta: dict) -> None:
    by_store: dict[str, list[dict]] = {}
    for r in recs:
        by_store.setdefault(r["storefront"], []).append(r)
    lines = [
        "# int8 query encoder: quality cost and forward time (issue 11, ONNX serving)",
        "",
        *run_header(meta),
        "",
        "The machine was **shared** (2 cores, other agents' jobs running): the times below are medians of one "
        "run, fp32 and int8 alternating query by query, and only their **ratio** is meant to be read; absolute "
        "milliseconds move with the neighbours. One thread (`intra_op_threads=1`, OMP_NUM_THREADS=1), one query "
        "at a time, the storefront's own queries (tokenisation included).",
        "",
        f"Checkpoints: `{args.runs}/<storefront>/seed<k>/runs/{args.method}/best` (fusion_storefronts.py; "
        "all-MiniLM-L6-v2 frozen query tower, frozen EfficientNet-Lite0 photos). Exported with "
        "`export_query_encoder(..., quantize=\"int8\")` (dynamic int8, per-channel weights, the embedding tables "
        "and the query head kept fp32). Product vectors are the same for both rows; each query is encoded alone, "
        "as the service does. "
        "Δ = int8 - fp32 (ONNX) NDCG@10, paired over queries, 95% bootstrap CI "
        f"({args.n_boot} resamples); pooled: per-query NDCG averaged over seeds first.",
        "",
        f"Storefronts measured: {', '.join(by_store)}.",
        "",
        "## Quality and speed per checkpoint",
        "",
        "| storefront | seed | test NDCG@10 fp32 | int8 | Δ test [95% CI] | dev fp32 | int8 | Δ dev [95% CI] "
        "| min / median cos (all queries) | int8 / fp32 forward (p50) |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]

    def ci(d: dict) -> str:
        return f"{d['mean_diff']:+.4f} [{d['lo']:+.4f}, {d['hi']:+.4f}]"

    summary = {}
    for store, rs in by_store.items():
        for r in rs:
            lines.append(
                f"| {store} | {r['seed']} | {r['test']['ndcg_fp32']:.4f} | {r['test']['ndcg_int8']:.4f} "
                f"| {ci(r['test']['diff'])} | {r['dev']['ndcg_fp32']:.4f} | {r['dev']['ndcg_int8']:.4f} "
                f"| {ci(r['dev']['diff'])} | {r['parity']['min_cosine']:.4f} / {r['parity']['median_cosine']:.4f} "
                f"| {r['timing']['ratio_p50']:.2f} ({r['timing']['int8_p50_ms']:.2f} / "
                f"{r['timing']['fp32_p50_ms']:.2f} ms) |"
            )
        summary[store] = {
            "seeds": [r["seed"] for r in rs],
            "test_pooled": pooled(rs, "test", args.n_boot),
            "dev_pooled": pooled(rs, "dev", args.n_boot),
            "test_mean_diff_over_seeds": float(np.mean([r["test"]["diff"]["mean_diff"] for r in rs])),
            "dev_mean_diff_over_seeds": float(np.mean([r["dev"]["diff"]["mean_diff"] for r in rs])),
            "min_cosine": float(min(r["parity"]["min_cosine"] for r in rs)),
            "median_cosine": float(np.median([r["parity"]["median_cosine"] for r in rs])),
            "check_queries_min_cosine": float(min(r["export"]["check_queries_min_cosine"] for r in rs)),
            "ratio_p50": float(np.median([r["timing"]["ratio_p50"] for r in rs])),
            "fp32_onnx_vs_pytorch_max_abs_diff": float(max(r["fp32_onnx_vs_pytorch_max_abs_diff"] for r in rs)),
            "fp32_onnx_test_vs_recorded_eval": [
                (r["test"]["ndcg_fp32"], r["recorded_test_ndcg"]) for r in rs if r["recorded_test_ndcg"] is not None
            ],
            "int8_bytes": rs[0]["export"]["int8_bytes"],
            "fp32_bytes": rs[0]["export"]["fp32_bytes"],
        }
    lines += [
        "",
        "## Pooled over seeds",
        "",
        "| storefront | seeds | Δ test NDCG@10 pooled [95% CI] | mean Δ test over seeds | Δ dev pooled [95% CI] "
        "| mean Δ dev over seeds | min cos (all) | median cos | min cos (export's check queries) "
        "| int8 / fp32 forward (median over seeds) | file size int8 / fp32 |",
        "|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for store, s in summary.items():
        lines.append(
            f"| {store} | {len(s['seeds'])} | {ci(s['test_pooled'])} | {s['test_mean_diff_over_seeds']:+.4f} "
            f"| {ci(s['dev_pooled'])} | {s['dev_mean_diff_over_seeds']:+.4f} | {s['min_cosine']:.4f} "
            f"| {s['median_cosine']:.4f} | {s['check_queries_min_cosine']:.4f} | {s['ratio_p50']:.2f} "
            f"| {s['int8_bytes'] / 1e6:.1f} / {s['fp32_bytes'] / 1e6:.1f} MB |"
        )
    lines += [
        "",
        "Checks: the fp32 graph's vectors differ from PyTorch's `encode_queries` by at most "
        + ", ".join(f"{s['fp32_onnx_vs_pytorch_max_abs_diff']:.1e} ({k})" for k, s in summary.items())
        + "; the fp32-ONNX test NDCG@10 against the one fusion_storefronts.py recorded from `eval`'s scoring: "
        + "; ".join(
            f"{k}: " + ", ".join(f"{a:.4f}/{b:.4f}" for a, b in s["fp32_onnx_test_vs_recorded_eval"])
            for k, s in summary.items()
        )
        + ".",
    ]
    batching = [r for r in recs if "batching" in r]
    if batching:
        lines += [
            "",
            "## Batched queries (the service's micro-batcher)",
            "",
            "The numbers above encode each query alone. Dynamic quantisation takes each activation's range from the "
            "whole call, so in a batch (here consecutive queries, padded to the longest) a query's int8 vector "
            "depends on its batch-mates; its fp32 vector does not. Cosine of the batched vector to the same query "
            "alone, and of the batched int8 vector to the fp32 one (min / median over all queries, worst seed):",
            "",
            "| storefront | fp32 batch 32 vs alone | int8 batch 8 vs alone | int8 batch 32 vs alone "
            "| int8 batch 8 vs fp32 | int8 batch 32 vs fp32 |",
            "|---|---|---|---|---|---|",
        ]
        for store in by_store:
            rs = [r["batching"] for r in batching if r["storefront"] == store]
            if not rs:
                continue

            def cell(key: str, rs=rs) -> str:
                return (f"{min(b[key]['min_cosine'] for b in rs):.4f} / "
                        f"{min(b[key]['median_cosine'] for b in rs):.4f}")

            lines.append(
                f"| {store} | {cell('fp32_batch32_vs_alone')} | {cell('int8_batch8_vs_alone')} "
                f"| {cell('int8_batch32_vs_alone')} | {cell('int8_batch8_vs_fp32')} | {cell('int8_batch32_vs_fp32')} |"
            )
    variant_rows = [(r["storefront"], r["seed"], n, v) for r in recs for n, v in (r.get("variants") or {}).items()]
    if variant_rows:
        lines += [
            "",
            "## Other quantisation settings (dev only; the choice is made on parity and dev, never on test)",
            "",
            "`chosen`: what `--quantize int8` writes (per-channel int8 weights; embedding tables and head fp32), as "
            "above; the others are alternatives on the same fp32 graph, timed against it in the same way.",
            "",
            "| storefront | seed | setting | min / median cos (all queries) | min cos (check queries) "
            "| Δ dev NDCG@10 [95% CI] | int8 / fp32 forward | size |",
            "|---|---|---|---|---|---|---|---|",
        ]
        for r in recs:
            lines.append(
                f"| {r['storefront']} | {r['seed']} | chosen | {r['parity']['min_cosine']:.4f} / "
                f"{r['parity']['median_cosine']:.4f} | {r['export']['check_queries_min_cosine']:.4f} "
                f"| {ci(r['dev']['diff'])} | {r['timing']['ratio_p50']:.2f} "
                f"| {r['export']['int8_bytes'] / 1e6:.1f} MB |"
            )
            for n, v in (r.get("variants") or {}).items():
                lines.append(
                    f"| {r['storefront']} | {r['seed']} | {n} | {v['min_cosine']:.4f} / {v['median_cosine']:.4f} "
                    f"| {v['check_queries_min_cosine']:.4f} | {ci(v['dev_diff'])} | {v['ratio_p50']:.2f} "
                    f"| {v['bytes'] / 1e6:.1f} MB |"
                )
    payload = {
        **meta,
        "default_min_cosine": DEFAULT_MIN_COSINE,
        "summary": summary,
        "runs": [{k: v for k, v in r.items() if k != "per_query"} for r in recs],
    }
    write_results(args.out, args.stem, lines, payload)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--storefronts", nargs="+", default=["demo"])
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2, 3, 4])
    parser.add_argument("--runs", default="runs/fusion_lite0", help="fusion_storefronts.py's --work")
    parser.add_argument("--method", default="query_gate", help="which trained method's checkpoints")
    parser.add_argument("--work", default="runs/onnx_int8", help="the exported graphs go here")
    parser.add_argument("--out", default="benchmarks/results")
    parser.add_argument("--stem", default="onnx_int8")
    parser.add_argument("--n-boot", type=int, default=1000)
    parser.add_argument("--timing-queries", type=int, default=600, help="queries per timing run (each once)")
    parser.add_argument("--variants", action="store_true", help="also score other quantisation settings (dev)")
    parser.add_argument("--lock", default=None, help="take this file lock around each checkpoint's work")
    args = parser.parse_args()
    quiet_transformers()
    torch.set_num_threads(1)
    command = command_line()
    if args.lock:  # the lock is this machine's arrangement, not part of the measurement
        command = command.replace(f" --lock {args.lock}", "")
    meta = {"command": command, "machine": machine_info()}
    jsonl = Path(args.work) / f"{args.stem}.jsonl"  # one line per checkpoint: a rerun reuses finished ones
    jsonl.parent.mkdir(parents=True, exist_ok=True)
    done = {}
    if jsonl.exists():
        for line in jsonl.read_text().splitlines():
            r = json.loads(line)
            done[(r["storefront"], r["seed"])] = r
    recs = []
    patched = False
    for storefront in args.storefronts:
        todo = [s for s in args.seeds if (storefront, s) not in done]
        data = None
        cache = FeatureCache()  # the frozen photo features: computed on the first seed, reused by the others
        for seed in args.seeds:
            if (storefront, seed) in done:
                rec = done[(storefront, seed)]
                if "batching" not in rec:  # added after the first runs: only the query encoders are needed
                    with file_lock(args.lock):
                        path = Path(args.runs) / "data" / storefront / "queries.parquet"
                        rec["batching"] = batch_dependence(
                            Path(args.work) / storefront / f"seed{seed}", pd.read_parquet(path)["query"].tolist()
                        )
                    patched = True
                recs.append(rec)
                continue
            with file_lock(args.lock):
                if data is None:
                    data = storefront_data(Path(args.runs) / "data" / storefront)
                    queries = list(dict.fromkeys(pd.concat([data.splits[s]["query"] for s in ("train", *SPLITS)])))
                rec = run_checkpoint(args, storefront, seed, data, cache, queries)
            with jsonl.open("a") as fh:
                fh.write(json.dumps(rec, default=float) + "\n")
            recs.append(rec)
            print(
                f"{storefront} seed {seed}: test {rec['test']['ndcg_fp32']:.4f} -> {rec['test']['ndcg_int8']:.4f}, "
                f"dev {rec['dev']['ndcg_fp32']:.4f} -> {rec['dev']['ndcg_int8']:.4f}, min cos "
                f"{rec['parity']['min_cosine']:.4f}, forward x{rec['timing']['ratio_p50']:.2f} ({rec['seconds']} s; "
                f"{len(todo)} to do in this storefront)",
                flush=True,
            )
    if patched:  # keep the log complete: rewrite it with the added fields
        jsonl.write_text("".join(json.dumps(r, default=float) + "\n" for r in done.values()))
    write_report(recs, args, meta)


if __name__ == "__main__":
    main()
