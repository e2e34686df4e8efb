"""Embedding store throughput against its floors, and its peak memory at two catalogue sizes (serving issue).

Model: an untrained checkpoint with the default towers (all-MiniLM-L6-v2 text tower, frozen; the small CNN vision
tower) and the demo storefront's product types. Throughput does not depend on the weights' values, so no training
is needed; the checkpoint is written once into ``--work``.

Throughput, on the demo storefront's catalogue (3,000 products, 64 px photos), round-robin per repeat so that
machine noise hits every variant alike:

* store: ``querylife.store.embed_catalogue`` into a fresh store (catalogue rows in batches, images decoded per
  batch, input hashes, towers, heads, index vectors, Parquet shards + manifest);
* bare forward: only the towers (``model.text_tower`` on each batch's distinct texts, ``model.image_features`` on
  its images, decoded beforehand and not timed) on the same batches: the floor. Target: store / bare >= 0.9;
* the store batches each shard longest text first (``length_sorted``, by token count; sentence-transformers sorts
  by characters); the
  bare-forward floors keep catalogue order, and "store (text only, catalogue order)" shows what the sort gains;
* text only: the same catalogue without images, store against the text tower alone and against
  sentence-transformers ``encode`` of the same MiniLM (same batch size, ``max_seq_length`` = the tower's
  ``max_text_length``). Target: store / sentence-transformers >= 1.0.

Peak memory: ``embed_catalogue`` in a fresh process per catalogue size (the demo catalogue repeated with new ids
and titles), peak RSS above the RSS before the run (sampled every 5 ms; one batch is encoded before, so that the
towers' first-call allocations are not counted) and tracemalloc's peak (Python objects).

Run:  python benchmarks/embed_throughput.py --out benchmarks/results
Smoke: python benchmarks/embed_throughput.py --products 300 --memory-sizes 300 600 --repeats 1 --out /tmp/emb
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

import pandas as pd  # noqa: E402
import torch  # noqa: E402

from querylife.report import md_table  # noqa: E402
from querylife.runinfo import command_line, machine_info  # noqa: E402

sys.path.insert(0, str(Path(__file__).parent))
from benchkit import mean_std, quiet_transformers, run_header, write_results  # noqa: E402


def demo_catalog(work: Path) -> Path:
    from querylife.data.storefront import DemoConfig, generate_demo

    return Path(generate_demo(work / "data", DemoConfig(), progress=False).catalog_path)


def scaled_catalog(base: Path, n: int, *, images: bool = True) -> Path:
    """The catalogue ``base`` repeated (new ids, titles suffixed with the copy number) or cut to ``n`` rows,
    written beside it (image paths are relative to the catalogue's folder)."""
    table = pd.read_parquet(base)
    copies = []
    for k in range(-(-n // len(table))):
        part = table.copy()
        if k:
            part["product_id"] = part["product_id"] + f"~{k}"
            part["title"] = part["title"] + f" (edition {k})"
        copies.append(part)
    out = pd.concat(copies, ignore_index=True).iloc[:n]
    if not images:
        out = out.drop(columns=["image_path"])
    path = base.with_name(f"catalog_{n}{'' if images else '_text'}.parquet")
    out.to_parquet(path, index=False)
    return path


def catalogue_of(path: Path):
    from querylife.config import load_config
    from querylife.encode import load_catalogue

    return load_catalogue(load_config(None, [f"data.catalog={path}"]).data)


def make_checkpoint(work: Path, catalog: Path) -> Path:
    from querylife.model import ModelConfig, QueryLifeModel
    from querylife.towers import TowerConfig

    ckpt = work / "checkpoint"
    if not (ckpt / "config.json").exists():
        torch.manual_seed(0)
        types = sorted(pd.read_parquet(catalog, columns=["product_type"])["product_type"].str.lower().unique())
        cnn = TowerConfig(vision_model="small_cnn")  # the tower these figures were recorded with: benchkit.CNN_TOWER
        QueryLifeModel(ModelConfig(product_types=types, tower=cnn)).save_pretrained(ckpt)
    return ckpt


def rss_bytes() -> int:
    with open("/proc/self/statm") as fh:
        return int(fh.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


# ---- timed variants ---------------------------------------------------------------------------------------
def time_store(ckpt: Path, model, catalogue, batch_size: int, shard_size: int, length_sorted: bool = True) -> float:
    from querylife.store import embed_catalogue

    out = Path(tempfile.mkdtemp(prefix="embed-bench-"))
    shutil.rmtree(out)
    try:
        t0 = time.perf_counter()
        embed_catalogue(ckpt, catalogue, out, batch_size=batch_size, shard_size=shard_size, model=model,
                        progress=False, length_sorted=length_sorted)
        return time.perf_counter() - t0
    finally:
        shutil.rmtree(out, ignore_errors=True)


def predecoded_batches(model, catalogue, batch_size: int) -> list[tuple[list[str], torch.Tensor, torch.Tensor]]:
    """The store's batches (catalogue order, ``batch_size`` rows): distinct texts and decoded images."""
    from querylife.data.images import load_images
    from querylife.encode import image_size_of

    size = image_size_of(model)
    paths = catalogue.image_paths
    batches = []
    for start in range(0, len(catalogue), batch_size):
        rows = range(start, min(start + batch_size, len(catalogue)))
        texts = list(dict.fromkeys(catalogue.texts[r] for r in rows))  # the store's feature cache dedupes too
        sub = [paths[r] for r in rows]
        if any(sub):
            images, has = load_images(sub, size)
        else:
            images, has = torch.zeros(len(sub), 3, size, size, dtype=torch.uint8), torch.zeros(len(sub), dtype=bool)
        batches.append((texts, images, has))
    return batches


@torch.no_grad()
def time_bare(model, batches, *, images: bool) -> float:
    t0 = time.perf_counter()
    for texts, imgs, has in batches:
        model.text_tower(texts)  # (b, 384)
        if images:
            model.image_features(imgs, has)  # (b, d_v); rows without an image skip the tower, as in the store
    return time.perf_counter() - t0


def time_st(st_model, texts: list[str], batch_size: int) -> float:
    t0 = time.perf_counter()
    st_model.encode(texts, batch_size=batch_size, convert_to_tensor=True, show_progress_bar=False)
    return time.perf_counter() - t0


# ---- memory worker ----------------------------------------------------------------------------------------
def memory_worker(args) -> None:
    """Runs in its own process: one embed of ``--catalog``, peak RSS above the start and tracemalloc's peak."""
    import tracemalloc

    from querylife.model import QueryLifeModel
    from querylife.store import embed_catalogue

    torch.set_num_threads(args.threads)
    quiet_transformers()
    model = QueryLifeModel.from_pretrained(args.checkpoint)
    catalogue = catalogue_of(Path(args.catalog))
    # One batch first, not measured: the towers' first-call allocations (thread pools, buffers) are the same at
    # any catalogue size and would hide what grows with it.
    from querylife.encode import iter_product_batches

    next(iter_product_batches(model, catalogue, batch_size=args.batch_size))
    out = Path(tempfile.mkdtemp(prefix="embed-mem-"))
    shutil.rmtree(out)
    peak = [rss_bytes()]
    base = peak[0]
    done = threading.Event()

    def sample() -> None:
        while not done.is_set():
            peak[0] = max(peak[0], rss_bytes())
            time.sleep(0.005)

    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    tracemalloc.start()
    t0 = time.perf_counter()
    try:
        embed_catalogue(args.checkpoint, catalogue, out, batch_size=args.batch_size, shard_size=args.shard_size,
                        model=model, progress=False)
    finally:
        seconds = time.perf_counter() - t0
        _, py_peak = tracemalloc.get_traced_memory()
        tracemalloc.stop()
        done.set()
        sampler.join()
        shutil.rmtree(out, ignore_errors=True)
    print(json.dumps({"products": len(catalogue), "seconds": seconds, "rss_start_mb": base / 2**20,
                      "rss_peak_mb": peak[0] / 2**20, "rss_growth_mb": (peak[0] - base) / 2**20,
                      "tracemalloc_peak_mb": py_peak / 2**20}))


def run_memory(script: Path, ckpt: Path, catalog: Path, args) -> dict:
    cmd = [sys.executable, str(script), "--worker-memory", "--checkpoint", str(ckpt), "--catalog", str(catalog),
           "--batch-size", str(args.batch_size), "--shard-size", str(args.shard_size), "--threads",
           str(args.threads)]
    done = subprocess.run(cmd, capture_output=True, text=True, check=False)
    if done.returncode != 0:
        raise RuntimeError(f"memory worker failed:\n{done.stderr[-3000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def throughput(args, ckpt: Path, model, base: Path) -> tuple[dict, dict, dict]:
    """Round-robin timings of the five variants; products/s and per-repeat ratios (mean ± std)."""
    from sentence_transformers import SentenceTransformer

    from querylife.towers import bundled_minilm_path

    n = args.products
    cat_img = catalogue_of(scaled_catalog(base, args.products))
    cat_txt = catalogue_of(scaled_catalog(base, args.products, images=False))
    batches_img = predecoded_batches(model, cat_img, args.batch_size)
    batches_txt = [(t, i, h) for t, i, h in predecoded_batches(model, cat_txt, args.batch_size)]
    st = SentenceTransformer(str(bundled_minilm_path()), device="cpu")
    st.max_seq_length = model.text_tower.max_length  # the same truncation as the tower

    variants = {
        "store (text + images)": lambda: time_store(ckpt, model, cat_img, args.batch_size, args.shard_size),
        "bare towers (text + images)": lambda: time_bare(model, batches_img, images=True),
        "store (text only)": lambda: time_store(ckpt, model, cat_txt, args.batch_size, args.shard_size),
        "store (text only, catalogue order)": lambda: time_store(ckpt, model, cat_txt, args.batch_size,
                                                                 args.shard_size, length_sorted=False),
        "bare text tower": lambda: time_bare(model, batches_txt, images=False),
        "sentence-transformers encode": lambda: time_st(st, cat_txt.texts, args.batch_size),
    }
    for fn in variants.values():  # warm-up: lazy imports, allocator, first-call costs
        fn()
    times: dict[str, list[float]] = {k: [] for k in variants}
    for r in range(args.repeats):
        for name, fn in variants.items():
            times[name].append(fn())
            print(f"repeat {r + 1}: {name}: {n / times[name][-1]:.0f} products/s", flush=True)
    rate = {k: mean_std([n / t for t in v]) for k, v in times.items()}
    # Ratios per repeat (the variants of one repeat ran back to back), then mean ± std over repeats.
    ratios = {
        "store / bare towers (target >= 0.9)": mean_std(
            [b / s for s, b in zip(times["store (text + images)"], times["bare towers (text + images)"], strict=True)]
        ),
        "store / bare text tower, text only": mean_std(
            [b / s for s, b in zip(times["store (text only)"], times["bare text tower"], strict=True)]
        ),
        "store / sentence-transformers, text only (target >= 1.0)": mean_std(
            [b / s for s, b in zip(times["store (text only)"], times["sentence-transformers encode"], strict=True)]
        ),
        "store length-sorted / catalogue order, text only": mean_std(
            [b / s for s, b in zip(times["store (text only)"], times["store (text only, catalogue order)"],
                                   strict=True)]
        ),
    }
    for k, v in ratios.items():
        print(f"{k}: {v['mean']:.3f} ± {v['std']:.3f}")
    return times, rate, ratios


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--products", type=int, default=3000, help="catalogue size for the throughput runs")
    parser.add_argument("--memory-sizes", type=int, nargs=2, default=[5000, 20000])
    parser.add_argument("--batch-size", type=int, default=256, help="the store's default")
    parser.add_argument("--shard-size", type=int, default=10_000, help="the store's default")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--threads", type=int, default=1, help="torch intra-op threads (same for every variant)")
    parser.add_argument("--work", default="runs/bench_embed")
    parser.add_argument("--out", default="benchmarks/results")
    parser.add_argument("--stem", default="embed_throughput")
    parser.add_argument("--memory-only", action="store_true", help="only the peak-memory runs")
    parser.add_argument("--worker-memory", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--checkpoint", help=argparse.SUPPRESS)
    parser.add_argument("--catalog", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker_memory:
        memory_worker(args)
        return

    from querylife.model import QueryLifeModel

    quiet_transformers()
    torch.set_num_threads(args.threads)
    load_start = os.getloadavg()
    work = Path(args.work)
    base = demo_catalog(work)
    ckpt = make_checkpoint(work, base)
    model = QueryLifeModel.from_pretrained(ckpt)
    times: dict[str, list[float]] = {}
    rate: dict[str, dict[str, float]] = {}
    ratios: dict[str, dict[str, float]] = {}
    n = args.products
    if not args.memory_only:
        times, rate, ratios = throughput(args, ckpt, model, base)
    memory = []
    for size in args.memory_sizes:
        row = run_memory(Path(__file__).resolve(), ckpt, scaled_catalog(base, size), args)
        memory.append(row)
        print(f"memory at {size} products: RSS growth {row['rss_growth_mb']:.1f} MB, tracemalloc peak "
              f"{row['tracemalloc_peak_mb']:.1f} MB", flush=True)
    load_end = os.getloadavg()

    meta = {"command": command_line(), "machine": machine_info(["sentence-transformers", "pyarrow"])}
    small, large = memory
    md = [
        "# Embedding store: throughput against the bare towers and sentence-transformers, peak memory",
        "",
        *run_header(meta),
        f"Load average (1 min) at start / end: {load_start[0]:.2f} / {load_end[0]:.2f} (2 cores shared with other "
        "jobs: absolute rates are noisy, the ratios of back-to-back runs less so)  ",
        f"Model: untrained checkpoint (all-MiniLM-L6-v2 frozen text tower, small CNN vision tower, embed_dim "
        f"{model.config.embed_dim}); torch threads {args.threads}; batch size {args.batch_size}; shard size "
        f"{args.shard_size}; {args.repeats} repeats (mean ± std), after one warm-up pass.",
        "",
        *([] if args.memory_only else [
            f"## Throughput ({n:,} products of the demo storefront)",
            "",
            md_table(["variant", "products / s"], [[k, f"{v['mean']:.0f} ± {v['std']:.0f}"] for k, v in rate.items()]),
            "",
            md_table(["ratio of throughputs", "value"],
                     [[k, f"{v['mean']:.3f} ± {v['std']:.3f}"] for k, v in ratios.items()]),
            "",
        ]),
        "## Peak memory of one `embed` run (fresh process per size)",
        "",
        md_table(["products", "seconds", "RSS before (MB)", "RSS peak (MB)", "RSS growth (MB)",
                  "tracemalloc peak (MB)"],
                 [[f"{m['products']:,}", f"{m['seconds']:.1f}", f"{m['rss_start_mb']:.0f}", f"{m['rss_peak_mb']:.0f}",
                   f"{m['rss_growth_mb']:.1f}", f"{m['tracemalloc_peak_mb']:.1f}"] for m in memory]),
        "",
        f"Growth at {large['products']:,} vs {small['products']:,} products: RSS "
        f"{large['rss_growth_mb'] / max(small['rss_growth_mb'], 1e-9):.2f}x, tracemalloc "
        f"{large['tracemalloc_peak_mb'] / max(small['tracemalloc_peak_mb'], 1e-9):.2f}x for "
        f"{large['products'] / small['products']:.1f}x the products. `embed` holds up to --shard-size "
        f"({args.shard_size:,}) products' vectors before it writes a shard, so peak memory can grow with the "
        "catalogue up to that size and should stay flat past it (compare sizes on the same side of it).",
        *(["", "A ratio above 1 for store / bare towers is machine noise (the variants of a repeat run one after "
             "the other on a shared machine), not a store faster than its own towers."]
          if any(v["mean"] > 1 for k, v in ratios.items() if k.startswith("store / bare")) else []),
    ]
    payload = {**meta, "args": vars(args), "load_avg_start": load_start, "load_avg_end": load_end,
               "seconds": times, "products_per_s": rate, "ratios": ratios, "memory": memory}
    path = write_results(args.out, args.stem, md, payload)
    print(f"results: {path}")


if __name__ == "__main__":
    main()
