"""Track statistics of migrating cells: from a tracks CSV (real cells) or a simulated ground truth.

Targets are :func:`slm.stats.track_statistics` (MSD at lags ``1..lags`` frames, mean speed per frame,
persistence) in *lattice units*: lengths over ``um_per_site``. A frame of the data is the whole number of MCS
nearest ``frame_interval / seconds_per_mcs`` (a warning and the residual when it is not whole). Every
training item is one starting lattice placed by ``simulator.initial_state`` (cells at rest; the fit runs
``burn_in`` MCS before recording ``frames + 1`` positions per cell).

How the simulated cells are seen (:class:`slm.observation.Observation`): through ``window`` (default the whole
lattice), tracks cut where a cell leaves it, points missed at the data's gap rate (``gaps``), tracks shorter
than the data's shortest dropped (``min_points``), a localisation error added (``noise``). The lattice's
dimension (``size``: a side or ``[H, W]``: 2D; ``[D, H, W]``: 3D) decides how tracks are compared: a 3D file
on a 2D lattice is projected to XY; a 2D file on a 3D lattice sees the model's XY (lattice axes 1, 2);
otherwise as they are. Lattice axes run ``(z,) y, x``: ``window: [data, 0.6, 0.6]`` on a 3D lattice takes the
imaging depth from the file's z range.

* A tracks CSV (``path``): columns ``track_id,t,x,y[,z]`` as :func:`slm.io.read_tracks` (gaps
  allowed, the frame interval detected), lengths in um, times in s.
* Simulated (``path`` null): ``lattices`` lattices run with the ``truth`` values (frame interval
  ``frame_interval``), seen through the same window (no gaps, no tracks dropped unless ``gaps`` and
  ``min_points`` say so); the truth is reported back, so ``results.json`` gets ``param_rel_error``.
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
from slm.observation import Observation, window_bounds
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
        seconds_per_mcs: time of one MCS in the file's unit (s); a frame is the nearest whole number of MCS.
        frame_interval: seconds between frames of a simulated target.
        size: lattice side(s): a side or ``[H, W]`` (2D), ``[D, H, W]`` (3D).
        window: the imaging window, per lattice axis a fraction of the side (up to 1), a width in sites or
            ``data`` (the file's extent); ``None``: the whole lattice.
        gaps: the rate at which points are missed: ``data`` (a file's rate; 0 for a simulated target) or a number.
        min_points: simulated tracks with fewer points are dropped; ``None``: a file's shortest track (1 for a
            simulated target).
        noise: the tracker's localisation error, a standard deviation per coordinate in the file's unit (um),
            added to every simulated point.
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
                 bootstrap: int | None = None, window: list | None = None, gaps: str | float = "data",
                 min_points: int | None = None, noise: float = 0.0):
        super().__init__()
        for key, value in (("lags", lags), ("frames", frames), ("lattices", lattices), ("batch_size", batch_size),
                           ("steps_per_epoch", steps_per_epoch)):
            if not (isinstance(value, int) and value >= 1):
                raise InputError(f"data.{key}: expected a positive integer, got {value}")
        if not (isinstance(burn_in, int) and burn_in >= 0):
            raise InputError(f"data.burn_in: expected a number of MCS >= 0, got {burn_in}")
        if frames <= lags:
            raise InputError(f"data.frames: expected more recorded frames than data.lags ({lags}), got {frames}")
        if isinstance(noise, bool) or not isinstance(noise, int | float) or not (math.isfinite(noise) and noise >= 0):
            raise InputError(f"data.noise: expected a localisation error >= 0 (um), got {noise!r}")
        for key, value in (("um_per_site", um_per_site), ("seconds_per_mcs", seconds_per_mcs),
                           ("frame_interval", frame_interval)):
            if isinstance(value, bool) or not isinstance(value, int | float) or not (
                    math.isfinite(value) and value > 0):
                raise InputError(f"data.{key}: expected a positive number, got {value!r}")
        if min_points is not None and not (isinstance(min_points, int) and min_points >= 1):
            raise InputError(f"data.min_points: expected a positive number of points or null, got {min_points!r}")
        if gaps != "data" and (isinstance(gaps, bool) or not isinstance(gaps, int | float) or not 0 <= gaps < 1):
            raise InputError(f"data.gaps: expected 'data' or a rate in [0, 1), got {gaps!r}")
        sides = [size] * 2 if isinstance(size, int) else list(size)
        if not (len(sides) in (2, 3) and all(isinstance(n, int) and n >= 1 for n in sides)):
            raise InputError(f"data.size: expected a side, [H, W] or [D, H, W] in sites, got {size!r}")
        # its checks before any compute; a file's extent ('data') is known once it is read
        window_bounds(window, sides, None if path is None else [1.0] * len(sides))
        if not callable(getattr(simulator, "positions", None)):
            raise InputError(f"model: track fitting needs a model with cell positions (e.g. slm.models.ActPotts), "
                             f"got {type(simulator).__name__}")
        self.simulator, self.path, self.lags = simulator, path, lags
        self.um_per_site, self.seconds_per_mcs, self.frame_interval = float(um_per_site), float(seconds_per_mcs), \
            float(frame_interval)
        self.size = tuple(sides)
        self.window, self.gaps, self.min_points, self.noise = window, gaps, min_points, float(noise)
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
        self.frame_residual = 0.0
        self.observation: Observation | None = None
        self.train_set: StartingLattices | None = None

    def mcs_per_frame_of(self, interval: float) -> int:
        """MCS of one frame ``interval`` seconds long: the nearest whole number (a warning with the residual when
        it is not whole, kept in :attr:`frame_residual`)."""
        ratio = interval / self.seconds_per_mcs
        if round(ratio) < 1:
            raise InputError(f"data.seconds_per_mcs: a frame of {interval:g} s is shorter than half an MCS of "
                             f"{self.seconds_per_mcs:g} s")
        self.frame_residual = ratio - round(ratio)
        if abs(self.frame_residual) > 1e-6 * ratio:
            log.warning("a frame of %g s is %.3f MCS of %g s; simulating %d MCS per frame (residual %+.3f MCS, "
                        "%+.1f%%: one MCS stands for %.4g s)", interval, ratio, self.seconds_per_mcs, round(ratio),
                        self.frame_residual, 100 * self.frame_residual / ratio, interval / round(ratio))
        return round(ratio)

    def setup(self, stage: str | None = None) -> None:
        if self.target is not None:
            return
        dims = len(self.size)
        if self.path:
            tracks = read_tracks(self.path, self.tolerance)
            if tracks.n_frames <= self.lags + 1:
                raise InputError(f"data.path: the tracks in {self.path} span at most {tracks.n_frames} frames; "
                                 f"data.lags={self.lags} needs {self.lags + 2}")
            self.frame_interval = tracks.frame_interval
            self.mcs_per_frame = self.mcs_per_frame_of(tracks.frame_interval)
            data = tracks.positions if tracks.positions.shape[-1] <= dims else tracks.positions[..., :2]
            if data.shape[-1] < tracks.positions.shape[-1]:
                log.info("the 3D tracks of %s are fitted in XY on the 2D lattice (data.size: [D, H, W] fits them "
                         "in 3D)", self.path)
            present = np.isfinite(data[..., 0])
            spans = data.shape[1] - present[:, ::-1].argmax(1) - present.argmax(1)
            gap_rate = 1 - present.sum() / spans.sum()
            extent = (np.nanmax(data, (0, 1)) - np.nanmin(data, (0, 1)))[::-1] / self.um_per_site
            observation = self.observation_of(extent, int(present.sum(1).min()), gap_rate, data.shape[-1])
            positions = torch.from_numpy(data) / self.um_per_site
            self.target = track_statistics(positions, self.lags).float()
            self.units, self.positions = len(tracks.ids), positions
            self.speeds, self.track_steps = track_speeds(positions)
            self.speeds = self.speeds.float()
            if self.bootstrap is not None:
                self.target = self.resample(np.random.default_rng(self.bootstrap))
            self.examples = data[:20, : self.frames + 1, :2]  # as long as the simulated ones
            source = f"{len(tracks.ids)} tracks in {self.path}"
            placer = copy.deepcopy(self.simulator)  # placements need no graph of the fitted parameters
            starts = StartingLattices(self.steps_per_epoch * self.batch_size, placer, self.size, self.seed)
        else:
            self.mcs_per_frame = self.mcs_per_frame_of(self.frame_interval)
            observation = self.observation_of(None, 1, 0.0, dims)
            truth = copy.deepcopy(self.simulator)
            set_values(truth, self.truth)
            generator = torch.Generator().manual_seed(self.seed)
            with torch.no_grad():
                state = truth.initial_state(self.lattices, self.size, generator=generator)
                frames = truth.tracks(state, self.frames, self.mcs_per_frame, generator, self.burn_in).frames
                tracks = observation(frames.transpose(1, 2), generator)
            self.target = track_statistics(tracks.flatten(0, 1), self.lags)
            self.speeds, self.track_steps = track_speeds(tracks.flatten(0, 1))
            self.units, self.positions = self.lattices, None
            self.examples = tracks.flatten(0, 1)[:20].numpy() * self.um_per_site
            source = f"{self.lattices} lattices simulated with {self.truth}"
            starts = StartingLattices(self.steps_per_epoch * self.batch_size, truth, self.size, self.seed + 1)
        if self.frames + 1 < observation.min_points:
            raise InputError(f"data.frames: simulated tracks of at most {self.frames + 1} points are all shorter than "
                             f"the data's shortest ({observation.min_points} points) and would be dropped; raise "
                             f"data.frames or lower data.min_points")
        self.train_set, self.observation = starts, observation
        log.info("target track statistics from %s (%d MCS per frame): %s", source, self.mcs_per_frame,
                 " ".join(f"{n}={v:.4g}" for n, v in zip(self.names, self.target.tolist(), strict=True)))

    def observation_of(self, extent: np.ndarray | None, shortest: int, gap_rate: float, data_dims: int
                       ) -> Observation:
        """The :class:`slm.observation.Observation` of this config for data of ``data_dims`` coordinates whose
        ``extent`` per lattice axis (sites), shortest track (points) and gap rate are given."""
        dims = len(self.size)
        if extent is not None and len(extent) < dims:
            extent = np.concatenate([[np.nan] * (dims - len(extent)), extent])
        window = window_bounds(self.window, self.size, extent)
        if window is not None and not all(np.isfinite(window).ravel()):
            raise InputError("data.window: 'data' on the depth axis needs 3D tracks (the file has x, y only)")
        return Observation(self.size, window, shortest if self.min_points is None else self.min_points,
                           gap_rate if self.gaps == "data" else float(self.gaps), self.noise / self.um_per_site,
                           (1, 2) if dims > data_dims else None)

    def task_target(self) -> TrackTarget:
        """The target track statistics, how tracks are recorded, the units, examples, starting lattices, truth."""
        return TrackTarget(truth=self.truth, statistics=self.target, names=self.names, lags=self.lags,
                           burn_in=self.burn_in, frames=self.frames, mcs_per_frame=self.mcs_per_frame,
                           um_per_site=self.um_per_site, frame_interval=self.frame_interval, examples=self.examples,
                           starts=self.train_set, observation=self.observation, frame_residual=self.frame_residual,
                           units=self.units, track_speeds=self.speeds,
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
