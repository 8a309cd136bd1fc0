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
* :class:`SummaryProblem`: a simulator with summary statistics over time (the multi-cell CPM);
  summary: the batch-mean summaries of ``lattices`` lattices (the gradient fit's batch) from random
  starting lattices, distance: the fit's loss (:class:`slm.tasks.SummaryFitting`).
* :class:`TrackProblem`: migrating cells (the act model) against tracks without a known truth;
  summary: the track statistics of ``lattices`` lattices (the fit's batch), distance: the fit's loss
  (:func:`slm.tasks.tracks.track_loss`); :meth:`TrackProblem.evaluate` scores an estimate by that loss
  on a larger simulation with fixed noise, the measure the comparison puts the methods side by side on.

Every problem has ``bounds`` per parameter: the support of ABC-SMC's uniform prior and of CMA-ES's
search (default ``(0, 1)``, probabilities).
"""

from __future__ import annotations

import copy

import numpy as np
import torch
from torch import Tensor
from torch.utils.data import Dataset

from slm.models.base import Simulator
from slm.models.persistent_walk import PersistentRandomWalk
from slm.models.si import SI, transition_counts
from slm.parameters import set_values
from slm.stats import track_statistics
from slm.tasks.tracks import simulate_tracks, track_loss


class SIProblem:
    """Recover ``beta`` from SI transitions ``x -> y`` (float 0/1, shape ``(N, H, W)``)."""

    names = ("beta",)
    bounds = {"beta": (0.0, 1.0)}

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
    bounds = {"p_center": (0.0, 1.0), "p_resample": (0.0, 1.0)}

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


class SummaryProblem:
    """Recover the parameters ``truth`` names of ``simulator`` from target summaries ``(F, m)`` over time.

    Args:
        simulator: the model as configured (its other values stay fixed).
        target: target summaries at frames ``1..F``, ``mcs_per_frame`` steps apart.
        truth: true values by name (what is fitted).
        bounds: ``(low, high)`` per fitted parameter.
        starts: items ``(labels, cell_types)`` of starting lattices (the fit's data set).
        lattices: lattices per simulation (the gradient fit's batch).
    """

    def __init__(self, simulator: Simulator, target: Tensor, truth: dict[str, float],
                 bounds: dict[str, tuple[float, float]], starts: Dataset, lattices: int, mcs_per_frame: int):
        self.simulator = simulator
        self.target = target
        self.truth = dict(truth)
        self.names = tuple(truth)
        self.bounds = {name: tuple(bounds[name]) for name in self.names}
        self.observed = target.double().numpy()
        self.scale = np.abs(self.observed).mean(0).clip(1e-6)
        self.starts = starts
        self.lattices = lattices
        self.mcs_per_frame = mcs_per_frame
        self.simulations = 0

    @torch.no_grad()
    def summary(self, params: dict[str, float], generator: torch.Generator | None = None) -> np.ndarray:
        """One simulation of ``lattices`` random starting lattices at ``params``: mean summaries ``(F, m)``."""
        self.simulations += 1
        model = copy.deepcopy(self.simulator)
        set_values(model, params, key="params")
        picks = torch.randint(len(self.starts), (self.lattices,), generator=generator).tolist()
        labels, cell_types = (torch.stack(part) for part in zip(*(self.starts[i] for i in picks), strict=True))
        state = model.state(labels, cell_types)
        series = []
        for _ in range(len(self.target)):
            state = model.rollout(state, self.mcs_per_frame, generator)
            series.append(model.summary(state).mean(0))
        return torch.stack(series).double().numpy()

    def distance(self, a: np.ndarray, b: np.ndarray) -> float:
        return float((((a - b) / self.scale) ** 2).sum(1).mean())


class TrackProblem:
    """Fit the parameters ``start`` names of a migrating-cell ``simulator`` to target track statistics.

    Args:
        simulator: the model as configured (its other values stay fixed).
        target: target :func:`slm.stats.track_statistics` ``(K + 2,)``, lattice units.
        start: the fitted parameters (their start values name them).
        bounds: ``(low, high)`` per fitted parameter.
        starts: items ``(labels, cell_types)`` of starting lattices (the fit's data set).
        lattices: lattices per simulation (the gradient fit's batch).
        burn_in, frames, mcs_per_frame: the tracks (as the data module's).
        weights: the loss weights (msd, speed, persistence).
        eval_lattices: lattices of :meth:`evaluate`.
    """

    truth = None

    def __init__(self, simulator: Simulator, target: Tensor, start: dict[str, float],
                 bounds: dict[str, tuple[float, float]], starts: Dataset, lattices: int, burn_in: int, frames: int,
                 mcs_per_frame: int, weights: Tensor, eval_lattices: int = 64):
        self.simulator = simulator
        self.target = target.double()
        self.names = tuple(start)
        self.bounds = {name: tuple(bounds[name]) for name in self.names}
        self.observed = self.target.numpy()
        self.starts, self.lattices, self.eval_lattices = starts, lattices, eval_lattices
        self.burn_in, self.frames, self.mcs_per_frame = burn_in, frames, mcs_per_frame
        self.weights = weights.double()
        self.simulations = 0

    @torch.no_grad()
    def statistics(self, params: dict[str, float], lattices: int, generator: torch.Generator | None) -> np.ndarray:
        """Mean track statistics ``(K + 2,)`` of ``lattices`` lattices simulated at ``params``."""
        model = copy.deepcopy(self.simulator)
        set_values(model, params, key="params")
        picks = torch.randint(len(self.starts), (lattices,), generator=generator).tolist()
        labels, cell_types = (torch.stack(part) for part in zip(*(self.starts[i] for i in picks), strict=True))
        tracks, _ = simulate_tracks(model, model.state(labels, cell_types), self.burn_in, self.frames,
                                    self.mcs_per_frame, generator)
        return track_statistics(tracks, len(self.target) - 2).mean(0).double().numpy()

    def summary(self, params: dict[str, float], generator: torch.Generator | None = None) -> np.ndarray:
        """One simulation of ``lattices`` lattices (counted)."""
        self.simulations += 1
        return self.statistics(params, self.lattices, generator)

    def distance(self, a: np.ndarray, b: np.ndarray) -> float:
        return float(track_loss(torch.from_numpy(a), torch.from_numpy(b), self.weights))

    def evaluate(self, params: dict[str, float], seed: int = 12345) -> float:
        """The loss at ``params`` from ``eval_lattices`` lattices with the same noise for every call (not
        counted as a simulation of the method)."""
        return self.distance(self.statistics(params, self.eval_lattices, torch.Generator().manual_seed(seed)),
                             self.observed)


def parameter_error(estimate: dict[str, float], truth: dict[str, float], relative: bool = False) -> float:
    """Euclidean distance between estimate and truth over the problem's parameters, or with ``relative``
    the largest relative error (``param_rel_error``), for parameters on different scales."""
    if relative:
        return max(abs(estimate[name] - truth[name]) / abs(truth[name]) for name in truth)
    return float(np.sqrt(sum((estimate[name] - truth[name]) ** 2 for name in truth)))
