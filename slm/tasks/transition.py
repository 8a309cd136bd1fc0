"""Transition fitting: match one simulated step to observed transitions ``(x_t, x_{t+1})``."""

from __future__ import annotations

import lightning as L
import torch
from torch import Tensor

from slm.tasks.base import PREVIEW_STREAM, FittingTask


class TransitionFitting(FittingTask):
    r"""``loss = mean_{b, i, j} (f_theta(x_t)_{bij} - x_{t+1, bij})^2`` with ``f_theta`` one stochastic step.

    Batches are pairs of uint8 tensors ``(x_t, x_{t+1})`` of shape ``(B, H, W)``; the lattices are the
    samples of the score estimator. The simulator's exact references on the training transitions
    (``simulator.reference_metrics``, e.g. the SI MLE ``beta_mle``) go into the final metrics.
    The validation epoch logs ``x_t | x_{t+1} | prediction`` as an image.
    """

    def loss(self, batch: tuple[Tensor, Tensor], generator: torch.Generator) -> Tensor:
        x, y = (t.float() for t in batch)
        per_lattice = ((self.simulator(x, generator) - y) ** 2).mean((-2, -1))
        return self.simulator.surrogate(per_lattice).mean()

    def validation_step(self, batch: tuple[Tensor, Tensor], batch_idx: int) -> Tensor:
        if batch_idx == 0:
            x, y = (t[0].float() for t in batch)
            with torch.no_grad():
                prediction = self.simulator(x[None], self.noise(PREVIEW_STREAM, 0))[0]
            self.log_image("transition/x_t | x_t+1 | predicted", torch.cat([x, y, prediction], dim=1))
        return super().validation_step(batch, batch_idx)

    def final_metrics(self, datamodule: L.LightningDataModule) -> dict[str, float]:
        batches = ((x.to(self.device), y.to(self.device)) for x, y in datamodule.train_set.batches())
        return self.simulator.reference_metrics(batches)
