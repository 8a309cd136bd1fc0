"""Summary statistics of multi-cell lattices over time: from a simulated ground truth or a user's label stack.

Targets are the per-frame means of ``simulator.summary`` (for :class:`slm.models.CellularPotts`: the
heterotypic fraction, the mean and spread of the cell volumes and the number of same-type clusters)
at frames ``1..F``, ``mcs_per_frame`` steps apart, starting from frame 0. Every training item is one
starting lattice (labels and the type of every id).

* Simulated (``path`` null): ``lattices`` lattices placed by ``simulator.initial_state`` are run with
  the ``truth`` values (the others as configured), and the fit starts every step from fresh random
  placements. The truth is reported back, so ``results.json`` gets ``param_rel_error``.
* A user's file: ``.npz`` with ``labels`` ``(F + 1, H, W)`` or ``(L, F + 1, H, W)`` (integer ids, 0 =
  medium) and ``cell_types`` ``(C,)`` (the type of each id, 0 for the medium), or a ``.npy`` of labels
  with ``data.cell_types`` in the config. Frame 0 of each stack starts the fit.
"""

from __future__ import annotations

import copy
import logging

import lightning as L
import numpy as np
import torch
from torch import Tensor
from torch.utils.data import DataLoader, Dataset, DistributedSampler

from slm.errors import InputError
from slm.io import load_label_stack
from slm.models.base import Simulator
from slm.parameters import set_values
from slm.targets import SummaryTarget

log = logging.getLogger(__name__)


class StartingLattices(Dataset):
    """Item ``i``: ``(labels (*spatial), cell_types (C,))`` of one starting lattice: row ``i mod L`` of given
    ones, or a fresh placement by ``simulator.initial_state`` seeded with ``(seed, i)``."""

    def __init__(self, length: int, simulator: Simulator | None = None, size: tuple[int, ...] | None = None,
                 seed: int = 0, labels: Tensor | None = None, cell_types: Tensor | None = None):
        self.length, self.simulator, self.size, self.seed = length, simulator, size, seed
        self.labels, self.cell_types = labels, cell_types

    def __len__(self) -> int:
        return self.length

    def __getitem__(self, item: int) -> tuple[Tensor, Tensor]:
        if self.labels is not None:
            return self.labels[item % len(self.labels)], self.cell_types
        generator = torch.Generator().manual_seed(int(np.random.SeedSequence([self.seed, item]).generate_state(1)[0]))
        state = self.simulator.initial_state(1, self.size, generator=generator)
        return state.labels[0], state.cell_types[0]


class LatticeStatisticsDataModule(L.LightningDataModule):
    """Target summaries ``(F, m)`` over time and starting lattices (see the module docstring).

    Args:
        simulator: the model (as configured: ``${model}``); the simulated truth is a copy with ``truth``.
        truth: true values of the fitted parameters, by name (simulated data only).
        path: a user's ``.npz``/``.npy`` label stack, or ``None`` to simulate.
        cell_types: the type of each id for a ``.npy`` stack.
        dims: the lattice dimension of a file's stacks (3 for volumes), where the file does not say (a ``.npz``
            says so with a ``dims`` entry).
        size: lattice side(s) of the simulation: a side (a square), ``[H, W]`` or ``[D, H, W]`` (a 3D torus).
        frames, mcs_per_frame: ``F`` frames of the target, ``mcs_per_frame`` steps apart (a user's file
            gives ``F``).
        lattices: simulated truth lattices (their mean is the target).
        batch_size: lattices per gradient step (per device under DDP).
        steps_per_epoch: gradient steps per epoch.
        seed: seed of the truth simulation and of the starting placements.
        bootstrap: a bootstrap replicate of label stacks: the stacks drawn with replacement, seeded by this
            (``uq=bootstrap``'s refits); ``None``: the stacks as they are.
    """

    def __init__(self, simulator: Simulator, truth: dict | None = None, path: str | None = None,
                 cell_types: list[int] | None = None, size: int | list[int] = 100, frames: int = 5,
                 mcs_per_frame: int = 20, lattices: int = 16, batch_size: int = 4, steps_per_epoch: int = 50,
                 seed: int = 0, bootstrap: int | None = None, dims: int | None = None):
        super().__init__()
        for key, value in (("frames", frames), ("mcs_per_frame", mcs_per_frame), ("lattices", lattices),
                           ("batch_size", batch_size), ("steps_per_epoch", steps_per_epoch)):
            if not (isinstance(value, int) and value >= 1):
                raise InputError(f"data.{key}: expected a positive integer, got {value}")
        self.simulator = simulator
        self.path, self.table, self.dims = path, cell_types, dims
        self.size = (size, size) if isinstance(size, int) else tuple(size)
        if len(self.size) not in (2, 3) or any(not isinstance(side, int) or side < 4 or side % 2 for side in self.size):
            raise InputError(f"data.size: expected a side, [H, W] or [D, H, W] of even sides >= 4, got {size}")
        self.frames, self.mcs_per_frame, self.lattices = frames, mcs_per_frame, lattices
        self.batch_size, self.steps_per_epoch, self.seed = batch_size, steps_per_epoch, seed
        self.bootstrap = bootstrap
        #: true parameter values of simulated data (``None`` for a user's file)
        self.truth = None if path else {name: float(v) for name, v in (truth or {}).items()}
        self.target: Tensor | None = None
        self.spread: Tensor | None = None
        self.train_set: StartingLattices | None = None

    def setup(self, stage: str | None = None) -> None:
        if self.target is not None:
            return
        if self.path:
            labels, table = load_label_stack(self.path, self.table, dims=self.dims)
            stacks = torch.from_numpy(labels)
            cell_types = torch.from_numpy(table)
            with torch.no_grad():
                series = torch.stack([self.simulator.summary(self.simulator.state(stacks[:, f], cell_types))
                                      for f in range(1, stacks.shape[1])], 1)
            self.frames = stacks.shape[1] - 1
            self.train_set = StartingLattices(self.steps_per_epoch * self.batch_size, labels=stacks[:, 0],
                                              cell_types=cell_types)
            source = f"{len(stacks)} label stack(s) of {self.frames + 1} frames in {self.path}"
        else:
            truth = copy.deepcopy(self.simulator)
            set_values(truth, self.truth)
            generator = torch.Generator().manual_seed(self.seed)
            state = truth.initial_state(self.lattices, self.size, generator=generator)
            with torch.no_grad():
                series = truth.rollout(state, self.frames * self.mcs_per_frame, generator,
                                       record_every=self.mcs_per_frame, record=truth.summary).frames[:, 1:]
            self.train_set = StartingLattices(self.steps_per_epoch * self.batch_size, truth, self.size, self.seed + 1)
            source = f"{self.lattices} lattices simulated with {self.truth}"
        self.series = series
        self.target, self.spread = series.mean(0), series.std(0) if len(series) > 1 else torch.zeros_like(series[0])
        if self.bootstrap is not None and self.path:
            self.target = self.resample(np.random.default_rng(self.bootstrap))
        log.info("target summaries from %s: last frame %s", source,
                 " ".join(f"{v:.4g}" for v in self.target[-1].tolist()))

    def task_target(self) -> SummaryTarget:
        """The target summaries over time, their spread, the frame spacing, the starting lattices and the truth."""
        return SummaryTarget(truth=self.truth, summaries=self.target, spread=self.spread,
                             mcs_per_frame=self.mcs_per_frame, starts=self.train_set, units=len(self.series),
                             resample=self.resample if self.path and len(self.series) > 1 else None)

    def resample(self, rng: np.random.Generator) -> Tensor:
        """The mean summaries of the data's label stacks drawn with replacement (a bootstrap replicate)."""
        return self.series[torch.from_numpy(rng.integers(len(self.series), size=len(self.series)))].mean(0)

    def train_dataloader(self) -> DataLoader:
        return lattice_loader(self.train_set, self.batch_size, self.trainer)


def lattice_loader(starts: Dataset, batch_size: int, trainer: L.Trainer | None) -> DataLoader:
    """Batches of ``batch_size`` starting lattices, each DDP rank its own share, in order."""
    world, rank = (trainer.world_size, trainer.global_rank) if trainer is not None else (1, 0)
    sampler = DistributedSampler(starts, num_replicas=world, rank=rank, shuffle=False)
    return DataLoader(starts, batch_size=batch_size, sampler=sampler)
