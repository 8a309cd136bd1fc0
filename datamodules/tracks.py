"""Track statistics of migrating cells: from a tracks CSV (real cells) or a simulated ground truth.

Targets are :func:`slm.stats.track_statistics` (MSD at lags ``1..lags`` frames, mean speed per frame,
persistence) in *lattice units*: lengths over ``um_per_site``. A frame of the data is
``frame_interval / seconds_per_mcs`` MCS of the model (a whole number). Every training item is one
starting lattice placed by ``simulator.initial_state`` (cells at rest; the fit runs ``burn_in`` MCS
before recording ``frames + 1`` positions per cell).

* A tracks CSV (``path``): columns ``track_id,t,x,y[,z]`` as :func:`slm.io.read_tracks` (gaps
  allowed, the frame interval detected), lengths in um, times in s.
* Simulated (``path`` null): ``lattices`` lattices run with the ``truth`` values (frame interval
  ``frame_interval``); the truth is reported back, so ``results.json`` gets ``param_rel_error``.
"""

from __future__ import annotations

import copy
import logging
import math

import lightning as L
import numpy as np
import torch
from torch import Tensor
from torch.utils.data import DataLoader

from datamodules.potts import StartingLattices, lattice_loader
from slm.errors import InputError
from slm.io import read_tracks
from slm.models.base import Simulator
from slm.parameters import set_values
from slm.stats import track_speeds, track_statistic_names, track_statistics
from slm.targets import TrackTarget

log = logging.getLogger(__name__)


class TrackStatisticsDataModule(L.LightningDataModule):
    """Target track statistics and starting lattices (see the module docstring).

    Args:
        simulator: the model (``${model}``, with ``positions``); the simulated truth is a copy with ``truth``.
        truth: true values of the fitted parameters (simulated target only).
        path: tracks CSV, or ``None`` to simulate.
        lags: MSD lags ``1..lags`` frames.
        um_per_site: length of a lattice site in the file's unit (um).
        seconds_per_mcs: time of one MCS in the file's unit (s); the frame interval must be a whole
            number of MCS.
        frame_interval: seconds between frames of a simulated target.
        size: lattice side(s).
        burn_in: MCS before the first recorded frame (the cells polarise).
        frames: recorded frames per simulated track after frame 0 (``> lags``).
        lattices: lattices of a simulated target.
        batch_size: lattices per gradient step (per device under DDP).
        steps_per_epoch: gradient steps per epoch.
        tolerance: allowed deviation of a time step from a whole number of frame intervals.
        seed: seed of the simulated target and the starting placements.
        bootstrap: a bootstrap replicate of a tracks file: its tracks drawn with replacement, seeded by this
            (``uq=bootstrap``'s refits); ``None``: the tracks as they are.
    """

    def __init__(self, simulator: Simulator, truth: dict | None = None, path: str | None = None, lags: int = 10,
                 um_per_site: float = 1.0, seconds_per_mcs: float = 3.0, frame_interval: float = 24.0,
                 size: int | list[int] = 40, burn_in: int = 50, frames: int = 16, lattices: int = 32,
                 batch_size: int = 16, steps_per_epoch: int = 25, tolerance: float = 0.1, seed: int = 0,
                 bootstrap: int | None = None):
        super().__init__()
        for key, value in (("lags", lags), ("frames", frames), ("lattices", lattices), ("batch_size", batch_size),
                           ("steps_per_epoch", steps_per_epoch)):
            if not (isinstance(value, int) and value >= 1):
                raise InputError(f"data.{key}: expected a positive integer, got {value}")
        if not (isinstance(burn_in, int) and burn_in >= 0):
            raise InputError(f"data.burn_in: expected a number of MCS >= 0, got {burn_in}")
        if frames <= lags:
            raise InputError(f"data.frames: expected more recorded frames than data.lags ({lags}), got {frames}")
        for key, value in (("um_per_site", um_per_site), ("seconds_per_mcs", seconds_per_mcs),
                           ("frame_interval", frame_interval)):
            if isinstance(value, bool) or not isinstance(value, int | float) or not (
                    math.isfinite(value) and value > 0):
                raise InputError(f"data.{key}: expected a positive number, got {value!r}")
        if not callable(getattr(simulator, "positions", None)):
            raise InputError(f"model: track fitting needs a model with cell positions (e.g. slm.models.ActPotts), "
                             f"got {type(simulator).__name__}")
        self.simulator, self.path, self.lags = simulator, path, lags
        self.um_per_site, self.seconds_per_mcs, self.frame_interval = float(um_per_site), float(seconds_per_mcs), \
            float(frame_interval)
        self.size = (size, size) if isinstance(size, int) else tuple(size)
        self.burn_in, self.frames, self.lattices = burn_in, frames, lattices
        self.batch_size, self.steps_per_epoch, self.tolerance, self.seed = batch_size, steps_per_epoch, tolerance, seed
        self.bootstrap = bootstrap
        #: true parameter values of a simulated target (``None`` for a file)
        self.truth = None if path else {name: float(v) for name, v in (truth or {}).items()}
        #: column names of :attr:`target`
        self.names = track_statistic_names(lags)
        self.target: Tensor | None = None
        #: every target track's mean speed (lattice units per frame)
        self.speeds: Tensor | None = None
        self.track_steps: Tensor | None = None
        #: up to 20 target tracks ``(N, frames + 1, 2)`` in um (NaN in gaps), for figures
        self.examples: np.ndarray | None = None
        self.mcs_per_frame: int | None = None
        self.train_set: StartingLattices | None = None

    def mcs_per_frame_of(self, interval: float) -> int:
        """MCS of one frame ``interval`` seconds long (a whole number, else a one-line error)."""
        ratio = interval / self.seconds_per_mcs
        if round(ratio) < 1 or abs(ratio - round(ratio)) > 1e-6 * ratio:
            raise InputError(f"data.seconds_per_mcs: the frame interval {interval:g} s is not a whole number of MCS "
                             f"of {self.seconds_per_mcs:g} s")
        return round(ratio)

    def setup(self, stage: str | None = None) -> None:
        if self.target is not None:
            return
        if self.path:
            tracks = read_tracks(self.path, self.tolerance)
            if tracks.n_frames <= self.lags + 1:
                raise InputError(f"data.path: the tracks in {self.path} span at most {tracks.n_frames} frames; "
                                 f"data.lags={self.lags} needs {self.lags + 2}")
            self.frame_interval = tracks.frame_interval
            self.mcs_per_frame = self.mcs_per_frame_of(tracks.frame_interval)
            positions = torch.from_numpy(tracks.positions[..., :2]) / self.um_per_site
            self.target = track_statistics(positions, self.lags).float()
            self.units, self.positions = len(tracks.ids), positions
            self.speeds, self.track_steps = track_speeds(positions)
            self.speeds = self.speeds.float()
            if self.bootstrap is not None:
                self.target = self.resample(np.random.default_rng(self.bootstrap))
            self.examples = tracks.positions[:20, : self.frames + 1, :2]  # as long as the simulated ones
            source = f"{len(tracks.ids)} tracks in {self.path}"
            placer = copy.deepcopy(self.simulator)  # placements need no graph of the fitted parameters
            starts = StartingLattices(self.steps_per_epoch * self.batch_size, placer, self.size, self.seed)
        else:
            self.mcs_per_frame = self.mcs_per_frame_of(self.frame_interval)
            truth = copy.deepcopy(self.simulator)
            set_values(truth, self.truth)
            generator = torch.Generator().manual_seed(self.seed)
            with torch.no_grad():
                state = truth.initial_state(self.lattices, self.size, generator=generator)
                recording = truth.tracks(state, self.frames, self.mcs_per_frame, generator, self.burn_in)
            tracks = recording.frames.transpose(1, 2)
            self.target = track_statistics(tracks.flatten(0, 1), self.lags)
            self.speeds, self.track_steps = track_speeds(tracks.flatten(0, 1))
            self.units, self.positions = self.lattices, None
            self.examples = tracks.flatten(0, 1)[:20].numpy() * self.um_per_site
            source = f"{self.lattices} lattices simulated with {self.truth}"
            starts = StartingLattices(self.steps_per_epoch * self.batch_size, truth, self.size, self.seed + 1)
        self.train_set = starts
        log.info("target track statistics from %s (%d MCS per frame): %s", source, self.mcs_per_frame,
                 " ".join(f"{n}={v:.4g}" for n, v in zip(self.names, self.target.tolist(), strict=True)))

    def task_target(self) -> TrackTarget:
        """The target track statistics, how tracks are recorded, the units, examples, starting lattices, truth."""
        return TrackTarget(truth=self.truth, statistics=self.target, names=self.names, lags=self.lags,
                           burn_in=self.burn_in, frames=self.frames, mcs_per_frame=self.mcs_per_frame,
                           um_per_site=self.um_per_site, frame_interval=self.frame_interval, examples=self.examples,
                           starts=self.train_set, units=self.units, track_speeds=self.speeds,
                           track_steps=self.track_steps,
                           resample=None if self.positions is None else self.resample,
                           resample_tracks=None if self.positions is None else self.resample_tracks)

    def resample(self, rng: np.random.Generator) -> Tensor:
        """The statistics of the data's tracks drawn with replacement (a bootstrap replicate of the target)."""
        return self.resample_tracks(rng)[0]

    def resample_tracks(self, rng: np.random.Generator) -> tuple[Tensor, Tensor, Tensor]:
        """A bootstrap replicate of the data's tracks: their statistics, each drawn track's mean speed and steps."""
        picks = torch.from_numpy(rng.integers(self.units, size=self.units))
        return track_statistics(self.positions[picks], self.lags).float(), self.speeds[picks], self.track_steps[picks]

    def train_dataloader(self) -> DataLoader:
        return lattice_loader(self.train_set, self.batch_size, self.trainer)
