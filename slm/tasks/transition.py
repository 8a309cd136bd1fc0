"""Transition fitting: match one simulated step to observed transitions ``(x_t, x_{t+1})``."""

from __future__ import annotations

import logging

import lightning as L
import torch
import torch.nn.functional as F
from torch import Tensor

from slm.baselines.mle import si_beta_least_squares, si_beta_mle
from slm.models.si import SI, transition_counts
from slm.tasks.base import PREVIEW_STREAM, FittingTask

log = logging.getLogger(__name__)


class TransitionFitting(FittingTask):
    r"""``loss = mean_{b, i, j} (f_theta(x_t)_{bij} - x_{t+1, bij})^2`` with ``f_theta`` one stochastic step.

    Batches are pairs of uint8 tensors ``(x_t, x_{t+1})`` of shape ``(B, H, W)``. For the SI model the
    exact maximum-likelihood ``beta`` on the same training transitions goes into the final metrics
    as ``beta_mle``, and the exact least-squares ``beta`` (the fixed point of this loss with the
    straight-through estimator, see :mod:`slm.baselines.mle`) as ``beta_lsq``.
    The validation epoch logs ``x_t | x_{t+1} | prediction`` as an image.
    """

    def loss(self, batch: tuple[Tensor, Tensor], generator: torch.Generator) -> Tensor:
        x, y = (t.float() for t in batch)
        return F.mse_loss(self.simulator(x, generator), y)

    def validation_step(self, batch: tuple[Tensor, Tensor], batch_idx: int) -> Tensor:
        if batch_idx == 0:
            x, y = (t[0].float() for t in batch)
            with torch.no_grad():
                prediction = self.simulator(x[None], self.noise(PREVIEW_STREAM, 0))[0]
            self.log_image("transition/x_t | x_t+1 | predicted", torch.cat([x, y, prediction], dim=1))
        return super().validation_step(batch, batch_idx)

    def final_metrics(self, datamodule: L.LightningDataModule) -> dict[str, float]:
        if not isinstance(self.simulator, SI):
            return {}
        counts = sum(transition_counts(x.to(self.device).float(), y.to(self.device))
                     for x, y in datamodule.train_set.batches())
        impossible = int(counts[0, 1])
        if impossible:
            log.warning("%d sites turned aware with no aware neighbour, which the SI model cannot do; "
                        "the MLE ignores them", impossible)
        counts = counts.cpu()
        return {"beta_mle": si_beta_mle(counts), "beta_lsq": si_beta_least_squares(counts)}
