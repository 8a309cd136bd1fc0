r"""Calibration problems for the gradient-free baselines: a simulator, a summary and a discrepancy.

Each problem wraps the same simulator the approximate-gradient fit uses and exposes what ABC-SMC
and CMA-ES need: ``summary(params, generator)`` (one simulation, counted), the observed summary,
``distance(a, b)``, the names and true values of the parameters.

* :class:`SIProblem`: the SI model applied to every observed ``x_t`` of the training transitions.
  Summary: the number of unaware sites that turn aware, per number ``n = 0..8`` of aware
  neighbours (:func:`slm.models.si.transition_counts`, the statistic the MLE uses), divided by the
  number of unaware sites. The pixelwise MSE that the gradient fit minimises is not used here:
  its *expectation* is linear in each site's probability and is minimised away from the truth
  (``scripts/estimator_study.py``), so a gradient-free search on it would be biased.
* :class:`PRWProblem`: the persistent random walk; summary: its MSD curve from ``walkers`` walkers
  (the gradient fit's batch), distance: the fit's relative loss ``sum_k ((s_k - m_k) / m_k)^2``.
"""

from __future__ import annotations

import numpy as np
import torch
from torch import Tensor

from slm.models.persistent_walk import PersistentRandomWalk
from slm.models.si import SI, transition_counts


class SIProblem:
    """Recover ``beta`` from SI transitions ``x -> y`` (float 0/1, shape ``(N, H, W)``)."""

    names = ("beta",)

    def __init__(self, x: Tensor, y: Tensor, beta_true: float):
        self.x = x
        self.truth = {"beta": beta_true}
        self.unaware = float((x == 0).sum())
        self.observed = self._turned(y)
        self.simulations = 0

    def _turned(self, y: Tensor) -> np.ndarray:
        return transition_counts(self.x, y)[:, 1].double().numpy() / self.unaware

    @torch.no_grad()
    def summary(self, params: dict[str, float], generator: torch.Generator | None = None) -> np.ndarray:
        """One simulation of every transition at ``params``; fraction turned per neighbour count, ``(9,)``."""
        self.simulations += 1
        return self._turned(SI(beta=params["beta"])(self.x, generator))

    @staticmethod
    def distance(a: np.ndarray, b: np.ndarray) -> float:
        return float(np.sqrt(((a - b) ** 2).sum()))


class PRWProblem:
    """Recover ``(p_center, p_resample)`` from a target MSD curve ``(lags,)``."""

    names = ("p_center", "p_resample")

    def __init__(self, target: Tensor, truth: dict[str, float], walkers: int = 1500, mcs_per_frame: int = 1,
                 dx: float = 1.0):
        self.target = target
        self.truth = truth
        self.observed = target.double().numpy()
        self.walkers = walkers
        self.mcs_per_frame = mcs_per_frame
        self.dx = dx
        self.simulations = 0

    @torch.no_grad()
    def summary(self, params: dict[str, float], generator: torch.Generator | None = None) -> np.ndarray:
        """One simulation of ``walkers`` walkers; their MSD curve, ``(lags,)``."""
        self.simulations += 1
        walk = PersistentRandomWalk(params["p_center"], params["p_resample"], mcs_per_frame=self.mcs_per_frame,
                                    dx=self.dx)
        return walk.msd(self.walkers, len(self.target), generator).double().numpy()

    def distance(self, a: np.ndarray, b: np.ndarray) -> float:
        return float((((a - b) / self.observed) ** 2).sum())


def parameter_error(estimate: dict[str, float], truth: dict[str, float]) -> float:
    """Euclidean distance between estimate and truth over the problem's parameters."""
    return float(np.sqrt(sum((estimate[name] - truth[name]) ** 2 for name in truth)))
