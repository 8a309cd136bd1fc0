"""Expected stability loss of MK parameters, without training (:mod:`slm.studies.stability`).

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
from omegaconf import DictConfig

from slm.errors import InputError
from slm.models.malevanets_kapral import PARAMETERS
from slm.studies.stability import stability_loss

os.environ.setdefault("PROJECT_ROOT", str(Path(__file__).resolve().parents[1]))


@hydra.main(version_base="1.3", config_path="../configs", config_name="train")
def main(cfg: DictConfig) -> None:
    rollouts = cfg.get("rollouts", 20)
    try:
        stats = stability_loss(cfg, rollouts)
    except InputError as err:
        raise SystemExit(f"error: {err}") from None
    values = ", ".join(f"{name}={float(cfg.model[name]):.4f}" for name in PARAMETERS)
    print(f"{values}: {cfg.task.loss} loss over {rollouts} rollouts of tau = {cfg.task.tau}: "
          f"mean {stats['mean']:.3f}, min {stats['min']:.3f}, max {stats['max']:.3f}")


if __name__ == "__main__":
    main()
