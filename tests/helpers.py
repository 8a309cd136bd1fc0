"""Callbacks that tests plug into real runs through the config (``+callbacks.x._target_=...``)."""

from __future__ import annotations

import json
from pathlib import Path

import lightning as L
import torch

from slm.tasks.base import TRAIN_STREAM


class CrashAtStep(L.Callback):
    """Simulate a crash (a killed job) when the global step reaches ``step``."""

    def __init__(self, step: int):
        self.step = step

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx) -> None:
        if trainer.global_step == self.step:
            raise RuntimeError(f"simulated crash at step {self.step}")


class PoisonAtStep(L.Callback):
    """Set every parameter to NaN when the global step reaches ``step``."""

    def __init__(self, step: int):
        self.step = step

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx) -> None:
        if trainer.global_step == self.step:
            with torch.no_grad():
                for p in pl_module.parameters():
                    p.fill_(float("nan"))


class RankReport(L.Callback):
    """At the end of training, each rank writes its parameters and a fingerprint of its noise."""

    def __init__(self, out_dir: str):
        self.out_dir = Path(out_dir)

    def on_train_end(self, trainer, pl_module) -> None:
        x = torch.zeros(1, 16, 16, device=pl_module.device)
        x[0, 8, 8] = 1
        with torch.no_grad():
            draws = [pl_module.simulator(x, pl_module.noise(TRAIN_STREAM, s)).sum().item() for s in range(20)]
        report = {"rank": trainer.global_rank, "world": trainer.world_size,
                  "beta": pl_module.simulator.beta.item(), "draws": draws, "steps": trainer.global_step}
        self.out_dir.mkdir(parents=True, exist_ok=True)
        (self.out_dir / f"rank{trainer.global_rank}.json").write_text(json.dumps(report))
