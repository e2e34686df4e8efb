"""Peak memory and time of one training step vs batch size: the plain step vs the gradient-cache step
(``train.grad_cache_chunk``, querylife.gradcache).

The demo's tower setup: the small CNN vision tower trained from pixels, frozen all-MiniLM-L6-v2 text features cached
once. Each (batch size, step) is measured in a fresh subprocess: after set-up (data, model, cached text features) the
process's peak resident set is reset (``/proc/self/clear_refs``), one step runs, and the new peak minus the resident
set before the step is the step's memory (activations, gradients, optimiser state on the first step). So that the
resident set follows what torch holds, the child runs with ``MALLOC_MMAP_THRESHOLD_=65536`` (every tensor above
64 KiB is its own mapping, returned to the system when freed) and trims the heap before the step; otherwise memory
freed during set-up is reused by the step unseen, and the numbers are noise. Then
``--steps`` more steps are timed. The catalogue is a larger demo storefront (6,000 products, 3,000 queries), so
that a batch of 1,024 distinct queries exists.

Run:  python benchmarks/grad_cache_memory.py --out benchmarks/results
"""

from __future__ import annotations

import argparse
import ctypes
import gc
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import numpy as np  # noqa: E402

from querylife.data.storefront import DemoConfig  # noqa: E402
from querylife.report import md_table  # noqa: E402
from querylife.runinfo import command_line, machine_info  # noqa: E402

sys.path.insert(0, str(Path(__file__).parent))
from benchkit import CNN_TOWER, demo_dataset, quiet_transformers, run_header, write_results  # noqa: E402


def _status_kb(field: str) -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    raise RuntimeError(f"no {field} in /proc/self/status")


def measure(work: Path, demo: DemoConfig, batch: int, chunk: int, steps: int, overrides: list[str]) -> dict:
    """One configuration, in this (fresh) process: the first step's memory, then ``steps`` timed steps."""
    import torch

    from querylife.train import Trainer

    quiet_transformers()
    sets = [*CNN_TOWER, *overrides, f"train.batch_size={batch}", f"train.grad_cache_chunk={chunk}", "train.device=cpu"]
    _, cfg, data = demo_dataset(work / "data", sets, demo)
    with tempfile.TemporaryDirectory() as tmp:
        trainer = Trainer(cfg, data, tmp, progress=False)
    trainer.model.train()
    batches = trainer.batches.steps(10**6)
    first = next(batches)
    gc.collect()
    ctypes.CDLL("libc.so.6").malloc_trim(0)  # hand freed heap pages back, so the step's peak is its own
    before = _status_kb("VmRSS")
    Path("/proc/self/clear_refs").write_text("5")  # reset the peak resident set (VmHWM) to the current one
    out = trainer.training_step(first)
    peak = _status_kb("VmHWM")
    seconds = []
    for _ in range(steps):
        b = next(batches)
        t0 = time.perf_counter()
        trainer.training_step(b)
        seconds.append(time.perf_counter() - t0)
    return {
        "batch": batch,
        "chunk": chunk,
        "rows": out.rows,
        "columns": out.columns,
        "step_peak_mib": (peak - before) / 1024,
        "rss_before_mib": before / 1024,
        "seconds_per_step": float(np.mean(seconds)),
        "seconds_std": float(np.std(seconds, ddof=1)) if len(seconds) > 1 else 0.0,
        "loss": out.total,
        "torch_threads": torch.get_num_threads(),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--batches", type=int, nargs="+", default=[64, 128, 256, 512, 1024])
    parser.add_argument("--chunk", type=int, default=64, help="gradient-cache sub-batch (pairs)")
    parser.add_argument("--steps", type=int, default=3, help="timed steps after the measured first one")
    parser.add_argument("--work", default="runs/bench_gradcache")
    parser.add_argument("--out", default="benchmarks/results")
    parser.add_argument("--name", default="grad_cache_memory")
    parser.add_argument("--products", type=int, default=6000, help="demo catalogue size")
    parser.add_argument("--queries", type=int, default=3000, help="demo queries (a batch needs distinct ones)")
    parser.add_argument("--set", dest="overrides", action="append", default=[], help="config override")
    parser.add_argument("--child", nargs=2, type=int, metavar=("BATCH", "CHUNK"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    work = Path(args.work)
    demo = DemoConfig(n_products=args.products, n_queries=args.queries)
    if args.child:
        print("RESULT " + json.dumps(measure(work, demo, *args.child, args.steps, args.overrides)))
        return
    quiet_transformers()
    demo_dataset(work / "data", [*CNN_TOWER, *args.overrides], demo)  # generated once, before the children read it
    rows = []
    for batch in args.batches:
        for chunk in (0, args.chunk):
            cmd = [sys.executable, __file__, "--child", str(batch), str(chunk), "--steps", str(args.steps)]
            cmd += ["--work", str(work), "--products", str(args.products), "--queries", str(args.queries)]
            cmd += [f"--set={o}" for o in args.overrides]
            env = {**os.environ, "MALLOC_MMAP_THRESHOLD_": "65536"}  # big tensors: own mappings, freed when freed
            proc = subprocess.run(cmd, capture_output=True, text=True, check=False, env=env)
            line = [x for x in proc.stdout.splitlines() if x.startswith("RESULT ")]
            if proc.returncode or not line:
                raise RuntimeError(f"measurement batch={batch} chunk={chunk} failed:\n{proc.stderr[-3000:]}")
            rows.append(json.loads(line[-1][len("RESULT ") :]))
            r = rows[-1]
            print(f"batch {batch} chunk {chunk}: {r['step_peak_mib']:.0f} MiB, {r['seconds_per_step']:.2f} s/step")
    result = {
        "command": command_line(),
        "machine": machine_info(),
        "demo": {"n_products": demo.n_products, "n_queries": demo.n_queries},
        "overrides": args.overrides,
        "chunk": args.chunk,
        "rows": rows,
    }
    by = {(r["batch"], r["chunk"]): r for r in rows}
    table = []
    for batch in args.batches:
        p, c = by[(batch, 0)], by[(batch, args.chunk)]
        table.append(
            [
                batch,
                f"{p['step_peak_mib']:.0f}",
                f"{c['step_peak_mib']:.0f}",
                f"{p['step_peak_mib'] / max(c['step_peak_mib'], 1e-9):.1f}x",
                f"{p['seconds_per_step']:.2f} ± {p['seconds_std']:.2f}",
                f"{c['seconds_per_step']:.2f} ± {c['seconds_std']:.2f}",
                f"{c['seconds_per_step'] / p['seconds_per_step']:.2f}x",
            ]
        )
    md = [
        "# Gradient cache: step memory and time vs batch size",
        "",
        *run_header(result),
        "",
        f"Small CNN trained from 64 px pixels, frozen all-MiniLM-L6-v2 features cached; demo storefront with "
        f"{demo.n_products} products and {demo.n_queries} queries; gradient-cache sub-batch {args.chunk} pairs. "
        "Memory: the first step's peak resident set above the resident set before it (fresh process per cell). "
        f"Time: mean ± std of {args.steps} later steps, OMP_NUM_THREADS=1, on a machine shared with other jobs "
        "(compare the columns of one run, not absolute numbers).",
        "",
        md_table(
            ["batch", "plain MiB", "grad-cache MiB", "plain / cache", "plain s/step", "cache s/step", "cache / plain"],
            table,
        ),
        "",
    ]
    write_results(args.out, args.name, md, result)
    print("\n".join(md))


if __name__ == "__main__":
    main()
