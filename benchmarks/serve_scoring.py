"""In-process cost of scoring one query against stored candidates: the service's path against the one it replaced.

``Searcher.score_vectors`` scores one query vector against n stored products with ``Fusion.one_query`` (the gate
once per product type; the cosines q.t and q.v as two matrix-vector products over the gathered rows; t.v stored
per product). Before, it called ``model.score(q[None], t, v, types, has_image, pairwise=True)``: ``torch.unique``
over the candidates' types, the gate network per unique type, ``(t * v).sum(-1)`` over the gathered (n, D) rows.
Both are timed here in one process, interleaved, on the serving benchmark's checkpoint and store
(``serve_latency.prepare``), for 100 and 1,000 random candidates, in two states:

- warm: the same query vector again and again (the store rows and code paths stay in cache);
- after a forward: a query forward (the service's query encoder) runs before each timed call and is not timed,
  which is what the server sees: the forward streams the text tower's weights through the caches.

The two paths' scores are compared (max abs difference) on the same calls.

Run:  python benchmarks/serve_scoring.py --out benchmarks/results
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

from querylife.report import md_table  # noqa: E402
from querylife.runinfo import command_line, machine_info  # noqa: E402

sys.path.insert(0, str(Path(__file__).parent))
from benchkit import run_header, write_results  # noqa: E402
from serve_latency import bench_service, scoring_args  # noqa: E402


def main() -> None:
    args = scoring_args(__doc__, stem="serve_scoring", repeats=500)
    service = bench_service(args)
    searcher, model = service.searcher, service.model
    products = searcher.products

    @torch.no_grad()
    def before(q: torch.Tensor, rows: np.ndarray) -> np.ndarray:  # the pre-change call, verbatim
        idx = torch.from_numpy(rows)
        t, v, types, has = (x.index_select(0, idx) for x in (products.t, products.v, products.type_ids,
                                                              products.has_image))
        return model.score(q.reshape(1, -1), t, v, types, has, pairwise=True).scores[0].numpy()

    def now(q: torch.Tensor, rows: np.ndarray) -> np.ndarray:
        return searcher.score_vectors(q, products, rows).scores

    rng = np.random.default_rng(0)
    queries = [f"query {i} red striped sofa" for i in range(args.repeats + 50)]
    fixed = searcher.encode_queries(["red striped sofa"])[0]  # (D,)
    rows_out, md_rows, max_diff = [], [], 0.0
    for n in args.candidates:
        for state in ("warm", "after a forward"):
            times: dict[str, list[float]] = {"before": [], "now": []}
            for i in range(args.repeats + 50):  # the first 50 are warm-up
                rows = rng.choice(len(products), n, replace=False).astype(np.int64)
                for name, fn in (("before", before), ("now", now)) if i % 2 else (("now", now), ("before", before)):
                    q = searcher.encode_queries([queries[i]])[0] if state != "warm" else fixed
                    start = time.perf_counter()
                    out = fn(q, rows)
                    times[name].append((time.perf_counter() - start) * 1000)
                    if name == "now":
                        got = out
                    else:
                        ref = out
                max_diff = max(max_diff, float(np.abs(got - ref).max()))
            cell = {k: {"p50": float(np.median(v[50:])), "p99": float(np.percentile(v[50:], 99))}
                    for k, v in times.items()}
            rows_out.append({"candidates": n, "state": state, **cell})
            md_rows.append([f"{n:,}", state, f"{cell['before']['p50']:.3f}", f"{cell['before']['p99']:.3f}",
                            f"{cell['now']['p50']:.3f}", f"{cell['now']['p99']:.3f}",
                            f"{cell['now']['p50'] / cell['before']['p50']:.2f}"])
            print(md_rows[-1], flush=True)
    meta = {"command": command_line(), "machine": machine_info(), "threads": args.threads, "repeats": args.repeats}
    md = ["# Scoring one query against stored candidates, in process", "", *run_header(meta),
          f"Load average (1 min) at the end: {os.getloadavg()[0]:.2f}; {args.threads} torch thread(s); the 2 cores "
          "are shared, so compare the two paths within a row (interleaved calls), not across runs.  ",
          f"Checkpoint and store: the serving benchmark's (`serve_latency.prepare`: untrained MiniLM query tower, "
          f"3,000 demo products, embed_dim {model.config.embed_dim}, fusion {model.config.fusion.mode}); "
          f"{args.repeats} timed calls per path and cell after 50 warm-up calls.", "",
          md_table(["candidates", "state", "before p50 (ms)", "before p99 (ms)", "now p50 (ms)", "now p99 (ms)",
                    "now / before (p50)"], md_rows), "",
          "before: `model.score(q[None], t, v, types, has_image, pairwise=True)` on the gathered rows (the service "
          "until this change); now: `Searcher.score_vectors` (`Fusion.one_query`). "
          f"Largest score difference between the two over every call: {max_diff:.2e}.", ""]
    path = write_results(args.out, args.stem, md, {"meta": meta, "cells": rows_out, "max_abs_diff": max_diff})
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
