"""``querylife embed`` in one process against ``embed --ray`` with N workers on a local Ray instance (scale issue).

Model: an untrained checkpoint with the default towers (all-MiniLM-L6-v2 frozen text tower, small CNN vision tower;
throughput does not depend on the weights' values), written once into ``--work``. Catalogue: the demo storefront's
(3,000 products, 64 px photos), or the first ``--products`` of it repeated.

Timed, round-robin per repeat, each into a fresh store:

* single: ``embed_catalogue`` in this process (model loaded beforehand, not timed; torch threads ``--threads``);
* ray: ``embed_catalogue_ray`` with ``--workers`` actors (1 CPU each) on a Ray instance started once beforehand:
  the time includes starting the actor pool and each actor's model load, which a run always pays.

Every Ray store is checked to equal the single-process store (shard sha256 in the manifests). The Ray start itself
(``ray.init``) is measured once and reported apart. On a machine with fewer free cores than workers the Ray run
cannot be faster: the numbers say what the overhead is, not what a cluster gives.

Run:  python benchmarks/ray_jobs.py --out benchmarks/results
Smoke: python benchmarks/ray_jobs.py --products 300 --shard-size 100 --repeats 1 --out /tmp/rayb
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

import torch  # noqa: E402

from querylife.report import md_table  # noqa: E402
from querylife.runinfo import command_line, machine_info  # noqa: E402

sys.path.insert(0, str(Path(__file__).parent))
from benchkit import mean_std, quiet_transformers, run_header, write_results  # noqa: E402
from embed_throughput import catalogue_of, demo_catalog, make_checkpoint, scaled_catalog  # noqa: E402


def shard_hashes(store: Path) -> list[str]:
    return [e["sha256"] for e in json.loads((store / "manifest.json").read_text())["shards"]]


def timed(run) -> tuple[float, list[str]]:
    out = Path(tempfile.mkdtemp(prefix="ray-bench-"))
    shutil.rmtree(out)
    try:
        t0 = time.perf_counter()
        run(out)
        return time.perf_counter() - t0, shard_hashes(out)
    finally:
        shutil.rmtree(out, ignore_errors=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--products", type=int, default=3000, help="catalogue size")
    parser.add_argument("--batch-size", type=int, default=256, help="the store's default")
    parser.add_argument("--shard-size", type=int, default=512, help="small enough to give every worker shards")
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--threads", type=int, default=1, help="torch threads of the single process (Ray actors: 1)")
    parser.add_argument("--work", default="runs/bench_embed")
    parser.add_argument("--out", default="benchmarks/results")
    parser.add_argument("--stem", default="ray_jobs")
    args = parser.parse_args()

    import ray

    from querylife.model import QueryLifeModel
    from querylife.ray_jobs import RayOptions, embed_catalogue_ray
    from querylife.store import embed_catalogue

    quiet_transformers()
    torch.set_num_threads(args.threads)
    load_start = os.getloadavg()
    work = Path(args.work)
    base = demo_catalog(work)
    catalog = base if args.products == 3000 else scaled_catalog(base, args.products)
    ckpt = make_checkpoint(work, base)
    model = QueryLifeModel.from_pretrained(ckpt)
    catalogue = catalogue_of(catalog)
    t0 = time.perf_counter()
    ray.init(num_cpus=args.workers, include_dashboard=False, log_to_driver=False)
    ray_start = time.perf_counter() - t0
    common = {"batch_size": args.batch_size, "shard_size": args.shard_size, "progress": False}
    variants = {
        "single process": lambda out: embed_catalogue(ckpt, catalogue, out, model=model, **common),
        f"ray, {args.workers} workers": lambda out: embed_catalogue_ray(
            ckpt, catalogue, out, RayOptions(workers=args.workers), model=model, **common),
    }
    times: dict[str, list[float]] = {k: [] for k in variants}
    reference: list[str] | None = None
    same = True
    try:
        for r in range(args.repeats):
            for name, run in variants.items():
                seconds, hashes = timed(run)
                reference = reference or hashes
                same = same and hashes == reference
                times[name].append(seconds)
                print(f"repeat {r + 1}: {name}: {seconds:.1f} s ({len(catalogue) / seconds:.0f} products/s)",
                      flush=True)
    finally:
        ray.shutdown()
    load_end = os.getloadavg()
    rate = {k: mean_std(len(catalogue) / t for t in v) for k, v in times.items()}
    single, on_ray = (mean_std(v)["mean"] for v in times.values())
    meta = {"command": command_line(), "machine": machine_info(["ray", "pyarrow"])}
    md = [
        "# `embed`: one process against Ray workers on one machine",
        "",
        *run_header(meta),
        f"Load average (1 min) at start / end: {load_start[0]:.2f} / {load_end[0]:.2f}. The machine has 2 cores "
        "shared with other jobs: absolute rates are noisy and say nothing about a cluster; read the ratio.  ",
        f"Catalogue: {len(catalogue):,} products of the demo storefront; untrained checkpoint (MiniLM frozen text "
        f"tower, small CNN); batch {args.batch_size}, shard size {args.shard_size}; single process with "
        f"{args.threads} torch thread(s), Ray actors 1 CPU each; {args.repeats} repeats (mean ± std).",
        "",
        md_table(["variant", "seconds", "products / s"],
                 [[k, f"{mean_std(times[k])['mean']:.1f} ± {mean_std(times[k])['std']:.1f}",
                   f"{v['mean']:.0f} ± {v['std']:.0f}"] for k, v in rate.items()]),
        "",
        f"Throughput ratio ray / single: {single / on_ray:.2f}x (times include the actor pool's start and one model "
        f"load per actor; `ray.init` of the local instance took {ray_start:.1f} s more, once per command).  ",
        f"Stores identical (shard sha256): {'yes' if same else 'NO'}.",
    ]
    payload = {**meta, "args": vars(args), "products": len(catalogue), "seconds": times, "rate": rate,
               "ray_init_seconds": ray_start, "ratio_ray_over_single": single / on_ray, "identical": same,
               "load_average": {"start": load_start, "end": load_end}}
    print(write_results(args.out, args.stem, md, payload))


if __name__ == "__main__":
    main()
