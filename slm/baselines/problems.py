r"""Calibration problems for the gradient-free baselines: a simulator, a summary and a discrepancy.

Each problem wraps the same simulator the approximate-gradient fit uses and exposes what ABC-SMC
and CMA-ES need: ``summary(params, generator)`` (one simulation, counted), the observed summary,
``distance(a, b)``, the names and true values of the parameters.

* :class:`SIProblem`: the SI model applied to every observed ``x_t`` of the training transitions.
  Summary: the number of unaware sites that turn aware, per number ``n = 0..8`` of aware
  neighbours (:func:`slm.models.si.transition_counts`, the statistic the MLE uses), divided by the
  number of unaware sites; for a spread field (``blocks``), per block and divided by the block's
  unaware sites, with one parameter ``beta[i]`` per block (row-major). The pixelwise MSE that the
  gradient fit minimises is not used here: its *expectation* is linear in each site's probability
  and is minimised away from the truth (``scripts/estimator_study.py``), so a gradient-free search on it
  would be biased.
* :class:`PRWProblem`: the persistent random walk, or a mixture of walker classes; summary: its MSD
  curve from ``walkers`` walkers (the gradient fit's batch), distance: the fit's relative loss
  ``sum_k ((s_k - m_k) / m_k)^2``; without a truth, :meth:`PRWProblem.evaluate` scores an estimate by
  that loss on the exact expected MSD.
* :class:`SummaryProblem`: a simulator with summary statistics over time (the multi-cell CPM);
  summary: the batch-mean summaries of ``lattices`` lattices (the gradient fit's batch) from random
  starting lattices, distance: the fit's loss (:class:`slm.tasks.SummaryFitting`, ``task.weights`` included).
* :class:`TrackProblem`: migrating cells (the act model) against tracks without a known truth;
  summary: the track statistics of ``lattices`` lattices (the fit's batch), distance: the fit's loss
  (:func:`slm.stats.track_loss`); :meth:`TrackProblem.evaluate` scores an estimate by that loss
  on a larger simulation with fixed noise, the measure the comparison puts the methods side by side on.

Every problem has ``bounds`` per parameter: the support of ABC-SMC's uniform prior and of CMA-ES's
search (default ``(0, 1)``, probabilities). ``from_data`` builds each from the data's declared target
(:mod:`slm.targets`) and the settings of the experiment's ``calibration`` config (``configs/calibration/``),
which interpolates the fit's own batch and loss weights: the baselines run on exactly the fit's data and loss.
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
from slm.parameters import flat_values, set_values, unflat_values
from slm.stats import TRACK_TERMS, track_objective
from slm.targets import MSDTarget, SummaryTarget, TrackTarget, TransitionTarget


def set_model_values(model: Simulator, params: dict[str, float]) -> None:
    """Set ``model``'s learnable parameters from numbers named as :func:`slm.parameters.flat_values` names them;
    class weights (searched each in ``(0, 1)``) are normalised to sum to one."""
    values = unflat_values(params, model.parameter_values())
    if "weights" in values:
        values["weights"] = values["weights"].clamp_min(1e-6) / values["weights"].clamp_min(1e-6).sum()
    set_values(model, values, key="params")


class SIProblem:
    """Recover ``beta`` (one, or one per block of ``blocks``) from SI transitions ``x -> y`` (float 0/1,
    shape ``(N, H, W)``); ``truth``: the true ``beta``, a number or a ``(by, bx)`` field."""

    def __init__(self, x: Tensor, y: Tensor, truth: float | list, blocks: tuple[int, int] | None = None):
        self.x = x
        self.blocks = blocks
        self.model = SI(blocks=blocks)
        self.truth = flat_values({"beta": torch.as_tensor(truth, dtype=torch.float64)})
        self.names = tuple(self.truth)
        self.bounds = {name: (0.0, 1.0) for name in self.names}
        counts = transition_counts(x, x, blocks)  # y = x: nothing turns, so column 0 counts the unaware sites
        self.unaware = counts[..., 0].sum(-1, keepdim=True).double().clamp_min(1).numpy()
        self.observed = self._turned(y)
        self.simulations = 0

    @classmethod
    def from_data(cls, target: TransitionTarget, blocks: list[int] | None = None) -> SIProblem:
        """The problem of the training transitions of simulated SI data, and their truth."""
        x, y = (torch.cat(parts) for parts in zip(*target.transitions(), strict=True))
        return cls(x.float(), y.float(), target.truth["beta"], None if blocks is None else tuple(blocks))

    def _turned(self, y: Tensor) -> np.ndarray:
        return (transition_counts(self.x, y, self.blocks)[..., 1].double().numpy() / self.unaware).reshape(-1)

    @torch.no_grad()
    def summary(self, params: dict[str, float], generator: torch.Generator | None = None) -> np.ndarray:
        """One simulation of every transition at ``params``; fraction turned per (block and) neighbour count,
        ``(9 d,)``."""
        self.simulations += 1
        beta = torch.tensor([params[name] for name in self.names]).reshape(self.blocks or ())
        set_values(self.model, {"beta": beta}, key="params")
        return self._turned(self.model(self.x, generator))

    @staticmethod
    def distance(a: np.ndarray, b: np.ndarray) -> float:
        return float(np.sqrt(((a - b) ** 2).sum()))


class PRWProblem:
    """Recover the persistent random walk's parameters (``p_center``, ``p_resample``; a mixture of ``classes``
    walker classes: ``p_center[k]``, ``p_resample[k]``, ``weights[k]``) from a target MSD curve ``(lags,)``.

    Every parameter is searched in (0, 1); a mixture's weights are normalised to sum to one. ``truth`` may be
    ``None`` (real tracks): then :meth:`evaluate` scores an estimate by the fit's relative loss on the
    walk's exact expected MSD, without simulation noise.
    """

    def __init__(self, target: Tensor, truth: dict[str, float] | None, walkers: int = 1500, mcs_per_frame: int = 1,
                 dx: float = 1.0, classes: int = 1):
        self.target = target
        self.truth = truth
        self.observed = target.double().numpy()
        self.walkers = walkers
        self.model = PersistentRandomWalk(mcs_per_frame=mcs_per_frame, dx=dx, classes=classes)
        self.names = tuple(flat_values(self.model.parameter_values()))
        self.bounds = {name: (0.0, 1.0) for name in self.names}
        self.simulations = 0

    @classmethod
    def from_data(cls, target: MSDTarget, walkers: int, mcs_per_frame: int = 1, dx: float = 1.0, classes: int = 1
                  ) -> PRWProblem:
        """The problem of a target MSD curve and, for simulated data, its truth."""
        return cls(target.msd, target.truth, walkers, mcs_per_frame, dx, classes)

    def _set(self, params: dict[str, float]) -> None:
        set_model_values(self.model, params)

    @torch.no_grad()
    def summary(self, params: dict[str, float], generator: torch.Generator | None = None) -> np.ndarray:
        """One simulation of ``walkers`` walkers; their MSD curve, ``(lags,)``."""
        self.simulations += 1
        self._set(params)
        return self.model.msd(self.walkers, len(self.target), generator).double().numpy()

    def distance(self, a: np.ndarray, b: np.ndarray) -> float:
        return float((((a - b) / self.observed) ** 2).sum())

    @torch.no_grad()
    def evaluate(self, params: dict[str, float]) -> float:
        """The fit's loss at ``params`` on the exact expected MSD (not counted as a simulation)."""
        self._set(params)
        return self.distance(self.model.expected_msd(len(self.target)).double().numpy(), self.observed)


class SummaryProblem:
    """Recover the parameters ``truth`` names of ``simulator`` from target summaries ``(F, m)`` over time.

    Args:
        simulator: the model as configured (its other values stay fixed).
        target: target summaries at frames ``1..F``, ``mcs_per_frame`` steps apart.
        truth: true values by name (what is fitted).
        bounds: ``(low, high)`` per fitted parameter.
        starts: items ``(labels, cell_types)`` of starting lattices (the fit's data set).
        lattices: lattices per simulation (the gradient fit's batch).
        weights: weight of each summary statistic by name (``task.weights``; default 1), as in the fit's loss.
    """

    def __init__(self, simulator: Simulator, target: Tensor, truth: dict[str, float],
                 bounds: dict[str, tuple[float, float]], starts: Dataset, lattices: int, mcs_per_frame: int,
                 weights: dict[str, float] | None = None):
        self.simulator = simulator
        self.target = target
        self.truth = dict(truth)
        self.names = tuple(truth)
        self.bounds = {name: tuple(bounds[name]) for name in self.names}
        self.observed = target.double().numpy()
        self.scale = np.abs(self.observed).mean(0).clip(1e-6)
        self.weights = np.array([float((weights or {}).get(name, 1.0)) for name in simulator.summary_names])
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
        series = model.rollout(model.state(labels, cell_types), len(self.target) * self.mcs_per_frame, generator,
                               record_every=self.mcs_per_frame, record=model.summary).frames[:, 1:]
        return series.mean(0).double().numpy()

    @classmethod
    def from_data(cls, target: SummaryTarget, simulator: Simulator, bounds: dict[str, list[float]], lattices: int,
                  weights: dict[str, float] | None = None) -> SummaryProblem:
        """The problem of target summaries over time with a simulated truth."""
        return cls(simulator, target.summaries, target.truth, bounds, target.starts, lattices, target.mcs_per_frame,
                   weights)

    def distance(self, a: np.ndarray, b: np.ndarray) -> float:
        """The fit's loss (:class:`slm.tasks.SummaryFitting`): weighted relative squares, summed over the
        statistics, averaged over the frames."""
        return float((self.weights * ((a - b) / self.scale) ** 2).sum(1).mean())


class TrackProblem:
    """Fit the learnable parameters of a migrating-cell ``simulator`` to target track statistics.

    A population of classes (``model.classes``: ``lambda_act[k]``, ``max_act[k]``, ``weights[k]``) has its
    lattices weighted as in the fit (:meth:`slm.models.base.Simulator.class_weighted`); its weights are searched
    each in ``(0, 1)`` and normalised to sum to one.

    Args:
        simulator: the model as configured (its other values stay fixed).
        target: the data's :class:`slm.targets.TrackTarget` (statistics in lattice units, tracks, starts).
        bounds: ``(low, high)`` per fitted parameter, by name (a vector's elements share their name's bounds;
            default ``(0, 1)``).
        lattices: lattices per simulation (the gradient fit's batch).
        weights: the loss weights (msd, speed, persistence).
        speed_distribution: weight of the per-track speed distribution term (``task.speed_distribution``).
        eval_lattices: lattices of :meth:`evaluate`.
    """

    truth = None

    def __init__(self, simulator: Simulator, target: TrackTarget, bounds: dict[str, list[float]], lattices: int,
                 weights: Tensor, speed_distribution: float = 0.0, eval_lattices: int = 64):
        self.simulator = simulator
        self.target = target
        self.names = tuple(flat_values(simulator.parameter_values()))
        self.bounds = {name: tuple(bounds.get(name.split("[")[0], (0.0, 1.0))) for name in self.names}
        self.speed_weight = float(speed_distribution)
        self.observed = target.full_statistics(self.speed_weight > 0).double().numpy()
        self.lattices, self.eval_lattices = lattices, eval_lattices
        self.weights = weights.double()
        self.simulations = 0

    @torch.no_grad()
    def statistics(self, params: dict[str, float], lattices: int, generator: torch.Generator | None) -> np.ndarray:
        """The population's mean track statistics (with the speed term: and speed distribution function) of
        ``lattices`` lattices simulated at ``params``."""
        model = copy.deepcopy(self.simulator)
        set_model_values(model, params)
        target = self.target
        picks = torch.randint(len(target.starts), (lattices,), generator=generator).tolist()
        labels, cell_types = (torch.stack(part) for part in zip(*(target.starts[i] for i in picks), strict=True))
        _, tracks = target.record(model, model.state(labels, cell_types), generator)
        statistics = target.track_statistics(tracks, self.speed_weight > 0)
        return model.class_weighted(statistics).mean(0).double().numpy()

    @classmethod
    def from_data(cls, target: TrackTarget, simulator: Simulator, bounds: dict[str, list[float]], lattices: int,
                  weights: dict[str, float] | None = None, speed_distribution: float = 0.0,
                  eval_lattices: int = 64) -> TrackProblem:
        """The problem of target track statistics, on the fit's loss with ``task.weights`` and
        ``task.speed_distribution``; the fitted parameters are the model's learnable ones, from their start."""
        terms = torch.tensor([float((weights or {}).get(n, 1.0)) for n in TRACK_TERMS])
        return cls(simulator, target, bounds, lattices, terms, speed_distribution, eval_lattices)

    def summary(self, params: dict[str, float], generator: torch.Generator | None = None) -> np.ndarray:
        """One simulation of ``lattices`` lattices (counted)."""
        self.simulations += 1
        return self.statistics(params, self.lattices, generator)

    def distance(self, a: np.ndarray, b: np.ndarray) -> float:
        """The fit's loss (:func:`slm.stats.track_objective`)."""
        return float(track_objective(torch.from_numpy(a), torch.from_numpy(b), self.weights, self.target.lags,
                                     self.speed_weight))

    def evaluate(self, params: dict[str, float], seed: int = 12345) -> float:
        """The loss at ``params`` from ``eval_lattices`` lattices with the same noise for every call (not
        counted as a simulation of the method)."""
        return self.distance(self.statistics(params, self.eval_lattices, torch.Generator().manual_seed(seed)),
                             self.observed)


def parameter_error(estimate: dict[str, float], truth: dict[str, float], kind: str = "euclidean") -> float:
    """How far ``estimate`` is from ``truth`` over the truth's parameters: the Euclidean distance, the largest
    relative error (``relative``, ``param_rel_error``, for parameters on different scales) or the root mean
    square error (``rmse``, for a field; names missing from ``estimate``, or NaN, are left out)."""
    if kind == "relative":
        return max(abs(estimate[name] - truth[name]) / abs(truth[name]) for name in truth)
    squares = [(estimate[name] - truth[name]) ** 2 for name in truth]
    if kind == "rmse":
        return float(np.sqrt(np.nanmean(squares)))
    return float(np.sqrt(sum(squares)))
