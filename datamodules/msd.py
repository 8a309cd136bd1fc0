"""Target mean squared displacement (MSD) curves: given values, from a tracks CSV, or from a synthetic PRW."""

from __future__ import annotations

import logging
import math
from collections.abc import Iterator

import lightning as L
import numpy as np
import torch
from torch import Tensor
from torch.utils.data import DataLoader, IterableDataset

from slm.errors import InputError
from slm.io import Tracks, read_tracks
from slm.models.persistent_walk import PersistentRandomWalk
from slm.stats import track_msd
from slm.targets import MSDTarget

log = logging.getLogger(__name__)


class RepeatTarget(IterableDataset):
    """Yields the same target ``steps`` times: one epoch of a statistics fit is ``steps`` gradient steps."""

    def __init__(self, target: Tensor, steps: int):
        self.target = target
        self.steps = steps

    def __iter__(self) -> Iterator[Tensor]:
        return (self.target for _ in range(self.steps))

    def __len__(self) -> int:
        return self.steps


class MSDDataModule(L.LightningDataModule):
    """The MSD at lags ``1..lags`` frames that a statistics fit should match.

    With ``target``: those values, one per lag (``lags`` is ignored). Else with ``path``: a tracks CSV
    (``track_id,t,x,y[,z]``; see :func:`slm.io.read_tracks`), MSD over all tracks and start
    times, in the file's length unit squared; the frame interval is detected, and irregular steps
    beyond ``tolerance`` are refused. Else: a persistent random walk with ``p_center`` /
    ``p_resample`` simulated with ``n_walkers`` walkers (seeded by ``seed``).

    Args:
        target: explicit target MSD values, e.g. ``[3.0]`` for the CPM (``target_msd=3``).
        path: tracks CSV, or ``None`` for the synthetic target.
        lags: number of lags (frames) to fit.
        tolerance: allowed deviation of a time step from a whole number of frame intervals.
        p_center, p_resample, n_walkers, mcs_per_frame, dx: the synthetic simulation; with ``classes`` > 1 a
            mixture (``p_center`` and ``p_resample`` one value or one per class, class ``weights``).
        steps_per_epoch: gradient steps per epoch.
        seed: seed of the synthetic simulation.
        bootstrap: a bootstrap replicate of a tracks file: its tracks drawn with replacement, seeded by this
            (``uq=bootstrap``'s refits); ``None``: the tracks as they are.
    """

    def __init__(self, target: list[float] | None = None, path: str | None = None, lags: int = 10,
                 tolerance: float = 0.1, p_center: float = 0.2, p_resample: float = 0.1, n_walkers: int = 15000,
                 mcs_per_frame: int = 1, dx: float = 1.0, steps_per_epoch: int = 100, seed: int = 0, classes: int = 1,
                 weights: list[float] | None = None, bootstrap: int | None = None):
        super().__init__()
        if not (isinstance(lags, int) and lags >= 1):
            raise InputError(f"data.lags: expected a positive integer, got {lags}")
        if steps_per_epoch < 1:
            raise InputError(f"data.steps_per_epoch: expected a positive integer, got {steps_per_epoch}")
        self.save_hyperparameters(logger=False)
        #: the true walk of a synthetic target (``param_rel_error`` in ``results.json``)
        self.truth = None
        if target is None and not path:  # as given (a mixture's as the walk spreads them over its classes)
            walk = self.walk()
            self.truth = ({"p_center": float(p_center), "p_resample": float(p_resample)} if classes == 1 else
                          {name: value.tolist() for name, value in walk.parameter_values().items()})
        self.target: Tensor | None = None
        self.frame_interval: float | None = None
        self.tracks: Tracks | None = None
        if target is not None:
            values = [target] if isinstance(target, int | float | str) else list(target)
            if not values or not all(isinstance(v, int | float) and math.isfinite(v) and v > 0 for v in values):
                raise InputError(f"data.target (target_msd): expected positive finite MSD values, got {target}")
            self.target = torch.tensor([float(v) for v in values])

    def setup(self, stage: str | None = None) -> None:
        if self.target is not None:
            return
        hp = self.hparams
        if hp.path:
            tracks = self.tracks = read_tracks(hp.path, hp.tolerance)
            self.target = torch.tensor(track_msd(tracks, hp.lags), dtype=torch.float32)
            if hp.bootstrap is not None:
                self.target = self.resample(np.random.default_rng(hp.bootstrap))
            self.frame_interval = tracks.frame_interval
            log.info("target MSD from %d tracks in %s (frame interval %g): %s", len(tracks.ids), hp.path,
                     tracks.frame_interval, " ".join(f"{v:.3g}" for v in self.target.tolist()))
        else:
            with torch.no_grad():
                self.target = self.walk().msd(hp.n_walkers, hp.lags, torch.Generator().manual_seed(hp.seed))
            log.info("synthetic target MSD (%s, %d walkers): %s", self.truth, hp.n_walkers,
                     " ".join(f"{v:.3g}" for v in self.target.tolist()))

    def walk(self) -> PersistentRandomWalk:
        """The walk of the synthetic target."""
        hp = self.hparams
        return PersistentRandomWalk(hp.p_center, hp.p_resample, mcs_per_frame=hp.mcs_per_frame, dx=hp.dx,
                                    classes=hp.classes, weights=hp.weights)

    def resample(self, rng: np.random.Generator) -> Tensor:
        """The MSD of the tracks drawn with replacement (a bootstrap replicate of the target)."""
        positions = self.tracks.positions[rng.integers(len(self.tracks.ids), size=len(self.tracks.ids))]
        replicate = Tracks(positions, self.tracks.frame_interval, self.tracks.ids)
        return torch.tensor(track_msd(replicate, self.hparams.lags), dtype=torch.float32)

    def task_target(self) -> MSDTarget:
        """The target MSD, its frame interval, the truth, and its units: the tracks of a file (resampled by the
        bootstrap) or the walkers of a synthetic target; given values have none."""
        units = len(self.tracks.ids) if self.tracks else (self.hparams.n_walkers if self.truth else 0)
        return MSDTarget(truth=self.truth, msd=self.target, frame_interval=self.frame_interval, units=units,
                         resample=self.resample if self.tracks else None)

    def train_dataloader(self) -> DataLoader:
        return DataLoader(RepeatTarget(self.target, self.hparams.steps_per_epoch), batch_size=None)
