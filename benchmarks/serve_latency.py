"""/v1/relevance latency and throughput on loopback: PyTorch vs ONNX (fp32, int8) query encoder, micro-batching on
and off.

Setup (once, in ``--work``): the demo storefront (3,000 products), an **untrained** checkpoint with the default
towers (all-MiniLM-L6-v2 query/text tower, small CNN vision tower, the demo's product types; latency does not
depend on the weights' values, so no training is needed), its embedding store (``embed_catalogue``) and index
(``build_index``), and the ONNX query encoder (``export_query_encoder``) with its int8 twin
(``quantize_query_encoder``, what ``querylife export-onnx --quantize int8`` writes; encoder ``onnx-int8``: faster,
at a measured quality cost, benchmarks/results/onnx_int8.md).

For each server (encoder x micro-batching) the benchmark starts ``querylife serve`` as a subprocess on
127.0.0.1, waits for /readyz, and drives ``POST /v1/relevance`` with a bare asyncio HTTP/1.1 client
(``--concurrency`` keep-alive connections sending pre-encoded requests, each sending its next request when the
previous answered) for ``--duration`` seconds per cell after a warm-up: 1 query x 100 and x 1,000 stored
candidates (random ids, a fresh sample per request), the demo's queries in turn. The query cache is off
(``batcher.cache_size=0``) so every request encodes its query. Reported: client-side p50 / p95 / p99 latency,
requests/s, errors; the server's own service time and its spans (query encode, fused scoring, JSON) from each
response's ``Server-Timing`` header; CPU seconds per request of the client and of the server process.

The floor: the bare query-tower forward for one query with the encoder the server uses (the TorchScript trace,
``querylife.traced_query``, with eager ``model.encode_queries`` shown beside it / the ONNX session), in the
benchmark process with the same thread count just before each server starts, and service time / floor (client
and server p50 at concurrency 1 over the floor's p50). In-process ``Searcher.relevance`` (encode + fused scoring
of the candidates, no HTTP) splits the rest.

The load generator runs on the same 2 cores as the server (no other machine here): at concurrency 8 it competes
with the server for CPU, so requests/s is a lower bound.

Run:  python benchmarks/serve_latency.py --out benchmarks/results
Smoke: python benchmarks/serve_latency.py --duration 2 --warmup 1 --candidates 100 --concurrency 1 --out /tmp/sl
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import shutil
import socket
import subprocess
import sys
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
import torch  # noqa: E402

from querylife.report import md_table  # noqa: E402
from querylife.runinfo import command_line, machine_info  # noqa: E402

sys.path.insert(0, str(Path(__file__).parent))
from benchkit import quiet_transformers, run_header, write_results  # noqa: E402


# ---- setup ----------------------------------------------------------------------------------------------------
def prepare(work: Path) -> dict[str, Path]:
    """Demo storefront, untrained MiniLM checkpoint, its store + index and ONNX query encoder (reused if there)."""
    from querylife.config import load_config
    from querylife.data.storefront import DemoConfig, generate_demo
    from querylife.encode import load_catalogue
    from querylife.index import INDEX_MANIFEST, build_index
    from querylife.model import ModelConfig, QueryLifeModel
    from querylife.onnx_export import (
        DEFAULT_NAME,
        export_query_encoder,
        quantize_query_encoder,
        quantized_path,
        quiet_export,
    )
    from querylife.store import MANIFEST_NAME, EmbeddingStore, embed_catalogue
    from querylife.towers import TowerConfig

    demo = generate_demo(work / "data", DemoConfig(), progress=False)
    ckpt = work / "checkpoint"
    if not (ckpt / "config.json").exists():
        torch.manual_seed(0)
        types = sorted(pd.read_parquet(demo.catalog_path, columns=["product_type"])["product_type"].str.lower()
                       .unique())
        cnn = TowerConfig(vision_model="small_cnn")  # the tower these figures were recorded with: benchkit.CNN_TOWER
        QueryLifeModel(ModelConfig(product_types=types, tower=cnn)).save_pretrained(ckpt)
    store = work / "store"
    if store.exists() and not ((store / MANIFEST_NAME).exists() and EmbeddingStore.open(store).complete):
        shutil.rmtree(store)  # an unfinished store of an earlier run: start over
    if not store.exists():
        catalogue = load_catalogue(load_config(None, [f"data.catalog={demo.catalog_path}"]).data)
        embed_catalogue(ckpt, catalogue, store, progress=False)
    if not (store / INDEX_MANIFEST).exists():
        build_index(store)
    onnx = ckpt / "onnx" / DEFAULT_NAME
    if not onnx.exists():
        with quiet_export():
            export_query_encoder(ckpt, onnx)
    onnx_int8 = quantized_path(onnx)  # what `querylife export-onnx --quantize int8` writes beside it
    if not onnx_int8.exists():
        quantize_query_encoder(onnx, onnx_int8, model=QueryLifeModel.from_pretrained(ckpt))
    return {"checkpoint": ckpt, "store": store, "onnx": onnx, "onnx-int8": onnx_int8, "pairs": Path(demo.pairs_path)}


def scoring_args(description: str, *, stem: str, repeats: int) -> argparse.Namespace:
    """The in-process scoring benchmarks' command line (serve_scoring.py, query_offset_cost.py): candidates per
    call, timed calls, torch threads, the work directory of :func:`prepare`, where to write."""
    parser = argparse.ArgumentParser(description=description, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--candidates", type=int, nargs="+", default=[100, 1000])
    parser.add_argument("--repeats", type=int, default=repeats, help="timed calls per path and cell")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--work", default="runs/serve_bench")
    parser.add_argument("--out", default="benchmarks/results")
    parser.add_argument("--stem", default=stem)
    return parser.parse_args()


def bench_service(args: argparse.Namespace):
    """The loaded service (checkpoint, store) of :func:`prepare` in ``args.work``, with ``args.threads`` threads."""
    from querylife.serve.config import ServeConfig
    from querylife.serve.service import load_service

    torch.set_num_threads(args.threads)
    quiet_transformers()
    paths = prepare(Path(args.work))
    return load_service(paths["checkpoint"], paths["store"], ServeConfig())


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def server_command(
    paths: dict[str, Path], encoder: str, batching: bool, threads: int, port: int, workers: int = 1
) -> list[str]:
    sets = [f"batcher.enabled={str(batching).lower()}", "batcher.cache_size=0", f"torch_threads={threads}",
            "max_inflight=64"]
    cmd = [sys.executable, "-m", "querylife.cli", "serve", "--checkpoint", str(paths["checkpoint"]), "--store",
           str(paths["store"]), "--port", str(port), "--log-level", "warning", *[a for s in sets for a in ("--set", s)]]
    if encoder in ("onnx", "onnx-int8"):
        cmd += ["--onnx", str(paths[encoder])]
    if workers > 1:
        cmd += ["--workers", str(workers)]
    return cmd


def wait_ready(proc: subprocess.Popen, url: str, timeout: float = 300.0, workers: int = 1) -> None:
    """Until ``workers`` distinct worker processes have answered ``/readyz`` with 200 (each loads the model on its
    own; a fresh connection each time, which the kernel spreads over the workers)."""
    import httpx

    deadline = time.time() + timeout
    ready: set[int] = set()
    while time.time() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"the server exited with {proc.returncode}:\n{proc.stderr.read()[-3000:]}")
        try:
            r = httpx.get(url + "/readyz", timeout=2)
            if r.status_code == 200:
                ready.add(r.json()["pid"])
                if len(ready) >= workers:
                    return
        except httpx.HTTPError:
            pass
        time.sleep(0.5)
    raise TimeoutError(f"{url}/readyz: {len(ready)} of {workers} workers ready after {timeout} s")


# ---- load -----------------------------------------------------------------------------------------------------
def _cpu_seconds(pid: int) -> float:
    """User + system CPU seconds of process ``pid`` and its live descendants (uvicorn's worker processes with
    ``--workers``; Linux /proc)."""
    total = 0.0
    for p in _process_tree(pid):
        try:
            fields = Path(f"/proc/{p}/stat").read_text().rsplit(")", 1)[1].split()
        except OSError:  # exited since it was listed
            continue
        total += (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
    return total


def _process_tree(pid: int) -> list[int]:
    out, todo = [], [pid]
    while todo:
        p = todo.pop()
        out.append(p)
        try:
            for task in os.listdir(f"/proc/{p}/task"):
                todo += [int(c) for c in Path(f"/proc/{p}/task/{task}/children").read_text().split()]
        except OSError:
            continue
    return out


def _spans(header: bytes) -> dict[str, float]:
    """``Server-Timing`` value -> {name: ms}."""
    out = {}
    for part in header.decode("latin-1").split(","):
        name, _, dur = part.strip().partition(";dur=")
        if dur:
            out[name] = float(dur)
    return out


async def _post(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, raw: bytes) -> tuple[int, bytes, dict]:
    """One HTTP/1.1 keep-alive request (``raw``: the whole request, pre-encoded) -> status, body, Server-Timing."""
    writer.write(raw)
    head = await reader.readuntil(b"\r\n\r\n")
    lines = head.split(b"\r\n")
    status = int(lines[0].split()[1])
    length, timing = 0, {}
    for line in lines[1:]:
        key, _, value = line.partition(b":")
        key = key.strip().lower()
        if key == b"content-length":
            length = int(value)
        elif key == b"server-timing":
            timing.update(_spans(value))
    return status, await reader.readexactly(length), timing


async def drive(url: str, queries: list[str], ids: list[str], n_candidates: int, concurrency: int,
                duration: float, warmup: float, seed: int, server_pid: int | None = None) -> dict:
    """``concurrency`` closed-loop clients for ``warmup`` + ``duration`` seconds; stats over the measured part.

    The load generator is a bare asyncio HTTP/1.1 client on keep-alive connections sending pre-encoded requests
    (no per-request JSON, header building or response parsing beyond the status line and two headers): on a
    2-core machine it shares the cores with the server, so it is kept as light as it can be (its CPU per request is
    reported). Each response's ``Server-Timing`` gives the server's own service time."""
    host, port = url.removeprefix("http://").split(":")
    rng = random.Random(seed)
    raws = []
    for i in range(512):
        body = json.dumps({"query": queries[i % len(queries)], "product_ids": rng.sample(ids, n_candidates)}).encode()
        raws.append(b"POST /v1/relevance HTTP/1.1\r\nhost: " + host.encode() + b"\r\ncontent-type: "
                    b"application/json\r\ncontent-length: " + str(len(body)).encode() + b"\r\n\r\n" + body)
    latencies: list[float] = []
    server: list[dict] = []
    errors: dict[int, int] = {}
    counter = iter(range(10**9))
    conns = [await asyncio.open_connection(host, int(port)) for _ in range(concurrency)]
    status, body, _ = await _post(*conns[0], raws[0])
    assert status == 200 and len(json.loads(body)["results"]) == n_candidates, "the service did not score them all"
    start = time.perf_counter()
    measure_from = start + warmup
    stop = measure_from + duration
    cpu: dict[str, float] = {}

    async def worker(reader, writer) -> None:
        while True:
            if time.perf_counter() >= stop:
                return
            raw = raws[next(counter) % len(raws)]
            t0 = time.perf_counter()
            status, _, timing = await _post(reader, writer, raw)
            t1 = time.perf_counter()
            if t0 >= measure_from and t1 <= stop:
                if status == 200:
                    latencies.append(t1 - t0)
                    server.append(timing)
                else:
                    errors[status] = errors.get(status, 0) + 1

    async def cpu_marks() -> None:  # CPU seconds of both processes over the measured window only
        await asyncio.sleep(max(0.0, measure_from - time.perf_counter()))
        cpu["client0"], cpu["server0"] = time.process_time(), _cpu_seconds(server_pid) if server_pid else 0.0
        await asyncio.sleep(max(0.0, stop - time.perf_counter()))
        cpu["client1"], cpu["server1"] = time.process_time(), _cpu_seconds(server_pid) if server_pid else 0.0

    await asyncio.gather(*(worker(r, w) for r, w in conns), cpu_marks())
    for _, w in conns:
        w.close()
    ms = np.asarray(latencies) * 1000
    n = len(latencies)

    def pct(values, q) -> float:
        return float(np.percentile(values, q)) if len(values) else float("nan")

    app = [t.get("app", float("nan")) for t in server]
    out = {
        "requests": n,
        "errors": errors,
        "rps": n / duration,
        "p50_ms": pct(ms, 50),
        "p95_ms": pct(ms, 95),
        "p99_ms": pct(ms, 99),
        "mean_ms": float(ms.mean()) if n else float("nan"),
        "server_p50_ms": pct(app, 50),
        "server_p99_ms": pct(app, 99),
        "client_cpu_ms_per_req": (cpu["client1"] - cpu["client0"]) * 1000 / max(n, 1),
        "server_cpu_ms_per_req": (cpu["server1"] - cpu["server0"]) * 1000 / max(n, 1) if server_pid else None,
    }
    for span in ("parse", "pool_wait", "encode", "score", "serialize"):
        out[f"{span}_p50_ms"] = pct([t[span] for t in server if span in t], 50)
    return out


# ---- floors ---------------------------------------------------------------------------------------------------
def timed(fn, n: int) -> list[float]:
    out = []
    for _ in range(n):
        t0 = time.perf_counter()
        fn()
        out.append(time.perf_counter() - t0)
    return out


class Floors:
    """The bare query-tower forward for one query and in-process ``Searcher.relevance`` (encode + fused scoring of
    the candidates, no HTTP), in the benchmark process with the server's thread count."""

    def __init__(self, paths: dict[str, Path], threads: int) -> None:
        from querylife.index import ProductIndex
        from querylife.model import QueryLifeModel
        from querylife.onnx_export import OnnxQueryEncoder
        from querylife.store import EmbeddingStore
        from querylife.traced_query import TracedQueryEncoder

        torch.set_num_threads(threads)
        self.model = QueryLifeModel.from_pretrained(paths["checkpoint"]).eval()
        self.encoders = {
            "pytorch": TracedQueryEncoder(self.model),  # what `querylife serve` encodes with (torchscript: true)
            "onnx": OnnxQueryEncoder(paths["onnx"], intra_op_threads=threads),
            "onnx-int8": OnnxQueryEncoder(paths["onnx-int8"], intra_op_threads=threads),
        }
        self.eager = lambda qs: self.model.encode_queries(qs).float()  # shown beside it: what tracing saves
        self.products = EmbeddingStore.open(paths["store"]).load()
        self.index = ProductIndex.load(paths["store"])

    @torch.no_grad()
    def measure(self, encoder: str, queries: list[str], candidates: list[int], n: int) -> dict[str, dict]:
        from querylife.search import Searcher

        enc = self.encoders[encoder]
        qi = iter(range(10**9))

        def next_query() -> list[str]:
            return [queries[next(qi) % len(queries)]]

        def stats(lat: list[float]) -> dict[str, float]:
            ms = np.asarray(lat) * 1000
            return {"p50_ms": float(np.percentile(ms, 50)), "p99_ms": float(np.percentile(ms, 99))}

        for _ in range(10):
            enc(next_query())
        out = {"query forward": stats(timed(lambda: enc(next_query()), n))}
        if encoder == "pytorch":
            for _ in range(10):
                self.eager(next_query())
            out["query forward (eager PyTorch)"] = stats(timed(lambda: self.eager(next_query()), n))
        searcher = Searcher(self.model, self.products, self.index, query_encoder=enc)
        rng = random.Random(0)
        ids = self.products.product_ids
        for c in candidates:
            rows = [self.products.rows(rng.sample(ids, c)) for _ in range(64)]
            ri = iter(range(10**9))

            def one(rows=rows, ri=ri) -> None:
                searcher.relevance(next_query()[0], rows[next(ri) % 64])

            out[f"in-process relevance x{c}"] = stats(timed(one, n))
        return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--encoders", nargs="+", default=["pytorch", "onnx", "onnx-int8"],
                        choices=["pytorch", "onnx", "onnx-int8"])
    parser.add_argument("--batching", nargs="+", default=["on", "off"], choices=["on", "off"])
    parser.add_argument("--candidates", type=int, nargs="+", default=[100, 1000])
    parser.add_argument("--concurrency", type=int, nargs="+", default=[1, 8])
    parser.add_argument("--duration", type=float, default=10.0, help="measured seconds per cell")
    parser.add_argument("--warmup", type=float, default=2.0, help="seconds per cell before measuring")
    parser.add_argument("--threads", type=int, default=1, help="server torch / onnxruntime intra-op threads (2 on a "
                        "shared 2-core machine makes spinning thread pools fight: 187 ms vs 23 ms per forward)")
    parser.add_argument("--floor-repeats", type=int, default=200)
    parser.add_argument("--workers", type=int, default=1, help="server worker processes (`querylife serve --workers`)")
    parser.add_argument("--work", default="runs/bench")
    parser.add_argument("--out", default="benchmarks/results")
    parser.add_argument("--stem", default="serve_latency")
    args = parser.parse_args()

    quiet_transformers()
    load_start = os.getloadavg()
    paths = prepare(Path(args.work))
    queries = list(dict.fromkeys(pd.read_parquet(paths["pairs"], columns=["query"])["query"]))
    from querylife.store import EmbeddingStore

    ids = EmbeddingStore.open(paths["store"]).load().product_ids
    env = {**os.environ, "OMP_NUM_THREADS": str(args.threads)}

    cells = []
    floor_runs = []
    measure_floor = Floors(paths, args.threads)
    for encoder in args.encoders:
        # `querylife serve` does not micro-batch for an int8 graph (it encodes one query at a time): one server
        for batching in (["off"] if encoder == "onnx-int8" else args.batching):
            # The floor just before this server's cells (the machine's load drifts: a floor from another minute
            # would make a poor ratio); the benchmark process is idle while the server runs.
            floor = measure_floor.measure(encoder, queries, args.candidates, args.floor_repeats)
            floor_runs.append({"encoder": encoder, "batching": batching, **floor})
            for k, v in floor.items():
                print(f"floor before {encoder} / batching {batching}: {k}: p50 {v['p50_ms']:.2f} ms, "
                      f"p99 {v['p99_ms']:.2f} ms", flush=True)
            port = free_port()
            cmd = server_command(paths, encoder, batching == "on", args.threads, port, args.workers)
            proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True, env=env)
            url = f"http://127.0.0.1:{port}"
            try:
                wait_ready(proc, url, workers=args.workers)
                for n_cand in args.candidates:
                    for conc in args.concurrency:
                        stats = asyncio.run(drive(url, queries, ids, n_cand, conc, args.duration, args.warmup,
                                                  seed=len(cells), server_pid=proc.pid))
                        cell = {"encoder": encoder, "batching": batching, "candidates": n_cand,
                                "concurrency": conc, **stats,
                                "floor_p50_ms": floor["query forward"]["p50_ms"]}
                        cells.append(cell)
                        print(f"{encoder:9s} batching {batching:3s} x{n_cand:<5d} c={conc}: p50 {stats['p50_ms']:.1f} "
                              f"p95 {stats['p95_ms']:.1f} p99 {stats['p99_ms']:.1f} ms, {stats['rps']:.0f} req/s, "
                              f"server p50 {stats['server_p50_ms']:.1f} (parse {stats['parse_p50_ms']:.1f}, hand-off "
                              f"{stats['pool_wait_p50_ms']:.1f}, encode {stats['encode_p50_ms']:.1f}, score "
                              f"{stats['score_p50_ms']:.1f}, serialize {stats['serialize_p50_ms']:.1f}) ms, client "
                              f"CPU {stats['client_cpu_ms_per_req']:.2f} ms/req, errors {stats['errors'] or 0}",
                              flush=True)
            finally:
                proc.terminate()
                try:
                    proc.wait(timeout=20)
                except subprocess.TimeoutExpired:
                    proc.kill()
    load_end = os.getloadavg()
    for c in cells:
        c["p50_over_floor"] = c["p50_ms"] / c["floor_p50_ms"] if c["concurrency"] == 1 else None
        c["server_over_floor"] = c["server_p50_ms"] / c["floor_p50_ms"] if c["concurrency"] == 1 else None

    # The targets, on the x1,000 cells.
    def best(encoder: str, conc: int, key: str, low: bool) -> dict | None:
        pool = [c for c in cells if c["encoder"] == encoder and c["candidates"] == 1000 and c["concurrency"] == conc]
        return (min if low else max)(pool, key=lambda c: c[key]) if pool else None

    targets = []
    for encoder, limit in (("pytorch", 20.0), ("onnx", 10.0), ("onnx-int8", 10.0)):
        cell = best(encoder, 1, "p99_ms", True)
        if cell:
            targets.append([f"x1,000 p99 <= {limit:g} ms ({encoder}, concurrency 1, batching {cell['batching']})",
                            f"{cell['p99_ms']:.1f} ms", "met" if cell["p99_ms"] <= limit else "not met"])
    for encoder in args.encoders:
        cell = best(encoder, 8, "rps", False)
        if cell:
            targets.append([f">= 200 req/s at concurrency 8 (x1,000, {encoder}, batching {cell['batching']})",
                            f"{cell['rps']:.0f} req/s", "met" if cell["rps"] >= 200 else "not met"])

    meta = {"command": command_line(), "machine": machine_info(["onnxruntime", "fastapi", "uvicorn", "httpx"])}
    def f1(x) -> str:
        return "–" if x is None or x != x else f"{x:.1f}"

    rows = [[c["encoder"], c["batching"], f"{c['candidates']:,}", c["concurrency"], f1(c["p50_ms"]), f1(c["p95_ms"]),
             f1(c["p99_ms"]), f"{c['rps']:.0f}", sum(c["errors"].values()) if c["errors"] else 0,
             f1(c["server_p50_ms"]), f1(c["server_p99_ms"]), f1(c["p50_over_floor"]), f1(c["server_over_floor"])]
            for c in cells]
    def f2(x) -> str:
        return "–" if x is None or x != x else f"{x:.2f}"

    split = [[c["encoder"], c["batching"], f"{c['candidates']:,}", c["concurrency"], f1(c["server_p50_ms"]),
              f2(c["parse_p50_ms"]), f2(c["pool_wait_p50_ms"]), f2(c["encode_p50_ms"]), f2(c["score_p50_ms"]),
              f2(c["serialize_p50_ms"]),
              f1(c["p50_ms"] - c["server_p50_ms"]), f"{c['client_cpu_ms_per_req']:.2f}",
              "–" if c["server_cpu_ms_per_req"] is None else f"{c['server_cpu_ms_per_req']:.2f}"] for c in cells]
    md = [
        "# Serving: /v1/relevance latency and throughput on loopback",
        "",
        *run_header(meta),
        f"Load average (1 min) at start / end: {load_start[0]:.2f} / {load_end[0]:.2f}; the machine's 2 cores are "
        "shared with other jobs and with the load generator, so latencies are upper bounds and requests/s lower "
        "bounds  ",
        f"Model: untrained checkpoint (all-MiniLM-L6-v2 query tower, frozen; small CNN vision tower; embed_dim 256); "
        f"store of {len(ids):,} demo products, exact index. Server: {args.workers} worker process(es), "
        f"{args.threads} torch / onnxruntime "
        f"threads, query cache off; `querylife serve` (ONNX: `--onnx`, the graph of `querylife export-onnx`; "
        "onnx-int8: its `--quantize int8` twin).  ",
        f"Each cell: {args.warmup:g} s warm-up, then {args.duration:g} s measured; closed-loop clients (a bare asyncio "
        "HTTP/1.1 client on keep-alive connections sending pre-encoded requests, to take as little of the shared "
        "CPU as it can); random candidate ids per request. Client columns: from sending the request to the last "
        "byte of the answer. Server columns: the service's own `Server-Timing: app` (request read to response "
        "ready, as the ASGI app sees it: uvicorn's HTTP parsing and the socket are outside it).",
        "",
        md_table(["encoder", "micro-batching", "candidates", "concurrency", "client p50 (ms)", "client p95 (ms)",
                  "client p99 (ms)", "req/s", "errors", "server p50 (ms)", "server p99 (ms)", "client p50 / floor",
                  "server p50 / floor"], rows),
        "",
        "## Where the time goes (p50 of each span, ms; Server-Timing)",
        "",
        md_table(["encoder", "micro-batching", "candidates", "concurrency", "server", "parse (body, JSON, "
                  "validation)", "pool hand-off", "encode (query forward)", "score (fused, candidates)",
                  "serialize (JSON)", "client - server (HTTP, sockets, load generator)", "client CPU / request (ms)",
                  "server CPU / request (ms)"], split),
        "",
        "Spans are medians each, so they need not add up to the server's median; pool hand-off appears only when "
        "the request took the one-hop path (idle batcher); with batching the encode span includes waiting for "
        "the batch. CPU / request: CPU seconds of the process over the measured window divided by the requests "
        "answered (the server's includes its idle event loop).",
        "",
        "## Floors (in the benchmark process just before each server's cells, one query, no HTTP)",
        "",
        md_table(["encoder", "before the server with batching", "operation", "p50 (ms)", "p99 (ms)"],
                 [[f["encoder"], f["batching"], k, f"{v['p50_ms']:.2f}", f"{v['p99_ms']:.2f}"]
                  for f in floor_runs for k, v in f.items() if isinstance(v, dict)]),
        "",
        "p50 / floor: the service's p50 at concurrency 1 (client-side, and the server's own) over the bare "
        "query-tower forward's p50 measured just before that server (same encoder). In-process relevance minus the "
        "forward is the fused scoring of the "
        "candidates; service p50 minus in-process relevance is HTTP, JSON and validation.",
        "",
        "## Targets (issue 11)",
        "",
        md_table(["target", "measured", "verdict"], targets),
    ]
    payload = {**meta, "args": vars(args), "load_avg_start": load_start, "load_avg_end": load_end,
               "cells": cells, "floors": floor_runs, "targets": targets}
    path = write_results(args.out, args.stem, md, payload)
    print(f"results: {path}")


if __name__ == "__main__":
    main()
