"""ANN index over a store's index vectors (FAISS, inner product), written beside the store.

The stored ``index_vectors`` are the query-independent fused product vectors (``Fusion.index_vectors``: for the
query-aware gate its type-only part): unit length, so that the inner product with a unit query vector ``q`` is a
cosine, or with ``model.fusion.normalize=false`` the blend ``(1 - w) t + w v`` itself, whose inner product with
``q`` is that mode's score. Retrieval uses them; the query-aware gate re-scores the candidates
(:class:`querylife.search.Searcher`).

Small catalogues get an exact index (``IndexFlatIP``); past ``exact_threshold`` products an approximate one (IVF or
HNSW, :class:`IndexConfig`). The build measures recall@k of the approximate index against exact search, with a
sample of stored vectors as queries, prints it and records it in ``STORE/index.json``.

Files: ``STORE/index-<id>.faiss`` (``faiss.write_index`` into a temporary file, then renamed) and
``STORE/index.json`` (written atomically after it, naming the file, the store's fingerprint, the settings, recall):
a run killed at any point leaves the previous index usable, and a store changed after the build is detected.

Example::

    build = build_index("store", IndexConfig(kind="auto"))
    index = ProductIndex.load("store")
    scores, rows = index.search(q.numpy(), k=100)      # (B, 100) float32, (B, 100) int64 store rows
"""

from __future__ import annotations

import json
import math
import os
import secrets
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Literal

import numpy as np
from pydantic import BaseModel, ConfigDict, Field

from .atomic import atomic_write_text
from .store import EmbeddingStore, StoredProducts, StoreError

__all__ = ["IndexBuild", "IndexConfig", "ProductIndexError", "ProductIndex", "build_index", "recall_at_k"]

INDEX_MANIFEST = "index.json"
INDEX_FORMAT = "querylife-index"


class ProductIndexError(StoreError):
    """An index that is missing, stale (the store changed after the build) or unreadable."""


class IndexConfig(BaseModel):
    """How ``querylife index`` builds the ANN index (unknown keys are errors)."""

    model_config = ConfigDict(extra="forbid")
    # auto: exact below exact_threshold products, else `approximate`. flat is exact inner product.
    kind: Literal["auto", "flat", "ivf", "hnsw"] = "auto"
    # An exact scan of 20k x 256 floats took 1.3 ms per query on one core here (100k: 11 ms, 1M: 82 ms).
    exact_threshold: int = Field(default=20_000, ge=0)
    approximate: Literal["ivf", "hnsw"] = "ivf"  # IVF builds in seconds at 1M; HNSW answers faster, builds slower
    nlist: int | None = Field(default=None, ge=1)  # IVF lists; None: 4 sqrt(N), the usual rule of thumb
    nprobe: int = Field(default=64, ge=1)  # IVF lists searched per query: recall against speed
    train_size: int | None = Field(default=None, ge=1)  # IVF training sample; None: min(N, 64 nlist)
    hnsw_m: int = Field(default=32, ge=2)  # HNSW graph degree
    hnsw_ef_construction: int = Field(default=80, ge=1)
    hnsw_ef_search: int = Field(default=128, ge=1)  # HNSW search breadth: recall against speed
    recall_k: int = Field(default=100, ge=1)  # recall@k measured at build time
    recall_queries: int = Field(default=200, ge=1)  # stored vectors used as queries for that measurement
    seed: int = 0  # training sample and recall queries

    def resolved_kind(self, n: int) -> str:
        if self.kind != "auto":
            return self.kind
        return "flat" if n < self.exact_threshold else self.approximate

    def resolved_nlist(self, n: int) -> int:
        nlist = self.nlist or int(round(4 * math.sqrt(max(n, 1))))
        # faiss wants ~39 training points per centroid; fewer lists on a small store than it can train.
        return max(1, min(nlist, n // 39 if n >= 39 else 1))


def _faiss():
    try:
        import faiss
    except ImportError:  # pragma: no cover - faiss-cpu is in the serve extra
        raise ProductIndexError("the index needs faiss: pip install 'querylife[serve]' (faiss-cpu)") from None
    return faiss


def make_index(vectors: np.ndarray, cfg: IndexConfig, kind: str):
    """A FAISS inner-product index of ``kind`` (flat | ivf | hnsw) over ``vectors`` (N, D) float32, trained (IVF)
    and filled; ``cfg`` gives its parameters. ``build_index`` wraps it with recall measurement and atomic files."""
    faiss = _faiss()
    n, d = vectors.shape
    if kind == "flat":
        index = faiss.IndexFlatIP(d)
    elif kind == "ivf":
        nlist = cfg.resolved_nlist(n)
        quantizer = faiss.IndexFlatIP(d)
        index = faiss.IndexIVFFlat(quantizer, d, nlist, faiss.METRIC_INNER_PRODUCT)
        size = min(n, cfg.train_size or 64 * nlist)
        rng = np.random.default_rng(cfg.seed)
        sample = vectors if size >= n else vectors[np.sort(rng.choice(n, size, replace=False))]
        index.train(sample)
        index.nprobe = min(cfg.nprobe, nlist)
    elif kind == "hnsw":
        index = faiss.IndexHNSWFlat(d, cfg.hnsw_m, faiss.METRIC_INNER_PRODUCT)
        index.hnsw.efConstruction = cfg.hnsw_ef_construction
        index.hnsw.efSearch = cfg.hnsw_ef_search
    else:  # pragma: no cover - pydantic restricts kind
        raise ValueError(kind)
    index.add(vectors)
    return index


def recall_at_k(approx_rows: np.ndarray, exact_rows: np.ndarray) -> float:
    """Mean over queries of |approximate top k ∩ exact top k| / k (rows (B, k); -1 = no result)."""
    hits = [len(set(a[a >= 0].tolist()) & set(e[e >= 0].tolist())) / max(1, int((e >= 0).sum()))
            for a, e in zip(approx_rows, exact_rows, strict=True)]
    return float(np.mean(hits)) if hits else 1.0


@dataclass
class IndexBuild:
    """What ``build_index`` made: kind, size, its recall@k against exact search, timings, files."""

    path: Path
    kind: str
    n: int
    dim: int
    recall_k: int
    recall: float
    build_seconds: float
    query_ms: float
    params: dict[str, Any]

    def summary(self) -> str:
        params = ", ".join(f"{k}={v}" for k, v in self.params.items())
        return (f"{self.kind} index over {self.n} products (dim {self.dim}{', ' + params if params else ''}) in "
                f"{self.build_seconds:.1f} s: recall@{self.recall_k} {self.recall:.4f} against exact search, "
                f"{self.query_ms:.2f} ms per query; {self.path}")


def build_index(
    store_path: str | Path,
    config: IndexConfig | None = None,
    *,
    products: StoredProducts | None = None,
    log: Callable[[str], None] | None = None,
) -> IndexBuild:
    """Build the index for a finished store and write it beside it (``querylife index STORE``).

    Raises:
        StoreError: the store is unfinished or damaged.
    """
    cfg = config or IndexConfig()
    store_path = Path(store_path)
    store = EmbeddingStore.open(store_path)
    products = products if products is not None else store.load()
    vectors = np.ascontiguousarray(products.index_vectors.numpy(), dtype=np.float32)  # (N, D')
    n, d = vectors.shape if vectors.ndim == 2 and len(vectors) else (0, int(store.manifest["index_dim"]))
    vectors = vectors.reshape(n, d)
    kind = cfg.resolved_kind(n)
    start = time.perf_counter()
    index = make_index(vectors, cfg, kind)
    build_seconds = time.perf_counter() - start
    params: dict[str, Any] = {}
    if kind == "ivf":
        params = {"nlist": int(index.nlist), "nprobe": int(index.nprobe)}
    elif kind == "hnsw":
        params = {"M": cfg.hnsw_m, "efConstruction": cfg.hnsw_ef_construction, "efSearch": cfg.hnsw_ef_search}

    # recall@k against exact search, with stored vectors as queries (the real queries are q vectors, which an
    # index of product vectors does not have; docs/SERVING.md).
    k = min(cfg.recall_k, n)
    rng = np.random.default_rng(cfg.seed)
    m = min(cfg.recall_queries, n)
    queries = vectors[np.sort(rng.choice(n, m, replace=False))] if m else vectors[:0]
    recall, query_ms = 1.0, 0.0
    if m:
        t0 = time.perf_counter()
        _, approx = index.search(queries, k)
        query_ms = (time.perf_counter() - t0) * 1000 / m
        if kind != "flat":
            faiss = _faiss()
            exact = faiss.IndexFlatIP(d)
            exact.add(vectors)
            _, truth = exact.search(queries, k)
            recall = recall_at_k(approx, truth)

    faiss = _faiss()
    name = f"index-{secrets.token_hex(4)}.faiss"
    fd, tmp = tempfile.mkstemp(dir=store_path, prefix=f".{name}.", suffix=".tmp")
    os.close(fd)
    try:
        faiss.write_index(index, tmp)
        os.chmod(tmp, 0o644)
        os.replace(tmp, store_path / name)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    from .runinfo import machine_info

    info = {
        "format": INDEX_FORMAT, "file": name, "kind": kind, "n": n, "dim": d, "params": params,
        "config": cfg.model_dump(mode="json"), "store_fingerprint": store.fingerprint(),
        "checkpoint_sha256": store.checkpoint_sha256,
        "recall": {"k": k, "queries": m, "recall": recall, "against": "exact inner product (IndexFlatIP)"},
        "build_seconds": round(build_seconds, 3), "query_ms": round(query_ms, 4),
        "faiss": getattr(faiss, "__version__", None), "machine": machine_info(["faiss-cpu"]),
        "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
    }
    atomic_write_text(store_path / INDEX_MANIFEST, json.dumps(info, indent=2, default=str) + "\n")
    for old in store_path.glob("index-*.faiss"):  # earlier builds (and files of builds killed before the JSON)
        if old.name != name:
            old.unlink(missing_ok=True)
    for stale in store_path.glob(".index-*.tmp"):
        stale.unlink(missing_ok=True)
    build = IndexBuild(store_path / name, kind, n, d, k, recall, build_seconds, query_ms, params)
    if log:
        log(build.summary())
    return build


class ProductIndex:
    """A loaded index; row numbers are those of ``EmbeddingStore.load()`` (shard order).

    Example::

        index = ProductIndex.load("store", nprobe=64)
        scores, rows = index.search(queries, k=100)   # queries (B, D') float32
    """

    def __init__(self, index: Any, info: dict[str, Any], path: Path) -> None:
        self.index = index
        self.info = info
        self.path = path

    @property
    def size(self) -> int:
        return int(self.index.ntotal)

    @property
    def kind(self) -> str:
        return str(self.info.get("kind"))

    @classmethod
    def load(
        cls, store_path: str | Path, *, store: EmbeddingStore | None = None, nprobe: int | None = None,
        ef_search: int | None = None, threads: int | None = 1,
    ) -> ProductIndex:
        """Read ``STORE/index.json`` and its FAISS file; refuse an index built over other store contents.

        ``nprobe`` / ``ef_search``: override the IVF / HNSW search breadth chosen at build time. ``threads``: FAISS's
        OpenMP threads, process-wide (default 1; None leaves them). A service answering one query per call wants 1:
        with FAISS's default threads on a busy 2-core machine an exact search of 20k 256-d vectors took 32 ms instead
        of 1.3 ms.

        Raises:
            ProductIndexError: no index (build one with ``querylife index STORE``), a stale or unreadable one.
        """
        store_path = Path(store_path)
        store = store or EmbeddingStore.open(store_path)
        file = store_path / INDEX_MANIFEST
        if not file.is_file():
            raise ProductIndexError(f"{store_path} has no index: build one with `querylife index {store_path}`")
        try:
            info = json.loads(file.read_text(encoding="utf-8"))
        except (json.JSONDecodeError, UnicodeDecodeError) as err:
            raise ProductIndexError(f"{file}: not valid JSON ({err}); rebuild with "
                                    f"`querylife index {store_path}`") from None
        if info.get("format") != INDEX_FORMAT or "file" not in info:
            raise ProductIndexError(f"{file}: not a querylife index manifest")
        if info.get("store_fingerprint") != store.fingerprint():
            raise ProductIndexError(f"{file}: the index was built over other store contents (the store changed since): "
                              f"rebuild it with `querylife index {store_path}`")
        faiss = _faiss()
        if threads is not None:
            faiss.omp_set_num_threads(threads)
        path = store_path / info["file"]
        try:
            index = faiss.read_index(str(path))
        except Exception as err:  # faiss raises RuntimeError with its C++ message for missing / bad files
            raise ProductIndexError(f"{path}: cannot read the index ({err}); rebuild with `querylife index "
                                    f"{store_path}`") from None
        if index.ntotal != info.get("n") or index.d != info.get("dim"):
            raise ProductIndexError(f"{path}: holds {index.ntotal} vectors of dim {index.d}, {file} says "
                                    f"{info.get('n')} of dim {info.get('dim')}")
        if nprobe is not None and hasattr(index, "nprobe"):
            index.nprobe = nprobe
        if ef_search is not None and hasattr(index, "hnsw"):
            index.hnsw.efSearch = ef_search
        return cls(index, info, path)

    def search(self, queries: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        """Top ``k`` rows per query by inner product: scores (B, k) float32 and rows (B, k) int64 (-1: none)."""
        q = np.ascontiguousarray(np.asarray(queries, dtype=np.float32).reshape(-1, self.index.d))  # (B, D')
        k = max(1, min(int(k), self.size)) if self.size else 1
        scores, rows = self.index.search(q, k)
        return scores.astype(np.float32, copy=False), rows.astype(np.int64, copy=False)
