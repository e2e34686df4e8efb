"""Checkpoint directories: safetensors + JSON only, written atomically.

A run directory holds ``best/`` (the model to use: weights, config, data/metric summary, model card) and
``last/`` (everything needed to resume: model, optimiser state, scheduler position, RNG, history). Each is first
written to a temporary sibling and then swapped into place, so a run killed at any moment leaves either the
previous complete checkpoint or the new complete one, never a half-written directory.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file, save_file

from .atomic import atomic_write_text

__all__ = [
    "atomic_write_dir", "atomic_write_text", "load_training_state", "recover_dir", "save_training_state",
    "trained_config",
]

OPTIMIZER_WEIGHTS = "optimizer.safetensors"
STATE_NAME = "trainer_state.json"
# State-dict prefixes that are set only after training (querylife.missing_image, querylife.query_offset).
FITTED_AFTER_TRAINING = ("fusion.missing_", "query_offset.")


def atomic_write_dir(target: str | Path, write: Callable[[Path], None]) -> Path:
    """Call ``write(tmp_dir)`` then swap ``tmp_dir`` into ``target``; the old ``target`` survives any failure."""
    target = Path(target)
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{target.name}.", suffix=".tmp", dir=target.parent))
    try:
        write(tmp)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    old = target.with_name(f".{target.name}.old")
    if old.exists():
        shutil.rmtree(old)
    if target.exists():
        os.replace(target, old)
    os.replace(tmp, target)
    shutil.rmtree(old, ignore_errors=True)
    return target


def recover_dir(target: str | Path) -> None:
    """Tidy what a killed ``atomic_write_dir`` can leave next to ``target``.

    A kill while writing leaves ``.NAME.*.tmp`` (removed: it is incomplete); a kill in the instant between the two
    renames leaves only ``.NAME.old`` (renamed back: it is the previous complete version).
    """
    target = Path(target)
    if not target.parent.exists():
        return
    for stale in target.parent.glob(f".{target.name}.*.tmp"):
        shutil.rmtree(stale, ignore_errors=True)
    old = target.with_name(f".{target.name}.old")
    if old.exists():
        if target.exists():
            shutil.rmtree(old, ignore_errors=True)
        else:
            os.replace(old, target)


def optimizer_to_safetensors(optimizer: torch.optim.Optimizer) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    """Split an optimiser state dict into tensors (for safetensors) and plain JSON (no pickle anywhere)."""
    state = optimizer.state_dict()
    tensors: dict[str, torch.Tensor] = {}
    scalars: dict[str, dict[str, Any]] = {}
    for idx, entry in state["state"].items():
        for key, value in entry.items():
            if torch.is_tensor(value):
                tensors[f"{idx}.{key}"] = value.detach().cpu().contiguous()
            else:
                scalars.setdefault(str(idx), {})[key] = value
    return tensors, {"param_groups": state["param_groups"], "scalars": scalars}


def optimizer_from_safetensors(optimizer: torch.optim.Optimizer, tensors: dict[str, torch.Tensor], meta: dict) -> None:
    state: dict[int, dict[str, Any]] = {}
    for name, value in tensors.items():
        idx, key = name.split(".", 1)
        state.setdefault(int(idx), {})[key] = value
    for idx, entry in meta.get("scalars", {}).items():
        state.setdefault(int(idx), {}).update(entry)
    optimizer.load_state_dict({"state": state, "param_groups": meta["param_groups"]})


def save_training_state(
    directory: Path, model, optimizer: torch.optim.Optimizer, scheduler, trainer_state: dict[str, Any]
) -> None:
    """Write the resumable state into ``directory`` (called inside ``atomic_write_dir``)."""
    model.save_pretrained(directory)
    tensors, meta = optimizer_to_safetensors(optimizer)
    save_file(tensors, str(directory / OPTIMIZER_WEIGHTS))
    full = dict(trainer_state)
    full["optimizer"] = meta
    full["scheduler"] = scheduler.state_dict() if scheduler is not None else None
    save_file({"torch": torch.get_rng_state()}, str(directory / "rng.safetensors"))
    (directory / STATE_NAME).write_text(json.dumps(full, indent=2, default=float) + "\n")


def load_training_state(directory: Path, model, optimizer, scheduler) -> dict[str, Any]:
    """Restore model weights, optimiser, scheduler and RNG from ``directory``; returns the trainer state."""
    state = json.loads((directory / STATE_NAME).read_text())
    weights = load_file(str(directory / "model.safetensors"))
    missing, unexpected = model.load_state_dict(weights, strict=False)
    # Frozen towers are not saved; what is fitted only after training (photo-less vectors, the query offset's
    # reference) may be absent from a run written before those options, and training never reads it.
    skip = (*model._frozen_prefixes(), *FITTED_AFTER_TRAINING)
    if [k for k in missing if not k.startswith(skip)] or unexpected:
        raise ValueError(
            f"{directory}: checkpoint does not match the model (missing {missing}, unexpected {unexpected})"
        )
    optimizer_from_safetensors(optimizer, load_file(str(directory / OPTIMIZER_WEIGHTS)), state.pop("optimizer"))
    sched = state.pop("scheduler")
    if scheduler is not None and sched is not None:
        scheduler.load_state_dict(sched)
    torch.set_rng_state(load_file(str(directory / "rng.safetensors"))["torch"])
    return state


def trained_config(directory: str | Path) -> dict[str, Any] | None:
    """The experiment config a checkpoint was trained with (the ``config`` of its ``summary.json``), or None when
    the checkpoint has no summary or the summary holds no config. Raises ValueError naming the file when it is not
    valid JSON."""
    path = Path(directory) / "summary.json"
    if not path.is_file():
        return None
    try:
        summary = json.loads(path.read_text(encoding="utf-8"))
    except ValueError as err:
        raise ValueError(f"{path}: not valid JSON ({err})") from None
    config = summary.get("config") if isinstance(summary, dict) else None
    return config if isinstance(config, dict) else None
