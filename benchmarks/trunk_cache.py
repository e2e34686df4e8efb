"""What the frozen-trunk cache saves a partly trained EfficientNet-Lite: one step's forward + backward through the
vision tower, with the trunk's outputs cached (what training does) against the whole network at every step
(``model.tower.vision_trunk_cache_mb=0``), and the cache's bytes per image.

Run:  python benchmarks/trunk_cache.py --blocks 1 2 --batch 128 --steps 3
Writes trunk_cache.md and trunk_cache.json. Random photos (the time does not depend on the pixels); the cache is
filled before the timed steps, as after a run's first epoch.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import torch  # noqa: E402

from querylife.report import md_table  # noqa: E402
from querylife.runinfo import command_line, machine_info  # noqa: E402
from querylife.towers import TowerConfig, VisionTower  # noqa: E402

sys.path.insert(0, str(Path(__file__).parent))
from benchkit import run_header, write_results  # noqa: E402


def step_seconds(tower: VisionTower, images: torch.Tensor, steps: int) -> list[float]:
    """Seconds of each of ``steps`` forward + backward passes of ``tower`` over ``images``."""
    weights = torch.randn(len(images), tower.dim, generator=torch.Generator().manual_seed(0))
    times = []
    for _ in range(steps):
        tower.zero_grad()
        start = time.perf_counter()
        (tower(images) * weights).sum().backward()
        times.append(time.perf_counter() - start)
    return times


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="efficientnet-lite0")
    parser.add_argument("--blocks", type=int, nargs="+", default=[1, 2], help="train_vision_layers values")
    parser.add_argument("--batch", type=int, default=128, help="images a step (the demo's train.batch_size)")
    parser.add_argument("--steps", type=int, default=3)
    parser.add_argument("--out", default="benchmarks/results")
    args = parser.parse_args()
    images = torch.randint(0, 256, (args.batch, 3, 224, 224), generator=torch.Generator().manual_seed(0),
                           dtype=torch.uint8)
    rows = []
    for blocks in args.blocks:
        cfg = TowerConfig(vision_model=args.model, train_vision_layers=blocks)
        cached = VisionTower(cfg).train()
        plain = VisionTower(cfg.model_copy(update={"vision_trunk_cache_mb": 0})).train()
        with torch.no_grad():
            cached(images)  # fills the cache: a run's first epoch
        fast = step_seconds(cached, images, args.steps)
        slow = step_seconds(plain, images, args.steps)
        per_image = cached.trunk_bytes_per_image()
        rows.append({
            "train_vision_layers": blocks,
            "cached_step_s": statistics.median(fast),
            "uncached_step_s": statistics.median(slow),
            "speedup": statistics.median(slow) / statistics.median(fast),
            "bytes_per_image": per_image,
            "mib_per_3000_images": per_image * 3000 / 2**20,
        })
        print(rows[-1], flush=True)
    meta = {"command": command_line(), "machine": machine_info()}
    md = [
        "# Frozen-trunk cache of a partly trained EfficientNet-Lite",
        "",
        *run_header(meta),
        f"{args.model} at 224 px, one forward + backward of the vision tower over {args.batch} images, median of "
        f"{args.steps} steps, one thread on a shared machine (the ratio is the result, not the seconds).",
        "",
        md_table(
            ["trained blocks", "cached s / step", "uncached s / step", "speed-up", "bytes / image", "MiB / 3,000 img"],
            [[r["train_vision_layers"], f"{r['cached_step_s']:.2f}", f"{r['uncached_step_s']:.2f}",
              f"{r['speedup']:.1f}x", f"{r['bytes_per_image']:,}", f"{r['mib_per_3000_images']:.0f}"] for r in rows],
        ),
        "",
    ]
    write_results(args.out, "trunk_cache", md, {**meta, "args": vars(args), "rows": rows})
    print("\n".join(md))


if __name__ == "__main__":
    main()
