"""Where a training step's time goes: assembling the batch (data) vs the model (forward, backward, update).

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
import torch  # noqa: E402

from querylife.losses import alignment_loss  # noqa: E402
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
    model = trainer.model.train()
    tc = cfg.train
    optimizer = torch.optim.AdamW(
        model.parameter_groups(tc.lr, tc.weight_decay, tc.gate_lr_multiplier)
    )
    data_t, model_t = [], []
    step = 0
    while step < args.steps + 3:
        trainer.sampler.set_epoch(step)
        for batch in trainer.sampler:
            t0 = time.perf_counter()
            rows = trainer.product_rows(batch, 0, step)
            mask = trainer.negative_mask(batch, rows)
            same = torch.from_numpy(rows[:, None] == rows[None, :])
            inputs = trainer.batch_inputs(batch, rows)
            t1 = time.perf_counter()
            out = model(**inputs)
            loss = alignment_loss(out.sims, cfg.loss, out.logit_scale, out.logit_bias, mask, same)
            optimizer.zero_grad(set_to_none=True)
            loss.total.backward()
            optimizer.step()
            t2 = time.perf_counter()
            if step >= 3:  # warm-up steps excluded
                data_t.append(t1 - t0)
                model_t.append(t2 - t1)
            step += 1
            if step >= args.steps + 3:
                break
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
