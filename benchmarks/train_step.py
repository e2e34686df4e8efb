"""Where a training step's time goes: assembling the batch (data: sampler, hard negatives, inputs, masks) vs the
model (forward, loss, backward, gate hold, clipping, optimiser and scheduler steps), timed inside the trainer's own
step (``Trainer.training_step``).

The target (docs/TUNING.md, "Speed"): data loading is never the bottleneck, model time >= 90% of step time. Images
are decoded once into memory and frozen-tower features are cached, so the per-step data work is indexing and mask
building.

Run:  python benchmarks/train_step.py --steps 40 --out benchmarks/results
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import numpy as np  # noqa: E402

from querylife.report import md_table  # noqa: E402
from querylife.runinfo import command_line, machine_info  # noqa: E402
from querylife.train import Trainer  # noqa: E402

sys.path.insert(0, str(Path(__file__).parent))
from benchkit import demo_dataset, quiet_transformers, run_header, write_results  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--steps", type=int, default=40)
    parser.add_argument("--work", default="runs/bench_seeds")
    parser.add_argument("--out", default="benchmarks/results")
    parser.add_argument("--set", dest="overrides", action="append", default=[], help="config override")
    args = parser.parse_args()
    quiet_transformers()
    _, cfg, data = demo_dataset(Path(args.work) / "data", args.overrides)
    with tempfile.TemporaryDirectory() as tmp:
        trainer = Trainer(cfg, data, tmp, progress=False)
    trainer.model.train()
    data_t, model_t = [], []
    batches = trainer.batches.steps(10**9)  # epochs 0, 1, ... as training draws them
    for step in range(args.steps + 3):
        t0 = time.perf_counter()
        batch = next(batches)  # sampler + hard-negative draw
        drawn = time.perf_counter() - t0
        out = trainer.training_step(batch)  # the trainer's own step: masks, forward, loss, gate hold, schedule
        if step >= 3:  # warm-up steps excluded
            data_t.append(drawn + out.data_seconds + out.mask_seconds)
            model_t.append(out.model_seconds)
    d, m = float(np.sum(data_t)), float(np.sum(model_t))
    result = {
        "command": command_line(),
        "machine": machine_info(),
        "steps": len(data_t),
        "batch_size": cfg.train.batch_size,
        "hard_negatives": cfg.train.hard_negatives,
        "data_ms_per_step": 1000 * d / len(data_t),
        "model_ms_per_step": 1000 * m / len(model_t),
        "model_share": m / (d + m),
    }
    row = [
        result["steps"],
        result["batch_size"],
        f"{result['data_ms_per_step']:.1f}",
        f"{result['model_ms_per_step']:.1f}",
        f"{100 * result['model_share']:.1f}%",
    ]
    md = "\n".join(
        [
            "# Training step time split",
            "",
            *run_header(result),
            "",
            md_table(["steps", "batch", "data ms/step", "model ms/step", "model share"], [row]),
            "",
        ]
    )
    write_results(args.out, "train_step", md, result)
    print(md)


if __name__ == "__main__":
    main()
