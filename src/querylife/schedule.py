"""Learning-rate schedules and the gate hold: warm-up + cosine per parameter group, the gate held at mean fusion.

The gate hold (``train.gate_start_fraction``): the gate's parameter groups (:data:`~querylife.model.GATE_GROUPS`)
get no gradient and learning rate 0 for the first steps, so training starts as exactly mean fusion; from
``start_step`` on they follow their own warm-up + cosine over the remaining steps (docs/TUNING.md).

Example::

    hold = GateHold.from_fraction(0.5, total_steps=1000)
    scheduler = LambdaLR(optimizer, hold.lr_factors(optimizer, 1000, warmup_fraction=0.05))
    hold.is_held(10)  # True: the gate's gradients are cleared before the optimiser step
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import torch

from .model import GATE_GROUPS

__all__ = ["GateHold", "cosine_with_warmup"]


def cosine_with_warmup(total_steps: int, warmup_steps: int) -> Callable[[int], float]:
    """LR factor: linear warm-up over ``warmup_steps``, then cosine decay to 0 at ``total_steps``."""

    def factor(step: int) -> float:
        if step < warmup_steps:
            return (step + 1) / max(1, warmup_steps)
        progress = (step - warmup_steps) / max(1, total_steps - warmup_steps)
        return 0.5 * (1.0 + math.cos(math.pi * min(1.0, progress)))

    return factor


@dataclass(frozen=True)
class GateHold:
    """Which parameter groups are held (``groups``) and until which optimiser step (``start_step``: the first step
    they train; 0 = never held)."""

    start_step: int
    groups: tuple[str, ...] = GATE_GROUPS

    @classmethod
    def from_fraction(cls, fraction: float, total_steps: int) -> GateHold:
        """Held for the first ``fraction`` of ``total_steps`` (``train.gate_start_fraction``)."""
        return cls(int(fraction * total_steps))

    def is_held(self, step: int) -> bool:
        """Whether the gate is held at (0-based) optimiser step ``step``."""
        return step < self.start_step

    def held_parameters(self, optimizer: torch.optim.Optimizer) -> list[torch.nn.Parameter]:
        """The parameters of the held groups (empty for modes without a gate)."""
        return [p for g in optimizer.param_groups if g.get("name") in self.groups for p in g["params"]]

    def clear_gradients(self, optimizer: torch.optim.Optimizer, step: int) -> None:
        """While held: no gradient at all for the gate, so that it neither enters the clipping norm nor fills AdamW's
        moments (until the gate starts, training is exactly mean fusion's)."""
        if self.is_held(step):
            for p in self.held_parameters(optimizer):
                p.grad = None

    def lr_factors(
        self, optimizer: torch.optim.Optimizer, total_steps: int, warmup_fraction: float
    ) -> list[Callable[[int], float]]:
        """One LambdaLR factor per parameter group: warm-up + cosine over all steps; the held groups factor 0 before
        ``start_step`` and their own warm-up + cosine over the remaining steps."""
        start = self.start_step
        main = cosine_with_warmup(total_steps, int(warmup_fraction * total_steps))
        late = cosine_with_warmup(total_steps - start, int(warmup_fraction * (total_steps - start)))

        def gate(step: int) -> float:
            return 0.0 if step < start else late(step - start)

        return [gate if start and g.get("name") in self.groups else main for g in optimizer.param_groups]
