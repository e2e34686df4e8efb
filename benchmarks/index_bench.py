"""The ANN index (querylife.index, FAISS): build time, recall@100 and query latency at 100k and 1M vectors.

Vectors have the model's dimension (``--dim``, the default ``model.embed_dim``) and unit length, like the store's
index vectors. Two distributions:

* random: uniform on the sphere, the hardest case for an approximate index (no structure to exploit);
* clustered: a mixture of ``--clusters`` Gaussian blobs (products of one type sit together, as in a real store).

Queries are held-out draws from the same distribution (not vectors of the index). For each size and kind the
index is built with ``querylife.index``'s own builder and ``IndexConfig`` defaults (IVF: nlist = 4 sqrt(N);
HNSW: M 32, efConstruction 80); the search breadth (IVF nprobe, HNSW efSearch) is tried at the default and 4 times
it on the same built index. recall@k is measured against the exact index on the same vectors, and latency one
query at a time (what a search request does) plus a batch of all queries.

Run:  python benchmarks/index_bench.py --sizes 100000 1000000 --out benchmarks/results
Smoke: python benchmarks/index_bench.py --sizes 5000 --queries 50 --out /tmp/index_bench
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import numpy as np  # noqa: E402

from querylife.report import md_table  # noqa: E402
from querylife.runinfo import command_line, machine_info  # noqa: E402

sys.path.insert(0, str(Path(__file__).parent))
from benchkit import run_header, write_results  # noqa: E402


def unit(x: np.ndarray) -> np.ndarray:
    return (x / np.linalg.norm(x, axis=1, keepdims=True)).astype(np.float32)


def make_vectors(kind: str, n: int, n_queries: int, dim: int, clusters: int, seed: int) -> tuple[np.ndarray, ...]:
    """(base (n, dim), queries (n_queries, dim)) unit float32 vectors drawn from one distribution."""
    rng = np.random.default_rng(seed)
    total = n + n_queries
    if kind == "random":
        x = rng.standard_normal((total, dim), dtype=np.float32)
    elif kind == "clustered":
        centres = unit(rng.standard_normal((clusters, dim), dtype=np.float32))  # (C, dim)
        labels = rng.integers(0, clusters, total)
        # Spread 0.5 / sqrt(dim) per axis: blobs of cosine ~0.8 to their centre, overlapping their neighbours.
        x = centres[labels] + rng.standard_normal((total, dim), dtype=np.float32) * (0.5 / np.sqrt(dim))
    else:
        raise ValueError(kind)
    x = unit(x)
    return np.ascontiguousarray(x[:n]), np.ascontiguousarray(x[n:])


def percentile_ms(seconds: list[float], q: float) -> float:
    return float(np.percentile(np.asarray(seconds) * 1000, q))


def search_settings(kind: str, nprobes: list[int], ef_searches: list[int]) -> list[dict[str, int]]:
    """Search-time parameters to try on one built index (no rebuild): recall against speed."""
    if kind == "ivf":
        return [{"nprobe": p} for p in nprobes]
    if kind == "hnsw":
        return [{"efSearch": e} for e in ef_searches]
    return [{}]


def apply_setting(index, setting: dict[str, int]) -> None:
    if "nprobe" in setting:
        index.nprobe = min(setting["nprobe"], index.nlist)
    if "efSearch" in setting:
        index.hnsw.efSearch = setting["efSearch"]


def measure(index_mod, index, queries: np.ndarray, k: int, truth: np.ndarray | None) -> tuple[dict, np.ndarray]:
    """Latency one query per call (what a /v1/search request costs), a batched call, recall@k against ``truth``."""
    lat, rows = [], []
    for q in queries:
        t0 = time.perf_counter()
        _, r = index.search(q.reshape(1, -1), k)
        lat.append(time.perf_counter() - t0)
        rows.append(r[0])
    t0 = time.perf_counter()
    index.search(queries, k)
    batch_ms = (time.perf_counter() - t0) * 1000 / len(queries)
    approx = np.stack(rows)  # (Q, k)
    recall = 1.0 if truth is None else index_mod.recall_at_k(approx, truth)
    stats = {"recall": recall, "p50_ms": percentile_ms(lat, 50), "p99_ms": percentile_ms(lat, 99),
             "batch_ms_per_query": batch_ms}
    return stats, approx


def build(index_mod, vectors: np.ndarray, kind: str):
    cfg = index_mod.IndexConfig(kind=kind)
    # querylife.index's builder (the one `querylife index` uses); public as make_index once merged, else private.
    make_index = index_mod.make_index
    start = time.perf_counter()
    index = make_index(vectors, cfg, kind)
    build_s = time.perf_counter() - start
    params: dict[str, int] = {}
    if kind == "ivf":
        params = {"nlist": int(index.nlist)}
    elif kind == "hnsw":
        params = {"M": cfg.hnsw_m, "efConstruction": cfg.hnsw_ef_construction}
    return index, build_s, params


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sizes", type=int, nargs="+", default=[100_000, 1_000_000])
    parser.add_argument("--dim", type=int, default=256, help="vector dimension (the model's embed_dim)")
    parser.add_argument("--data", nargs="+", default=["random", "clustered"], choices=["random", "clustered"])
    parser.add_argument("--kinds", nargs="+", default=["flat", "ivf", "hnsw"], choices=["flat", "ivf", "hnsw"])
    parser.add_argument("--queries", type=int, default=200)
    parser.add_argument("--k", type=int, default=100)
    parser.add_argument("--clusters", type=int, default=1000)
    parser.add_argument("--threads", type=int, default=1, help="FAISS OpenMP threads (1: one request's share)")
    parser.add_argument("--nprobe", type=int, nargs="+", default=None,
                        help="IVF lists searched (default: IndexConfig's and 4 times it)")
    parser.add_argument("--ef-search", type=int, nargs="+", default=None,
                        help="HNSW search breadth (default: IndexConfig's and 4 times it)")
    parser.add_argument("--hnsw-max-size", type=int, default=None, help="skip HNSW above this many vectors")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", default="benchmarks/results")
    parser.add_argument("--stem", default="index_bench")
    args = parser.parse_args()

    import faiss

    from querylife import index as index_mod

    faiss.omp_set_num_threads(args.threads)
    defaults = index_mod.IndexConfig()
    args.nprobe = args.nprobe or [defaults.nprobe, 4 * defaults.nprobe]
    args.ef_search = args.ef_search or [defaults.hnsw_ef_search, 4 * defaults.hnsw_ef_search]
    load = os.getloadavg()
    meta = {"command": command_line(), "machine": machine_info(["faiss-cpu", "numpy"])}
    results: list[dict] = []
    skipped: list[str] = []

    def write(done: bool) -> Path:
        """The results so far (after each data set and size: a long run stopped midway keeps what it measured)."""
        table = md_table(
            ["data", "vectors", "index", "build (s)", f"recall@{args.k}", "p50 (ms)", "p99 (ms)", "batched (ms/q)",
             "parameters"],
            [
                [r["data"], f"{r['n']:,}", r["kind"], f"{r['build_s']:.2f}", f"{r['recall']:.4f}",
                 f"{r['p50_ms']:.3f}", f"{r['p99_ms']:.3f}", f"{r['batch_ms_per_query']:.3f}",
                 ", ".join(f"{k}={v}" for k, v in r["params"].items()) or "exact"]
                for r in results
            ],
        )
        md = [
            "# ANN index: build time, recall and query latency",
            "",
            *run_header(meta),
            f"Load average at start (1/5/15 min): {load[0]:.2f} / {load[1]:.2f} / {load[2]:.2f} "
            f"(the machine is shared; latencies are upper bounds)  ",
            f"FAISS threads: {args.threads}; dimension {args.dim}; {args.queries} held-out queries; k = {args.k}; "
            f"clustered data: {args.clusters} Gaussian blobs.",
            "",
            table,
            "",
            *([f"Not run: {'; '.join(skipped)}.", ""] if skipped else []),
            *([] if done else ["**Partial results: the run was still going (or was stopped) after these rows.**", ""]),
            "Build: `querylife.index`'s builder with `IndexConfig` defaults; the search parameter varies on the same "
            "built index (the first value of each is the default).",
            "",
            "recall@k: mean over queries of |approximate top k ∩ exact top k| / k. Latency: one query per call "
            "(p50 / p99 over the queries); batched: all queries in one call, per query.",
        ]
        path = write_results(args.out, args.stem, md, {**meta, "args": vars(args), "load_avg": load,
                                                       "results": results, "skipped": skipped})
        return path

    for data in args.data:
        for n in args.sizes:
            vectors, queries = make_vectors(data, n, args.queries, args.dim, args.clusters, args.seed)
            truth = None
            k = min(args.k, n)
            for kind in ["flat", *[k for k in args.kinds if k != "flat"]]:  # exact first: the ground truth
                if kind == "hnsw" and args.hnsw_max_size is not None and n > args.hnsw_max_size:
                    skipped.append(f"{data} {n:,}: hnsw (over --hnsw-max-size {args.hnsw_max_size:,}: build time)")
                    continue
                index, build_s, params = build(index_mod, vectors, kind)
                for setting in search_settings(kind, args.nprobe, args.ef_search):
                    apply_setting(index, setting)
                    stats, rows = measure(index_mod, index, queries, k, truth)
                    if kind == "flat":
                        truth = rows
                        if "flat" not in args.kinds:
                            continue
                    row = {"data": data, "n": n, "kind": kind, "build_s": build_s, **stats,
                           "params": {**params, **setting}}
                    results.append(row)
                    print(f"{data:9s} n={n:>9,d} {kind:5s} {setting} build {build_s:7.2f} s  recall@{k} "
                          f"{stats['recall']:.4f}  p50 {stats['p50_ms']:.3f} ms  p99 {stats['p99_ms']:.3f} ms",
                          flush=True)
                del index
            del vectors, queries
            write(done=False)

    print(f"results: {write(done=True)}")


if __name__ == "__main__":
    main()
