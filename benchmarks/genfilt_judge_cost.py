"""Cost of GenFilt's yes / no judge per judged pair (SmolLM2-135M-Instruct by default), with and without the prompt
prefix cache, on the questions training asks: the ``--cap`` most suspicious unprotected guide flags of each of the
first ``--batches`` training batches of the demo storefront (as ``genfilt_smollm2.py`` picks them).

Variants, each scoring every batch's questions in one call as training does (``judge_batch_size`` prompts per
forward pass, sorted by token length), interleaved over ``--repeats`` rounds so that a shared machine's load
falls on all of them alike:

* ``prefix``: the shared prompt prefix computed once, its key / value cache reused (the default);
* ``whole``: every prompt run whole (``genfilt.judge_prefix_cache=false``);
* ``at REV`` (``--old REV``): ``LogprobYesNo`` as committed at REV, loaded from git (a before / after check).

Also reported: the largest score difference of each variant from ``whole`` and how many verdicts differ at the
thresholds of ``--thresholds`` (the cache must not change verdicts).

Run (shared 2-core machine: one heavy job at a time):
  OMP_NUM_THREADS=1 python benchmarks/genfilt_judge_cost.py --batches 4 --cap 32 --old ce3ea94
Writes genfilt_judge_cost.md and .json (command, machine, numbers).
"""

from __future__ import annotations

import argparse
import importlib.util
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import numpy as np  # noqa: E402
import torch  # noqa: E402

from querylife.data.storefront import DemoConfig  # noqa: E402
from querylife.genfilt.judges import GuideModelJudge, text_tower_encoder  # noqa: E402
from querylife.genfilt.lm import load_causal_lm  # noqa: E402
from querylife.genfilt.lm_judge import LogprobYesNo  # noqa: E402
from querylife.genfilt.mask_eval import sample_batches  # noqa: E402
from querylife.genfilt.training import protected_pairs  # noqa: E402
from querylife.report import md_table  # noqa: E402
from querylife.runinfo import command_line, machine_info  # noqa: E402

sys.path.insert(0, str(Path(__file__).parent))
from benchkit import demo_dataset, quiet_transformers, run_header, write_results  # noqa: E402


def judge_class_at(rev: str) -> type:
    """``LogprobYesNo`` as committed at ``rev`` (its relative imports resolve against today's package)."""
    source = subprocess.run(
        ["git", "show", f"{rev}:src/querylife/genfilt/lm_judge.py"], capture_output=True, text=True, check=True
    ).stdout
    spec = importlib.util.spec_from_loader(f"querylife.genfilt._lm_judge_{rev}", loader=None)
    module = importlib.util.module_from_spec(spec)
    module.__package__ = "querylife.genfilt"
    exec(compile(source, f"{rev}:lm_judge.py", "exec"), module.__dict__)  # noqa: S102 - the repo's own history
    return module.LogprobYesNo


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--batches", type=int, default=4)
    parser.add_argument("--cap", type=int, default=32, help="questions per batch (genfilt.max_questions_per_batch)")
    parser.add_argument("--batch-size", type=int, default=16, help="prompts per forward pass")
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--old", help="also time LogprobYesNo as committed at this git revision")
    parser.add_argument("--thresholds", type=float, nargs="+", default=[-1.5, -1.0, -0.5, 0.0])
    parser.add_argument("--products", type=int, default=3000)
    parser.add_argument("--model", default="smollm2-135m")
    parser.add_argument("--work", default="runs/bench_genfilt")
    parser.add_argument("--out", default="benchmarks/results")
    parser.add_argument("--stem", default="genfilt_judge_cost")
    parser.add_argument("--set", dest="overrides", action="append", default=[], help="config override KEY=VALUE")
    args = parser.parse_args()
    quiet_transformers()
    torch.set_num_threads(int(os.environ.get("OMP_NUM_THREADS", "1")))
    start = time.time()
    _store, cfg, data = demo_dataset(Path(args.work) / "data", args.overrides, DemoConfig(n_products=args.products))
    catalog = data.catalog
    titles = dict(zip(catalog["product_id"], catalog["title"], strict=True))
    types = dict(zip(catalog["product_id"], catalog["product_type"], strict=True))
    protect = protected_pairs(cfg, data)
    batches = sample_batches(data, cfg, args.batches)
    guide = GuideModelJudge(
        text_tower_encoder(cfg.genfilt.guide_model), titles, margin=cfg.genfilt.margin,
        margin_kind=cfg.genfilt.margin_kind,
    )
    per_batch: list[list[tuple[str, str, str, None]]] = []
    for qs, cols, pos in batches:
        flags = guide.mask(qs, cols, pos)
        scores = guide.last_scores
        prot = np.array([[(q, c) in protect for c in cols] for q in qs])
        cells = np.argwhere(flags & ~prot)
        cells = cells[np.argsort(-scores[cells[:, 0], cells[:, 1]], kind="stable")][: args.cap]
        per_batch.append([(qs[i], titles[cols[j]], types[cols[j]], None) for i, j in cells.tolist()])
    n_pairs = sum(len(b) for b in per_batch)

    lm = load_causal_lm(args.model, cache_dir=cfg.genfilt.lm_cache_dir or None)
    prompt = cfg.genfilt.judge_prompt
    variants: dict[str, object] = {
        "prefix": LogprobYesNo(lm, prompt, batch_size=args.batch_size, prefix_cache=True),
        "whole": LogprobYesNo(lm, prompt, batch_size=args.batch_size, prefix_cache=False),
    }
    if args.old:
        variants[f"at {args.old}"] = judge_class_at(args.old)(lm, prompt, batch_size=args.batch_size)
    prefix = variants["prefix"].shared_prefix()
    tok = lm.tokenizer
    lengths = [len(tok(variants["whole"].render(*q[:3]), add_special_tokens=False)["input_ids"]) for b in per_batch
               for q in b]
    seconds: dict[str, list[float]] = {name: [] for name in variants}
    scores: dict[str, np.ndarray] = {}
    for r in range(args.repeats):
        for name, judge in variants.items():
            t0 = time.perf_counter()
            out = np.concatenate([judge.scores(b) for b in per_batch if b])
            seconds[name].append(time.perf_counter() - t0)
            scores.setdefault(name, out)
            ms = 1000 * seconds[name][-1] / n_pairs
            print(f"round {r + 1}/{args.repeats} {name}: {ms:.0f} ms / pair", flush=True)
    ref = scores["whole"]
    rows, payload_rows = [], {}
    base_ms = 1000 * statistics.median(seconds["whole"]) / n_pairs
    for name in variants:
        ms = 1000 * statistics.median(seconds[name]) / n_pairs
        diff = float(np.abs(scores[name] - ref).max())
        flips = {t: int(((scores[name] >= t) != (ref >= t)).sum()) for t in args.thresholds}
        rows.append([name, f"{ms:.0f}", f"{base_ms / ms:.2f}x", f"{diff:.1e}", ", ".join(map(str, flips.values()))])
        payload_rows[name] = {"ms_per_pair": ms, "seconds": seconds[name], "max_abs_diff_vs_whole": diff,
                              "verdict_flips_vs_whole": flips}
    p_len = len(prefix.ids) if prefix is not None else 0
    md = [
        "# Cost of the yes / no judge per judged pair: prompt prefix cache",
        "",
        *run_header({"command": command_line(), "machine": machine_info()}),
        "The machine was shared with other jobs (2 cores, one torch thread here): compare the rows of this run, not "
        "absolute times.",
        "",
        f"Model `{args.model}`; {n_pairs} questions: the {args.cap} most suspicious unprotected guide flags of each "
        f"of the first {len(batches)} demo training batches, one `scores` call per batch as training makes it, "
        f"{args.batch_size} prompts per forward pass; median of {args.repeats} interleaved rounds. Prompt length "
        f"{statistics.median(lengths):.0f} tokens (median; {min(lengths)}-{max(lengths)}), of which {p_len} are the "
        f"shared prefix (system prompt and user template up to the query); prompts scored whole although the cache "
        f"was on: {variants['prefix'].prompts_whole}.",
        "",
        md_table(["variant", "ms / pair", "speed-up vs whole", "max abs score diff vs whole",
                  f"verdicts differing at t = {', '.join(f'{t:g}' for t in args.thresholds)}"], rows),
        "",
        f"Total runtime {(time.time() - start) / 60:.1f} min.",
    ]
    payload = {"command": command_line(), "machine": machine_info(), "args": vars(args), "pairs": n_pairs,
               "prefix_tokens": p_len, "prompt_tokens": lengths, "variants": payload_rows}
    path = write_results(args.out, args.stem, md, payload)
    print("\n".join(md))
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
