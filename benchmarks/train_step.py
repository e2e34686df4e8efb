"""Where a training step's time goes: assembling the batch (data: sampler, hard negatives, inputs, masks) vs the
model (forward, loss, backward, gate hold, clipping, optimiser and scheduler steps), timed inside the trainer's own
step (``Trainer.training_step``).

The target (docs/TUNING.md, "Speed"): data loading is never the bottleneck, model time >= 90% of step time. Images
are decoded once into memory and frozen-tower features are cached, so the per-step data work is indexing and mask
building.

``--versus-dual-encoder``: the full Query-LIFE step (query-type gate, all four loss terms, the batch masks and the
GenFilt ``duplicate_title`` judge's mask) as a ratio to a plain dual-encoder step on the same towers and batches (the
trainer's step with one fused vector per product: ``mean`` fusion, the query-fused InfoNCE term only, no masks, no
judge). Both are ``Trainer.training_step`` (data, masks, forward, loss, backward, update), timed round-robin batch by
batch so that machine noise hits both alike; the median step time of each. Target: <= 1.10x.

Run:  python benchmarks/train_step.py --steps 40 --out benchmarks/results
      python benchmarks/train_step.py --versus-dual-encoder --steps 40 --out benchmarks/results
"""

from __future__ import annotations

import argparse
import itertools
import os
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import numpy as np  # noqa: E402

from querylife.config import with_overrides  # noqa: E402
from querylife.genfilt.training import build_negative_mask_fn  # noqa: E402
from querylife.report import md_table  # noqa: E402
from querylife.runinfo import command_line, machine_info  # noqa: E402
from querylife.scoring import FeatureCache  # noqa: E402
from querylife.towers import frozen_text_towers  # noqa: E402
from querylife.train import Trainer  # noqa: E402

sys.path.insert(0, str(Path(__file__).parent))
from benchkit import CNN_TOWER, demo_dataset, quiet_transformers, run_header, write_results  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--steps", type=int, default=40)
    parser.add_argument("--work", default="runs/bench_seeds")
    parser.add_argument("--out", default="benchmarks/results")
    parser.add_argument("--set", dest="overrides", action="append", default=[], help="config override")
    parser.add_argument("--versus-dual-encoder", action="store_true", help="Query-LIFE step / dual-encoder step")
    parser.add_argument("--profile", action="store_true", help="with --versus-dual-encoder: torch.profiler tables")
    args = parser.parse_args()
    quiet_transformers()
    _, cfg, data = demo_dataset(Path(args.work) / "data", [*CNN_TOWER, *args.overrides])
    if args.versus_dual_encoder:
        versus_dual_encoder(cfg, data, args)
        return
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


#: The plain dual-encoder (CLIP-style) step as trainer settings: one query-independent fused vector per product, the
#: symmetric InfoNCE between queries and it, no auxiliary terms, no masks, no judge.
DUAL_ENCODER = {
    "model.fusion.mode": "mean",
    "loss.query_title": 0.0,
    "loss.query_image": 0.0,
    "loss.title_image": 0.0,
    "loss.mask_same_product": False,
    "loss.mask_labelled_positives": False,
    "loss.mask_same_group": False,
    "train.false_negative_judge": "none",
}


def versus_dual_encoder(cfg, data, args) -> None:
    """The full Query-LIFE step as a ratio to the dual-encoder step, on the same towers and batches."""
    full_cfg = with_overrides(cfg, {"train.false_negative_judge": "duplicate_title"})
    dual_cfg = with_overrides(cfg, DUAL_ENCODER)
    towers, cache = frozen_text_towers(cfg.model.tower), FeatureCache()  # one frozen text tower, features once
    tmp = tempfile.mkdtemp(prefix="train_step-")
    judge = build_negative_mask_fn(full_cfg, data, towers[0] if towers else None)
    trainers = {
        "query_life": Trainer(
            full_cfg, data, f"{tmp}/ql", cache=cache, towers=towers, negative_mask_fn=judge, progress=False
        ),
        "dual_encoder": Trainer(dual_cfg, data, f"{tmp}/de", cache=cache, towers=towers, progress=False),
    }
    for t in trainers.values():
        t.model.train()
    full = (b for b in trainers["dual_encoder"].batches.steps(10**6) if b.size == cfg.train.batch_size)
    batches = list(itertools.islice(full, args.steps + 3))  # full batches, as training draws them (lazily)
    times: dict[str, list[float]] = {k: [] for k in trainers}
    parts: dict[str, list[tuple[float, float, float]]] = {k: [] for k in trainers}
    for i, batch in enumerate(batches):
        for name, trainer in trainers.items():  # round-robin: both see the same batch back to back
            out = trainer.training_step(batch)
            if i >= 3:  # warm-up steps excluded
                times[name].append(out.data_seconds + out.mask_seconds + out.model_seconds)
                parts[name].append((out.data_seconds, out.mask_seconds, out.model_seconds))
    med = {k: 1000 * float(np.median(v)) for k, v in times.items()}
    split = {k: [1000 * float(np.median([p[j] for p in v])) for j in range(3)] for k, v in parts.items()}
    ratio = med["query_life"] / med["dual_encoder"]
    result = {
        "command": command_line(),
        "machine": machine_info(),
        "steps": len(times["query_life"]),
        "batch_size": cfg.train.batch_size,
        "dual_encoder_overrides": DUAL_ENCODER,
        "query_life_judge": "duplicate_title",
        "ms_per_step": med,
        "ms_split_data_mask_model": split,
        "ratio": ratio,
        "target": 1.10,
    }
    rows = [
        [k, f"{med[k]:.1f}", *(f"{x:.1f}" for x in split[k]), f"{med[k] / med['dual_encoder']:.3f}x"] for k in trainers
    ]
    md = [
        "# The full Query-LIFE step vs a plain dual-encoder step",
        "",
        *run_header(result),
        "",
        "Same towers (frozen all-MiniLM-L6-v2 features cached, small CNN trained) and the same batches, both timed "
        "in `Trainer.training_step`, round-robin; medians over the steps; OMP_NUM_THREADS=1 on a machine shared "
        "with other jobs (the ratio is what was measured, not the absolute times). Query-LIFE: query-type gate, "
        "four loss terms, batch masks, GenFilt duplicate_title judge. Dual encoder: "
        + ", ".join(f"{k}={v}" for k, v in DUAL_ENCODER.items())
        + ".",
        "",
        md_table(["step", "ms/step", "data ms", "mask ms", "model ms", "ratio"], rows),
        "",
        f"Ratio {ratio:.3f}x (target <= 1.10x).",
        "",
    ]
    if args.profile:
        from torch.profiler import ProfilerActivity, profile

        for name, trainer in trainers.items():
            with profile(activities=[ProfilerActivity.CPU]) as prof:
                for batch in batches[3:8]:
                    trainer.training_step(batch)
            table = prof.key_averages().table(sort_by="self_cpu_time_total", row_limit=15)
            md += [f"## Profile: {name} (5 steps, by self CPU time)", "", "```", table, "```", ""]
    write_results(args.out, "train_step_vs_dual_encoder", md, result)
    print("\n".join(md))


if __name__ == "__main__":
    main()
