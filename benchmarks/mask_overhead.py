"""What a false-negative judge costs per training step, as a ratio to a step without it (GenFilt issue).

Every judge runs on the same batches of the default demo storefront, round-robin batch by batch (so machine
noise hits all of them alike), inside a full training step: batch assembly + judge mask + forward + loss +
backward + update, the trainer's own step (``Trainer.training_step``). Two passes over the same batches:

* cold: the first time a judge sees the batches (the guide encoder embeds titles / descriptions it has not seen);
* warm: the second time (what every epoch after the first costs: embeddings and answers are cached).

The description judges need descriptions, and no generative model runs offline here; timing does not depend on
what the descriptions say, so the benchmark uses a stand-in (``"{product type}: {title}"``, named in the output;
never a model's output). The generative judge's answers come from a stand-in rule during the cold pass and are
read from its answer cache in the warm pass ("with descriptions cached", as the issue asks).

Run:  python benchmarks/mask_overhead.py --batches 20 --out benchmarks/results
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import numpy as np  # noqa: E402

from querylife.config import with_overrides  # noqa: E402
from querylife.genfilt import DescriptionCache, products_from_catalog  # noqa: E402
from querylife.genfilt.training import (  # noqa: E402
    JudgeMask,
    build_judge,
    build_negative_mask_fn,
    labelled_negative_pairs,
)
from querylife.report import md_table  # noqa: E402
from querylife.runinfo import command_line, machine_info  # noqa: E402
from querylife.train import Trainer  # noqa: E402

sys.path.insert(0, str(Path(__file__).parent))
from benchkit import CNN_TOWER, demo_dataset, quiet_transformers, run_header, write_results  # noqa: E402

STAND_IN = "benchmark stand-in: '{product type}: {title}' (not a model)"


def stand_in_ask(query: str, product_text: str) -> bool:
    return len(query) % 2 == len(product_text) % 2  # any fixed rule: half yes, half no


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--batches", type=int, default=20)
    parser.add_argument("--work", default="runs/bench_seeds")
    parser.add_argument("--out", default="benchmarks/results")
    args = parser.parse_args()
    quiet_transformers()
    tmp = Path(tempfile.mkdtemp(prefix="mask_overhead-"))
    desc_path = tmp / "descriptions.jsonl"
    genfilt = [f"genfilt.cache={desc_path}", f"genfilt.answers={tmp / 'answers.jsonl'}"]
    _, cfg, data = demo_dataset(Path(args.work) / "data", [*CNN_TOWER, *genfilt, "genfilt.prefilter_margin=0.05"])
    items = products_from_catalog(data.catalog)
    DescriptionCache(desc_path).put_many([(it, f"{it.product_type}: {it.title}") for it in items], STAND_IN, "v1")

    trainer = Trainer(cfg, data, tmp / "run", progress=False)
    model = trainer.model.train()
    tc = cfg.train
    ids = data.catalog["product_id"].to_numpy()
    negatives = labelled_negative_pairs(data)

    def mask_fn(kind: str):
        if kind == "none":
            return None
        if kind == "generative":
            judge = build_judge(cfg, data, model.text_tower, kind="generative", ask=stand_in_ask)
            return JudgeMask(judge, ids, labelled_negatives=negatives)
        return build_negative_mask_fn(with_overrides(cfg, {"train.false_negative_judge": kind}), data, model.text_tower)

    kinds = ["none", "duplicate_title", "guide", "descriptions", "generative"]
    fns = {k: mask_fn(k) for k in kinds}
    batches = []
    epoch = 0
    while len(batches) < args.batches:  # full batches, as training draws them
        batches += [b for b in trainer.batches.epoch(epoch) if b.size == tc.batch_size][: args.batches - len(batches)]
        epoch += 1

    def step(batch, fn) -> tuple[float, float]:
        trainer.masks.judge = fn  # the judge is the only thing that changes between the timed steps
        out = trainer.training_step(batch)
        return out.data_seconds + out.mask_seconds + out.model_seconds, out.mask_seconds

    for batch in batches[:2]:  # warm-up (allocator, threads), not timed
        step(batch, None)
    times: dict[str, dict[str, list[float]]] = {p: {k: [] for k in kinds} for p in ("cold", "warm")}
    mask_times: dict[str, dict[str, list[float]]] = {p: {k: [] for k in kinds} for p in ("cold", "warm")}
    for phase in ("cold", "warm"):
        for batch in batches:
            for k in kinds:
                total, in_mask = step(batch, fns[k])
                times[phase][k].append(total)
                mask_times[phase][k].append(in_mask)
    masked = {k: (fns[k].masked if fns[k] is not None else 0) for k in kinds}

    res: dict[str, dict] = {}
    for k in kinds:
        res[k] = {}
        for phase in ("cold", "warm"):
            ms = 1000 * float(np.median(times[phase][k]))
            base = 1000 * float(np.median(times[phase]["none"]))
            res[k][phase] = {
                "ms_per_step": ms,
                "ratio_to_none": ms / base,
                "mask_ms_per_step": 1000 * float(np.median(mask_times[phase][k])),
            }
    result = {
        "command": command_line(),
        "machine": machine_info(),
        "batches": len(batches),
        "batch_size": tc.batch_size,
        "descriptions": STAND_IN,
        "judges": res,
    }
    rows = [
        [
            k,
            f"{res[k]['cold']['ms_per_step']:.1f}",
            f"{res[k]['cold']['ratio_to_none']:.2f}",
            f"{res[k]['warm']['ms_per_step']:.1f}",
            f"{res[k]['warm']['ratio_to_none']:.2f}",
            f"{res[k]['warm']['mask_ms_per_step']:.1f}",
        ]
        for k in kinds
    ]
    md = "\n".join(
        [
            "# GenFilt: mask overhead per training step",
            "",
            *run_header(result),
            f"Default demo storefront, batch {tc.batch_size}, {len(batches)} batches per pass, every judge on every "
            "batch in turn; medians. Descriptions: " + STAND_IN + "; generative answers: a fixed stand-in rule "
            "(cold pass), then the answer cache (warm pass).",
            "",
            md_table(
                ["judge", "cold ms/step", "cold ratio", "warm ms/step", "warm ratio", "warm mask ms"],
                rows,
            ),
            "",
            "cold = first pass over the batches (guide embeddings computed, generative questions answered); warm = "
            "second pass over the same batches (every later epoch: all cached). Ratio = step time / step time "
            "without a judge, measured in the same run.",
            "",
        ]
    )
    write_results(args.out, "mask_overhead", md, result)
    print(md)
    print("masked negatives (both passes):", masked)


if __name__ == "__main__":
    main()
