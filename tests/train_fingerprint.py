"""A fingerprint of training: what a refactor of the trainer must leave bit for bit as it was.

Trains a small demo storefront (the real all-MiniLM-L6-v2 frozen, a small CNN) through the paths the demo and the
CLI use: the suite's methods ``querylife`` (query_type_gate), ``mean``, ``concat``, ``hard_negatives`` and
``mask_guide`` (the GIST-style false-negative judge), ``querylife train`` with hard negatives and the guide judge,
and the GenFilt evaluations that sample training batches (``genfilt judge``, ``genfilt evaluate``, the suite
report's judge table). It records per-epoch losses and dev NDCG@10, a hash of each final state dict and of the test
scores, and the judge counts.

Run it before and after a change and compare (``tests/test_train_fingerprint.py`` does, against
``tests/data/train_fingerprint.json``)::

    python tests/train_fingerprint.py --out /tmp/after.json
"""

from __future__ import annotations

import argparse
import hashlib
import json
import platform
import sys
import tempfile
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch

METHODS = ("querylife", "mean", "concat", "hard_negatives", "mask_guide")
OVERRIDES = [
    "model.tower.text_model=minilm",
    # Recorded when the small CNN was the default tower: pinned so the fingerprint stays comparable bit for bit.
    "model.tower.vision_model=small_cnn",
    "model.tower.small_cnn.channels=[8,16]",
    "model.tower.small_cnn.image_size=32",
    "model.embed_dim=32",
    "train.epochs=3",
    "train.batch_size=32",
    "train.eval_batch_size=128",
    "train.patience=0",
    # Recorded when "irrelevant" was the default; pinned so the recorded judge paths stay comparable bit for bit.
    "train.protect_labelled_negatives=irrelevant",
    "train.device=cpu",
    "genfilt.margin=0.05",
]


def tensors_hash(tensors: dict[str, torch.Tensor]) -> str:
    """sha256 over the names, dtypes, shapes and bytes of a state dict, in name order."""
    h = hashlib.sha256()
    for name in sorted(tensors):
        t = tensors[name].detach().cpu().contiguous()
        h.update(f"{name}:{t.dtype}:{tuple(t.shape)}".encode())
        h.update(t.reshape(-1).view(torch.uint8).numpy().tobytes() if t.numel() else b"")
    return h.hexdigest()


def frame_hash(frame: pd.DataFrame) -> str:
    hashed = pd.util.hash_pandas_object(frame.reset_index(drop=True), index=False)
    return hashlib.sha256(hashed.to_numpy().tobytes()).hexdigest()


def _history(run_dir: Path) -> list[dict[str, Any]]:
    state = json.loads((run_dir / "last" / "trainer_state.json").read_text())
    return [{k: v for k, v in h.items() if k != "seconds"} for h in state["history"]]


def _last_weights(run_dir: Path) -> str:
    from safetensors.torch import load_file

    return tensors_hash(load_file(str(run_dir / "last" / "model.safetensors")))


def _clean(value: Any) -> Any:
    """JSON-able, NaN as the string "nan" (so that equal runs compare equal)."""
    if isinstance(value, dict):
        return {str(k): _clean(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_clean(v) for v in value]
    if isinstance(value, np.generic):
        value = value.item()
    if isinstance(value, float) and value != value:
        return "nan"
    return value


def fingerprint(work: Path) -> dict[str, Any]:
    """Train and judge on a fresh small storefront under ``work``; returns the fingerprint."""
    from typer.testing import CliRunner

    from querylife.cli import app
    from querylife.config import load_config
    from querylife.data.prepare import prepare_from_config
    from querylife.data.storefront import DemoConfig, generate_demo
    from querylife.genfilt.quality import compare_judges
    from querylife.genfilt.training import judge_training_batches
    from querylife.suite import Suite

    store = generate_demo(work / "data", DemoConfig(n_products=240, seed=3, image_size=32), progress=False)
    cfg = load_config(None, [*(f"{k}={v}" for k, v in store.config_overrides().items()), *OVERRIDES])
    data = prepare_from_config(cfg, progress=False)
    out: dict[str, Any] = {"methods": {}}
    suite = Suite(cfg, data, work / "suite", progress=False, n_boot=20, log=lambda _: None)
    runs = []
    for name in METHODS:
        run = suite.run_method(name)
        runs.append(run)
        run_dir = work / "suite" / "runs" / name
        out["methods"][name] = {
            "history": _history(run_dir),
            "last_weights": _last_weights(run_dir),
            "best_epoch": run.extra.get("best_epoch"),
            "test_scores": frame_hash(run.scored[["query", "product_id", "score"]]),
            "test_ndcg@10": run.result.overall["ndcg@10"],
        }
    out["suite_judges"] = {"entries": suite.judge_results(runs).entries}
    cli_dir = work / "cli"
    sets = ["train.hard_negatives=1", "train.false_negative_judge=guide", "train.epochs=2"]
    args = ["train", "--out", str(cli_dir), "--quiet"]
    args += [a for s in [*(f"{k}={v}" for k, v in store.config_overrides().items()), *OVERRIDES, *sets]
             for a in ("--set", s)]
    res = CliRunner().invoke(app, args)
    if res.exit_code != 0:
        raise RuntimeError(f"querylife train failed: {res.output}\n{res.exception!r}")
    out["cli_train"] = {"history": _history(cli_dir), "last_weights": _last_weights(cli_dir)}
    flagged, summary = judge_training_batches(cfg, data, kind="guide", epochs=2, progress=False)
    out["genfilt_judge"] = {"summary": summary, "flagged": frame_hash(flagged.astype(str))}
    table = compare_judges(cfg, data, n_batches=10).table.drop(columns=["seconds"])
    out["genfilt_evaluate"] = table.to_dict(orient="index")
    # The CPU's vector instruction set picks torch's kernels (AVX2 and AVX-512 sum floats in other orders), so two
    # x86_64 machines agree bit for bit only when it is the same too.
    out["env"] = {"torch": torch.__version__, "python": platform.python_version(), "machine": platform.machine(),
                  "cpu_capability": torch.backends.cpu.get_cpu_capability()}
    return _clean(out)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", required=True)
    args = parser.parse_args()
    torch.set_num_threads(1)
    with tempfile.TemporaryDirectory() as tmp:
        fp = fingerprint(Path(tmp))
    Path(args.out).write_text(json.dumps(fp, indent=1, sort_keys=True) + "\n")
    print(f"wrote {args.out}", file=sys.stderr)


if __name__ == "__main__":
    main()
