"""ANN index at scale: build time, recall@100 against exact search and query latency (querylife.index).

The vectors are synthetic unit vectors with cluster structure (a catalogue's products gather by type and
attributes): ``--clusters`` centres, each product a centre plus noise, normalised. Uniformly random vectors in many
dimensions have no neighbourhoods at all and understate what IVF / HNSW reach on real embeddings; measure on your
own store with ``querylife index STORE`` (it prints the same recall) before choosing parameters.

Example:
    python benchmarks/index_scale.py --sizes 100000 --kinds flat,ivf,hnsw --out benchmarks/results
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import numpy as np
from benchkit import run_header, write_results

from querylife.index import IndexConfig, _make_index, recall_at_k
from querylife.runinfo import command_line, machine_info


def clustered_unit_vectors(n: int, dim: int, clusters: int, noise: float, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    centres = rng.standard_normal((clusters, dim)).astype(np.float32)
    centres /= np.linalg.norm(centres, axis=1, keepdims=True)
    x = centres[rng.integers(0, clusters, n)] + noise * rng.standard_normal((n, dim)).astype(np.float32)
    x /= np.linalg.norm(x, axis=1, keepdims=True)
    return np.ascontiguousarray(x, dtype=np.float32)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--sizes", default="100000", help="Comma-separated numbers of vectors.")
    ap.add_argument("--kinds", default="flat,ivf,hnsw", help="Comma-separated index kinds.")
    ap.add_argument("--dim", type=int, default=256)
    ap.add_argument("--clusters", type=int, default=1000)
    ap.add_argument("--noise", type=float, default=0.03, help="Per-coordinate noise around a cluster centre.")
    ap.add_argument("--queries", type=int, default=200)
    ap.add_argument("--k", type=int, default=100)
    ap.add_argument("--nprobe", type=int, default=64)
    ap.add_argument("--threads", type=int, default=1, help="FAISS OpenMP threads (0: FAISS's default).")
    ap.add_argument("--ef-search", type=int, default=128)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--out", type=Path, default=Path("benchmarks/results"))
    args = ap.parse_args()

    import faiss

    if args.threads:
        faiss.omp_set_num_threads(args.threads)
    rows = []
    for n in (int(s) for s in args.sizes.split(",")):
        x = clustered_unit_vectors(n, args.dim, args.clusters, args.noise, args.seed)
        rng = np.random.default_rng(args.seed + 1)
        # Queries: held-out points of the same distribution (not stored vectors, which would find themselves).
        q = clustered_unit_vectors(args.queries, args.dim, args.clusters, args.noise, args.seed)[
            rng.permutation(args.queries)]
        exact = faiss.IndexFlatIP(args.dim)
        exact.add(x)
        _, truth = exact.search(q, args.k)
        for kind in args.kinds.split(","):
            cfg = IndexConfig(kind=kind, nprobe=args.nprobe, hnsw_ef_search=args.ef_search, seed=args.seed)
            t0 = time.perf_counter()
            index = _make_index(x, cfg, kind)
            build = time.perf_counter() - t0
            t0 = time.perf_counter()
            for i in range(len(q)):  # one query at a time, as a service sends them
                index.search(q[i : i + 1], args.k)
            per_query_ms = (time.perf_counter() - t0) * 1000 / len(q)
            _, got = index.search(q, args.k)
            row = {"n": n, "kind": kind, "build_s": round(build, 2), "recall@k": round(recall_at_k(got, truth), 4),
                   "query_ms": round(per_query_ms, 3)}
            if kind == "ivf":
                row["nlist"] = int(index.nlist)
                row["nprobe"] = int(index.nprobe)
            print(row, flush=True)
            rows.append(row)

    meta = {"command": command_line(), "machine": machine_info(["faiss-cpu"]), "args": vars(args) | {"out": str(
        args.out)}, "faiss_threads": faiss.omp_get_max_threads()}
    md = ["# ANN index at scale", "", *run_header(meta), "",
          f"{args.dim}-d clustered unit vectors ({args.clusters} clusters, noise {args.noise}), {args.queries} "
          f"held-out queries, recall@{args.k} against exact inner product; one query per search call.", "",
          "| vectors | kind | build (s) | recall@k | ms / query | params |", "|---|---|---|---|---|---|"]
    for r in rows:
        params = f"nlist {r['nlist']}, nprobe {r['nprobe']}" if r["kind"] == "ivf" else (
            f"M 32, efSearch {args.ef_search}" if r["kind"] == "hnsw" else "exact")
        md.append(f"| {r['n']:,} | {r['kind']} | {r['build_s']} | {r['recall@k']} | {r['query_ms']} | {params} |")
    path = write_results(args.out, "index_scale", md, {"meta": meta, "rows": rows})
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
