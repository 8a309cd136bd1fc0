"""Statistics fitting: match a simulated summary statistic (an MSD curve) to a target."""

from __future__ import annotations

import json
from pathlib import Path

import torch
from torch import Tensor

from slm.errors import InputError
from slm.models.base import WalkSimulator
from slm.plots import msd_figure
from slm.tasks.base import PREVIEW_STREAM, FittingTask
from slm.uncertainty import Moments

LOSSES = ("relative", "squared")


class StatisticsFitting(FittingTask):
    r"""Fit the simulator's MSD curve to a target curve ``m`` (lags ``1..K``).

    The simulator is a :class:`slm.models.WalkSimulator`: ``msd(n_walkers, lags, generator) -> (lags,)``
    (with the score-function term when its estimator records log-probabilities). Each step simulates
    ``batch_size`` walkers (split over DDP ranks) and minimises

    * ``relative``: ``sum_k ((s_k - m_k) / m_k)^2``, every lag counts alike (default);
    * ``squared``: ``sum_k (s_k - m_k)^2``, the papers' loss, dominated by the longest lags.

    Logs ``train/msd`` (the simulated MSD at the longest lag) every step and a figure of target vs
    simulated MSD every ``figure_every`` steps. After training, ``msd`` (longest lag) and
    ``msd_rel_error = mean_k |s_k - m_k| / m_k`` come from a fresh simulation of ``eval_walkers``
    walkers, and ``msd.json`` / ``msd.png`` with both curves go into the run folder.
    """

    def __init__(self, simulator: WalkSimulator, optimizer, scheduler=None, seed: int = 0, batch_size: int = 1500,
                 loss: str = "relative", eval_walkers: int = 100_000, figure_every: int = 250, target=None):
        super().__init__(simulator, optimizer, scheduler, seed, target=target)
        if not isinstance(simulator, WalkSimulator):
            raise InputError(f"model: statistics fitting needs a model with an MSD (a WalkSimulator), got "
                             f"{type(simulator).__name__}")
        if loss not in LOSSES:
            raise InputError(f"task.loss: unknown loss {loss!r}; expected one of {', '.join(LOSSES)}")
        if batch_size < 1:
            raise InputError(f"task.batch_size: expected a positive integer, got {batch_size}")
        self.batch_size = batch_size
        self.loss_name = loss
        self.eval_walkers = eval_walkers
        self.figure_every = figure_every
        self.fitted: Tensor | None = None

    def loss(self, target: Tensor, generator: torch.Generator) -> Tensor:
        walkers = max(1, self.batch_size // self.trainer.world_size)
        simulated = self.simulator.msd(walkers, len(target), generator)
        self.log("train/msd", simulated[-1].detach())
        if self.tensorboard is not None and self.global_step % self.figure_every == 0:
            self.tensorboard.add_figure("msd", msd_figure(target, simulated.detach()), self.global_step)
        if self.loss_name == "relative":
            return (((simulated - target) / target) ** 2).sum()
        return ((simulated - target) ** 2).sum()

    def uncertainty_problem(self) -> Moments:
        """The MSD fit as a method of moments: per-walker squared displacements, the loss's weighting."""
        target = self.target.msd.to(self.device)
        weight = target ** -2 if self.loss_name == "relative" else torch.ones_like(target)
        return Moments(target, weight, lambda n, generator: self.simulator.msd_per_walker(n, len(target), generator),
                       units=100 * self.batch_size, fit_units=self.batch_size, unit="walkers")

    @torch.no_grad()
    def final_metrics(self) -> dict[str, float]:
        target = self.target.msd.to(self.device)
        self.fitted = self.simulator.msd(self.eval_walkers, len(target), self.noise(PREVIEW_STREAM, 0))
        relative = (self.fitted - target).abs() / target
        return {"msd": float(self.fitted[-1]), "msd_rel_error": float(relative.mean()),
                "msd_rel_error_max": float(relative.max())}

    def save_artifacts(self, out_dir: Path) -> None:
        target = self.target.msd.tolist()
        curves = {"lag": list(range(1, len(target) + 1)), "target": target, "fitted": self.fitted.tolist(),
                  "frame_interval": self.target.frame_interval}
        (out_dir / "msd.json").write_text(json.dumps(curves, indent=2) + "\n")
        msd_figure(self.target.msd, self.fitted.cpu()).savefig(out_dir / "msd.png", dpi=120,
                                                                       bbox_inches="tight")
