"""What a fitting task needs from its data: one typed object per kind of data, handed to the task by
:func:`slm.config.build_task_and_data` (a data module's ``task_target()`` after ``setup``).

A task reads its targets, units and truth from this object only, never from the data module's attributes,
so a task and a data module agree on a declared interface and either can be replaced.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass
from functools import cached_property

import numpy as np
import torch
from torch import Tensor
from torch.utils.data import Dataset

from slm.errors import InputError
from slm.models.base import Simulator, State
from slm.observation import Observation
from slm.stats import SPEED_LEVELS, speed_distribution, track_speeds, track_statistics, weighted_quantiles


@dataclass(kw_only=True)
class Target:
    """``truth``: the true parameter values of simulated data, by name (``None`` for real data).

    For the uncertainty of a fit (:mod:`slm.uncertainty`): ``units``, the number of independent units behind the
    data's statistics (walkers, tracks, lattices), and ``resample(rng)``, the data's statistics again from its
    units drawn with replacement (a nonparametric bootstrap of real data), or ``None`` where the data were
    simulated (their spread then comes from simulations at the estimate)."""

    truth: dict | None = None
    units: int = 0
    resample: Callable[[np.random.Generator], Tensor] | None = None


@dataclass(kw_only=True)
class TransitionTarget(Target):
    """Observed transitions: ``transitions()`` iterates over every training pair ``(x_t, x_{t+1})`` in batches."""

    transitions: Callable[[], Iterable[tuple[Tensor, Tensor]]]


@dataclass(kw_only=True)
class MSDTarget(Target):
    """A target MSD curve ``msd (lags,)`` and the time between frames (``None``: in frames)."""

    msd: Tensor
    frame_interval: float | None = None


@dataclass(kw_only=True)
class ImageTarget(Target):
    """An image ``(H, W)`` in [0, 1] and its ground-truth mask (an empty tensor when there is none)."""

    image: Tensor
    mask: Tensor


@dataclass(kw_only=True)
class SummaryTarget(Target):
    """Target summaries over time ``(F, m)`` with their spread over lattices, ``mcs_per_frame`` steps apart, and
    starting lattices ``starts`` (items ``(labels, cell_types)``) for the final evaluation."""

    summaries: Tensor
    spread: Tensor
    mcs_per_frame: int
    starts: Dataset


@dataclass(kw_only=True)
class TrackTarget(Target):
    """Target :func:`slm.stats.track_statistics` ``(lags + 2,)`` in lattice units, how simulated tracks are
    recorded (``burn_in`` MCS, then ``frames`` frames of ``mcs_per_frame`` MCS, seen through ``observation``;
    ``frame_residual``: the frame interval's MCS less ``mcs_per_frame``), the units (``um_per_site``,
    ``frame_interval`` in s), up to 20 ``examples`` of the data's tracks ``(N, T, 2)`` in um, starting
    lattices ``starts``, every data track's mean speed ``track_speeds (N,)`` (lattice units per frame) and number of
    steps ``track_steps (N,)``, and ``resample_tracks(rng)``: a bootstrap replicate's statistics and its tracks' mean
    speeds and steps (real data)."""

    statistics: Tensor
    names: tuple[str, ...]
    lags: int
    burn_in: int
    frames: int
    mcs_per_frame: int
    um_per_site: float
    frame_interval: float
    examples: np.ndarray | None
    starts: Dataset
    observation: Observation
    frame_residual: float = 0.0
    track_speeds: Tensor | None = None
    track_steps: Tensor | None = None
    resample_tracks: Callable[[np.random.Generator], tuple[Tensor, Tensor, Tensor]] | None = None

    def speed_function(self, speeds: Tensor, steps: Tensor) -> Tensor:
        """:func:`slm.stats.speed_distribution` of per-track mean speeds ``(..., N)`` with their ``steps`` at the
        data's step-weighted quantiles :data:`slm.stats.SPEED_LEVELS`, width a tenth of their median,
        ``(..., J)``."""
        thresholds, width = self._speed_thresholds
        return speed_distribution(speeds, steps, thresholds.to(speeds.device, speeds.dtype), width)

    @cached_property
    def _speed_thresholds(self) -> tuple[Tensor, float]:
        """The data's step-weighted per-track speed quantiles ``(J,)`` and a tenth of their median (once)."""
        if self.track_speeds is None:
            raise InputError("task.speed_distribution: the data give no per-track speeds")
        present = self.track_speeds.isfinite()
        data = self.track_speeds[present].float().cpu()
        thresholds = weighted_quantiles(data, self.track_steps[present].float().cpu(), torch.tensor(SPEED_LEVELS))
        return thresholds, 0.1 * float(thresholds[len(SPEED_LEVELS) // 2])

    def record(self, simulator: Simulator, state: State, generator: torch.Generator | None = None,
               checkpoint_every: int | None = None) -> tuple[State, Tensor]:
        """The final state and the tracks ``(B, N, F + 1, d)`` that :attr:`observation` records of ``simulator``'s
        cells from ``state``: ``burn_in`` MCS, then ``frames`` frames of ``mcs_per_frame`` MCS."""
        state, frames = simulator.tracks(state, self.frames, self.mcs_per_frame, generator, self.burn_in,
                                         checkpoint_every)
        return state, self.observation(frames.transpose(1, 2), generator)

    def track_statistics(self, tracks: Tensor, speeds: bool = False) -> Tensor:
        """Per-lattice :func:`slm.stats.track_statistics` of tracks ``(B, N, F + 1, d)``, ``(B, lags + 2)``;
        with ``speeds`` the distribution function of the per-track mean speeds appended, ``(B, lags + 2 + J)``."""
        statistics = track_statistics(tracks, self.lags)
        if not speeds:
            return statistics
        return torch.cat([statistics, self.speed_function(*track_speeds(tracks))], -1)

    def full_statistics(self, speeds: bool = False) -> Tensor:
        """The target statistics, with ``speeds`` the data's speed distribution function appended."""
        if not speeds:
            return self.statistics
        device = self.statistics.device
        return torch.cat([self.statistics, self.speed_function(self.track_speeds.to(device),
                                                               self.track_steps.to(device))])

    def physical(self, statistics: Tensor) -> Tensor:
        """Statistics in lattice units to the data's: MSD in um^2, speed in um per minute, persistence as is."""
        scale = torch.tensor([self.um_per_site ** 2] * self.lags + [self.um_per_site * 60 / self.frame_interval, 1.0],
                             device=statistics.device, dtype=statistics.dtype)
        return statistics * scale
