"""Training throughput of 1 vs N ranks at the same per-rank batch (distributed training, docs/SCALE.md).

Each configuration runs the trainer's own step (``Trainer.training_step``: the single-process step for 1 rank, the
DDP step with gathered negatives for N) on the demo storefront, each rank a process with one intra-op thread
(OMP_NUM_THREADS=1, ``torch.set_num_threads(1)``), gloo on loopback. Samples/s counts the pairs of the global batch
(N * per-rank batch) per second of wall time over the timed steps, after warm-up steps. The speedup target is
>= 1.7x for 2 ranks where the hardware has a free core (or GPU) per rank.

Run:  python benchmarks/ddp_throughput.py --ranks 1 2 --out benchmarks/results
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ["OMP_NUM_THREADS"] = "1"  # one thread per rank: ranks, not threads, use the cores

import numpy as np  # noqa: E402
import torch  # noqa: E402

from querylife.data.storefront import DemoConfig  # noqa: E402
from querylife.report import md_table  # noqa: E402
from querylife.runinfo import command_line, machine_info  # noqa: E402

sys.path.insert(0, str(Path(__file__).parent))
from benchkit import CNN_TOWER, demo_dataset, quiet_transformers, run_header, write_results  # noqa: E402


def _worker(rank: int, world: int, rendezvous: str, args: argparse.Namespace, out: str, joined: bool = True) -> None:
    """One rank of a ``world``-rank job (``joined``), or one of ``world`` independent single-process trainers."""
    import torch.distributed as dist

    from querylife.distributed import DistEnv
    from querylife.train import Trainer

    torch.set_num_threads(1)
    quiet_transformers()
    overrides = [*CNN_TOWER, f"train.batch_size={args.batch_size}", "train.device=cpu", *args.overrides]
    _, cfg, data = demo_dataset(Path(args.work) / "data", overrides, DemoConfig(n_products=args.products, seed=0))
    env = None
    if world > 1 and joined:
        dist.init_process_group("gloo", init_method=f"file://{rendezvous}", rank=rank, world_size=world)
        env = DistEnv(rank, world)
    with tempfile.TemporaryDirectory() as tmp:
        trainer = Trainer(cfg, data, tmp, progress=False, dist=env)
    trainer.model.train()
    batches = trainer.batches.steps(10**9)
    timed, data_s, mask_s, model_s = [], [], [], []
    samples, step, full = 0, 0, (world if joined else 1) * args.batch_size
    while len(timed) < args.steps:
        batch = next(batches)
        if env is not None:
            dist.barrier()  # every rank starts the step together: wall time is the slowest rank's
        t0 = time.perf_counter()
        out_step = trainer.training_step(batch)
        dt = time.perf_counter() - t0
        step += 1
        if step > args.warmup and batch.size == full:  # an epoch's last, smaller batches are not timed
            timed.append(dt)
            samples += batch.size
            data_s.append(out_step.data_seconds)
            mask_s.append(out_step.mask_seconds)
            model_s.append(out_step.model_seconds)
    if env is not None:
        dist.destroy_process_group()
    if rank == 0 or not joined:
        result = {
            "ranks": world,
            "mode": ("ddp" if joined else "independent") if world > 1 else "one process",
            "steps": len(timed),
            "global_batch": full,
            "samples_per_s": samples / sum(timed),
            "ms_per_step": 1000 * float(np.mean(timed)),
            "data_ms": 1000 * float(np.mean(data_s)),
            "mask_ms": 1000 * float(np.mean(mask_s)),
            "model_ms": 1000 * float(np.mean(model_s)),
        }
        Path(f"{out}.{rank}").write_text(json.dumps(result))


def run(world: int, args: argparse.Namespace, tmp: Path, *, joined: bool = True) -> dict:
    """One DDP job of ``world`` ranks (``joined``), or ``world`` independent one-process trainers at once: their
    summed samples/s is what the machine gives ``world`` parallel processes with no communication (the ceiling)."""
    import torch.multiprocessing as mp

    out = tmp / f"result_{world}_{joined}"
    if world == 1:
        _worker(0, 1, "", args, str(out))
    else:
        mp.spawn(_worker, args=(world, str(tmp / f"rendezvous_{world}"), args, str(out), joined), nprocs=world)
    if joined or world == 1:
        return json.loads(Path(f"{out}.0").read_text())
    parts = [json.loads(Path(f"{out}.{r}").read_text()) for r in range(world)]
    summed = {**parts[0], "samples_per_s": sum(p["samples_per_s"] for p in parts)}
    for key in ("ms_per_step", "data_ms", "mask_ms", "model_ms"):
        summed[key] = float(np.mean([p[key] for p in parts]))
    return summed


def _reading(rows: list[dict], cpus: int) -> list[str]:
    """How to read the table: DDP's speedup against the ceiling the machine gives the same number of processes."""
    out = [
        "Samples/s: pairs of the global batch per second of wall time, full batches only, after warm-up; one intra-op "
        "thread per rank, gloo on loopback. Speedup: against one process at the same per-rank batch. "
        "`independent`: the same number of one-process trainers at once with no communication at all: what this "
        "machine gives that many parallel processes, the ceiling of any data-parallel scheme on it. The machine may be "
        "shared with other work while this runs: the numbers are ratios within one run, not absolute targets.",
        "",
    ]
    ddp = {r["ranks"]: r for r in rows if r["mode"] == "ddp"}
    for r in rows:
        if r["mode"] == "independent" and r["ranks"] in ddp:
            d = ddp[r["ranks"]]
            out.append(
                f"- {r['ranks']} ranks: DDP {d['speedup']:.2f}x, ceiling {r['speedup']:.2f}x "
                f"({d['speedup'] / r['speedup']:.0%} of it) on {cpus} CPU cores."
            )
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--ranks", type=int, nargs="+", default=[1, 2])
    parser.add_argument("--batch-size", type=int, default=64, help="per rank")
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--warmup", type=int, default=3)
    parser.add_argument("--products", type=int, default=3000, help="demo storefront size")
    parser.add_argument(
        "--no-independent", action="store_true", help="skip the ceiling: N independent processes, no communication"
    )
    parser.add_argument("--work", default="runs/bench_ddp")
    parser.add_argument("--out", default="benchmarks/results")
    parser.add_argument("--set", dest="overrides", action="append", default=[], help="config override")
    args = parser.parse_args()
    quiet_transformers()
    demo_dataset(Path(args.work) / "data", [*CNN_TOWER, *args.overrides],
                 DemoConfig(n_products=args.products, seed=0))  # once
    with tempfile.TemporaryDirectory() as tmp:
        rows = [run(w, args, Path(tmp)) for w in args.ranks]
        if not args.no_independent:
            rows += [run(w, args, Path(tmp), joined=False) for w in args.ranks if w > 1]
    base = rows[0]["samples_per_s"]
    for r in rows:
        r["speedup"] = r["samples_per_s"] / base
    result = {
        "command": command_line(),
        "machine": machine_info(),
        "cpu_count": os.cpu_count(),
        "per_rank_batch": args.batch_size,
        "threads_per_rank": 1,
        "results": rows,
    }
    table = md_table(
        ["ranks", "mode", "batch / step", "samples/s", "speedup", "ms/step", "data ms", "mask ms", "model ms"],
        [
            [
                r["ranks"],
                r["mode"],
                r["global_batch"],
                f"{r['samples_per_s']:.1f}",
                f"{r['speedup']:.2f}x",
                f"{r['ms_per_step']:.1f}",
                f"{r['data_ms']:.1f}",
                f"{r['mask_ms']:.1f}",
                f"{r['model_ms']:.1f}",
            ]
            for r in rows
        ],
    )
    lines = ["# Distributed training throughput (1 vs N ranks, same per-rank batch)", "", *run_header(result), ""]
    lines += [table, "", *_reading(rows, os.cpu_count() or 1), ""]
    write_results(args.out, "ddp_throughput", lines, result)
    md = "\n".join(lines)
    print(md)


if __name__ == "__main__":
    main()
