"""Expected stability loss of MK parameters, without training.

    python scripts/stability_loss.py experiment=mk_e2 model.D_A=0.3628 model.D_B=1.0 [+rollouts=20]

Composes the config as ``scripts/train.py`` does, builds the experiment's reference pattern ``X_ref``
(from the same cache) and task, and prints the mean, minimum and maximum of the task's loss over
``rollouts`` independent rollouts of ``tau`` steps from ``X_ref``: the quantity a stability fit descends,
in expectation, at the given parameters.
"""

from __future__ import annotations

import os
from pathlib import Path

import hydra
import torch
from omegaconf import DictConfig

from slm.errors import InputError
from slm.train import build_simulator, build_task_and_data

os.environ.setdefault("PROJECT_ROOT", str(Path(__file__).resolve().parents[1]))


def stability_loss(cfg: DictConfig, rollouts: int) -> dict[str, float]:
    """Mean, min and max of ``task.loss`` over ``rollouts`` rollouts from the reference pattern."""
    if not (isinstance(rollouts, int) and rollouts >= 1):
        raise InputError(f"rollouts: expected a positive integer, got {rollouts}")
    task, datamodule = build_task_and_data(cfg, build_simulator(cfg.model))
    generator = torch.Generator().manual_seed(int(cfg.seed))
    with torch.no_grad():
        losses = torch.stack([task.loss(datamodule.pattern, generator) for _ in range(rollouts)])
    return {"mean": float(losses.mean()), "min": float(losses.min()), "max": float(losses.max())}


@hydra.main(version_base="1.3", config_path="../configs", config_name="train")
def main(cfg: DictConfig) -> None:
    rollouts = cfg.get("rollouts", 20)
    try:
        stats = stability_loss(cfg, rollouts)
    except InputError as err:
        raise SystemExit(f"error: {err}") from None
    values = ", ".join(f"{name}={float(cfg.model[name]):.4f}" for name in ("D_A", "D_B", "k1", "k2", "k3"))
    print(f"{values}: {cfg.task.loss} loss over {rollouts} rollouts of tau = {cfg.task.tau}: "
          f"mean {stats['mean']:.3f}, min {stats['min']:.3f}, max {stats['max']:.3f}")


if __name__ == "__main__":
    main()
