"""What the query offset (``model.query_offset``) adds to serving: ``Searcher.score_vectors`` for one query against
stored candidates with the offset (the query scored against a reference of every stored product, the mean of its
10 best subtracted) and without it, timed in one process, interleaved, and a query forward for scale.

Uses the serving benchmark's checkpoint and store (``serve_latency.prepare``: untrained MiniLM query tower, 3,000
demo products, fusion query_type_gate); the reference is the store's products (``QueryOffset.set_reference``,
what ``fit_query_offset`` keeps for a 3,000-product catalogue). Checks that the two paths rank every call's
candidates identically and differ by one constant per query.

Run:  python benchmarks/query_offset_cost.py --out benchmarks/results
"""

from __future__ import annotations

import os
import sys
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

import numpy as np  # noqa: E402
import torch  # noqa: E402

from querylife.query_offset import QueryOffset, QueryOffsetConfig  # noqa: E402
from querylife.report import md_table  # noqa: E402
from querylife.runinfo import command_line, machine_info  # noqa: E402

sys.path.insert(0, str(Path(__file__).parent))
from benchkit import run_header, write_results  # noqa: E402
from serve_latency import bench_service, scoring_args  # noqa: E402


def main() -> None:
    args = scoring_args(__doc__, stem="query_offset_cost", repeats=300)
    service = bench_service(args)
    searcher, model = service.searcher, service.model
    products = searcher.products
    if getattr(model, "query_offset", None) is None:  # a checkpoint without the option: give it top_k
        model.query_offset = QueryOffset(QueryOffsetConfig(mode="top_k"), model.config.embed_dim)
    kept = model.query_offset.set_reference(products.t, products.v, products.type_ids, products.has_image, model.fusion)
    model.query_offset.strength.fill_(1.0)  # the cost of a strength above 0 (at 0 nothing is computed)
    valid = model.query_offset.ref_valid.clone()

    def score(q: torch.Tensor, rows: np.ndarray, on: bool) -> np.ndarray:
        model.query_offset.ref_valid.copy_(valid if on else torch.zeros_like(valid))
        return searcher.score_vectors(q, products, rows).scores

    rng = np.random.default_rng(0)
    queries = [f"query {i} red striped sofa" for i in range(args.repeats + 50)]
    fixed = searcher.encode_queries(["red striped sofa"])[0]  # (D,)
    cells, md_rows, worst, reordered = [], [], 0.0, 0
    forward: list[float] = []
    for n in args.candidates:
        for state in ("warm", "after a forward"):
            times: dict[str, list[float]] = {"off": [], "on": []}
            for i in range(args.repeats + 50):  # the first 50 are warm-up
                rows = rng.choice(len(products), n, replace=False).astype(np.int64)
                out = {}
                for name in ("off", "on") if i % 2 else ("on", "off"):
                    if state == "warm":
                        q = fixed
                    else:
                        start = time.perf_counter()
                        q = searcher.encode_queries([queries[i]])[0]
                        forward.append((time.perf_counter() - start) * 1000)
                    start = time.perf_counter()
                    out[name] = score(q, rows, name == "on")
                    times[name].append((time.perf_counter() - start) * 1000)
                if state == "warm":  # same query both ways: one constant apart, same order
                    diff = out["off"] - out["on"]
                    worst = max(worst, float(np.ptp(diff)))
                    reordered += not np.array_equal(np.argsort(-out["off"], kind="stable"),
                                                    np.argsort(-out["on"], kind="stable"))  # fmt: skip
            cell = {k: {"p50": float(np.median(v[50:])), "p99": float(np.percentile(v[50:], 99))}
                    for k, v in times.items()}  # fmt: skip
            cells.append({"candidates": n, "state": state, **cell})
            md_rows.append([f"{n:,}", state, f"{cell['off']['p50']:.3f}", f"{cell['off']['p99']:.3f}",
                            f"{cell['on']['p50']:.3f}", f"{cell['on']['p99']:.3f}",
                            f"{cell['on']['p50'] - cell['off']['p50']:+.3f}"])  # fmt: skip
            print(md_rows[-1], flush=True)
    fwd = float(np.median(forward[50:])) if len(forward) > 50 else float("nan")
    meta = {"command": command_line(), "machine": machine_info(), "threads": args.threads, "repeats": args.repeats}
    md = ["# The query offset's cost in serving (one query against stored candidates, in process)", "",
          *run_header(meta),
          f"Load average (1 min) at the end: {os.getloadavg()[0]:.2f}; {args.threads} torch thread(s); the 2 cores "
          "are shared, so compare within a row (interleaved calls), not across runs.  ",
          f"Checkpoint and store: the serving benchmark's (`serve_latency.prepare`, embed_dim "
          f"{model.config.embed_dim}, fusion {model.config.fusion.mode}); reference: {kept:,} stored products, k = "
          f"{model.query_offset.config.k}; {args.repeats} timed calls per path and cell after 50 warm-up calls.", "",
          md_table(["candidates", "state", "no offset p50 (ms)", "no offset p99 (ms)", "offset p50 (ms)",
                    "offset p99 (ms)", "added p50 (ms)"], md_rows), "",
          f"For scale: one query forward (the service's PyTorch query encoder) took {fwd:.2f} ms p50 in the same run. "
          f"Warm calls whose candidates ranked differently with and without the offset: {reordered} (float32 "
          f"rounding of near-ties can swap two); the two score vectors differed by one constant per call (largest "
          f"spread of the difference: {worst:.1e}).", ""]  # fmt: skip
    path = write_results(args.out, args.stem, md, {"meta": meta, "cells": cells, "forward_p50_ms": fwd,
                                                   "reference": kept, "max_spread": worst,
                                                   "reordered_calls": reordered})  # fmt: skip
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
