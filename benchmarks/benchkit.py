"""What the benchmark scripts share: quiet library logging, the demo storefront as a dataset, mean ± std over
repeats, and result files (Markdown for people, JSON for the record) headed by the run's command and machine.

Imported by the scripts in this folder (``python benchmarks/X.py`` puts the folder on ``sys.path``).
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import math
from collections.abc import Iterable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from querylife.atomic import atomic_write_text
from querylife.config import ExperimentConfig, load_config
from querylife.data.prepare import Dataset, prepare_from_config
from querylife.data.storefront import DemoConfig, DemoStorefront, generate_demo
from querylife.runinfo import machine_summary
from querylife.towers import vision_image_size


@contextlib.contextmanager
def file_lock(path: str | None) -> Iterator[None]:
    """Hold an exclusive lock on ``path`` (created if missing) around a heavy run, so that benchmarks sharing a
    machine take turns; None: no lock."""
    if not path:
        yield
        return
    with open(path, "a") as fh:
        fcntl.flock(fh, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(fh, fcntl.LOCK_UN)


def quiet_transformers() -> None:
    """Silence transformers' warnings and progress bars: a benchmark's output is its numbers."""
    from transformers.utils import logging as hf_logging

    hf_logging.set_verbosity_error()
    hf_logging.disable_progress_bar()


#: The small CNN trained from scratch: the default vision tower when the training-cost benchmarks (train_step,
#: ddp_throughput, grad_cache_memory, mask_overhead, embed_throughput, serve_latency) were recorded, so they keep it
#: and their figures stay comparable. In train_step, ddp_throughput and grad_cache_memory, ``--set
#: model.tower.vision_model=efficientnet-lite0`` measures the default tower instead; the other three set it in code.
CNN_TOWER = ("model.tower.vision_model=small_cnn",)


def demo_dataset(
    store_dir: str | Path, overrides: Iterable[str] = (), demo: DemoConfig | None = None
) -> tuple[DemoStorefront, ExperimentConfig, Dataset]:
    """The demo storefront in ``store_dir`` (generated there if missing), the default config pointed at it (plus
    ``overrides``, ``KEY=VALUE``) and its prepared dataset. Without ``demo``, photos are rendered at the configured
    vision tower's input size, as ``querylife demo`` renders them."""
    overrides = list(overrides)
    if demo is None:
        demo = DemoConfig(image_size=vision_image_size(load_config(None, overrides).model.tower))
    store = generate_demo(store_dir, demo, progress=False)
    cfg = load_config(None, [*(f"{k}={v}" for k, v in store.config_overrides().items()), *overrides])
    return store, cfg, prepare_from_config(cfg, progress=False)


def mean_std(values: Iterable[float]) -> dict[str, float]:
    """Mean and sample standard deviation (0 for a single value) of repeated measurements."""
    vals = np.asarray(list(values), dtype=float)
    return {"mean": float(vals.mean()), "std": float(vals.std(ddof=1)) if len(vals) > 1 else 0.0}


def fmt_mean_std(cell: Mapping[str, float], digits: int = 4) -> str:
    """``mean ± std`` of a :func:`mean_std` cell; a dash when the mean is not a number."""
    if not math.isfinite(cell["mean"]):
        return "–"
    return f"{cell['mean']:.{digits}f} ± {cell['std']:.{digits}f}"


def run_header(meta: Mapping[str, Any]) -> list[str]:
    """The Markdown lines naming the command and the machine of a run (``meta["command"]``, ``meta["machine"]``
    as :func:`querylife.runinfo.command_line` and :func:`querylife.runinfo.machine_info` give them)."""
    return [f"Command: `{meta['command']}`  ", f"Machine: {machine_summary(meta['machine'])}  "]


def write_results(out: str | Path, stem: str, markdown: str | Sequence[str], payload: Any) -> Path:
    """Write ``out/stem.md`` (lines are joined with newlines) and ``out/stem.json``, each atomically: a killed run
    leaves the previous complete files. Returns the Markdown path."""
    out = Path(out)
    text = markdown if isinstance(markdown, str) else "\n".join(markdown)
    md = atomic_write_text(out / f"{stem}.md", text)
    atomic_write_text(out / f"{stem}.json", json.dumps(payload, indent=2, default=float) + "\n")
    return md
