"""Expected stability loss of MK parameters, without training (``scripts/stability_loss.py``).

Builds the experiment's reference pattern ``X_ref`` (from the same cache as training) and task, and
measures the task's loss over independent rollouts of ``tau`` steps from ``X_ref``: the quantity a
stability fit descends, in expectation, at the given parameters.
"""

from __future__ import annotations

import torch
from omegaconf import DictConfig

from slm.config import build_task_and_data
from slm.errors import InputError


def stability_loss(cfg: DictConfig, rollouts: int) -> dict[str, float]:
    """Mean, min and max of ``task.loss`` over ``rollouts`` rollouts from the reference pattern, with the
    model, data and task of the composed training config ``cfg`` (noise seeded by ``cfg.seed``)."""
    if not (isinstance(rollouts, int) and rollouts >= 1):
        raise InputError(f"rollouts: expected a positive integer, got {rollouts}")
    task, datamodule = build_task_and_data(cfg)
    generator = torch.Generator().manual_seed(int(cfg.seed))
    with torch.no_grad():
        losses = torch.stack([task.loss(datamodule.pattern, generator) for _ in range(rollouts)])
    return {"mean": float(losses.mean()), "min": float(losses.min()), "max": float(losses.max())}
