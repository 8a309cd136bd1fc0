"""SI transitions ``(x_t, x_{t+1})`` from reference simulations or from the user's ``.npz`` file."""

from __future__ import annotations

import logging
import math
from collections.abc import Iterator
from pathlib import Path

import lightning as L
import torch
from skimage import transform
from torch import Tensor
from torch.utils.data import DataLoader, Dataset, DistributedSampler

from datamodules.images import IMAGE_SUFFIXES
from slm.errors import InputError
from slm.io import load_frames, load_image
from slm.lattice import block_field, block_shape
from slm.models.si import check_blocks, simulate_si
from slm.parameters import Probability
from slm.targets import TransitionTarget

#: the fields of spread coefficients the reference data can be simulated from, besides an image
FIELDS = ("smooth",)

log = logging.getLogger(__name__)


def smooth_field(blocks: tuple[int, int]) -> Tensor:
    """``0.5 + 0.25 sin(2 pi u) + 0.25 cos(2 pi v)`` at the centres ``(u, v)`` of ``by x bx`` blocks of the unit
    torus, in [0, 1]: one smooth, periodic bump per lattice, ``(by, bx)``."""
    u = (torch.arange(blocks[0], dtype=torch.float64) + 0.5) / blocks[0]
    v = (torch.arange(blocks[1], dtype=torch.float64) + 0.5) / blocks[1]
    return 0.5 + 0.25 * torch.sin(2 * math.pi * u)[:, None] + 0.25 * torch.cos(2 * math.pi * v)[None, :]


def field_map(field: str, blocks: tuple[int, int], low: float, high: float) -> Tensor:
    """The true spread field ``(by, bx)`` in ``[low, high]``: ``smooth`` (:func:`smooth_field`) or an image file,
    averaged over each block (scikit-image's anti-aliased resize) and scaled from its own min-max."""
    if field == "smooth":
        shape = smooth_field(blocks)
    elif Path(field).suffix.lower() in IMAGE_SUFFIXES:
        image = load_image(field, key="truth.field")
        shape = torch.from_numpy(transform.resize(image, blocks, anti_aliasing=True, mode="reflect"))
        shape = (shape - shape.min()) / (shape.max() - shape.min()).clamp_min(1e-12)
    else:
        raise InputError(f"truth.field: expected {' or '.join(FIELDS)} or an image file "
                         f"({', '.join(IMAGE_SUFFIXES)}), got {field!r}")
    return low + (high - low) * shape


class TransitionWindows(Dataset):
    """Sliding windows ``(frames[s, t], frames[s, t + 1])`` for the given ``(s, t)`` index pairs.

    Batches are fetched with one vectorised gather (``__getitems__``), as uint8 ``(B, H, W)`` pairs.
    """

    def __init__(self, frames: Tensor, index: Tensor):
        self.frames = frames
        self.index = index

    def __len__(self) -> int:
        return len(self.index)

    def __getitems__(self, items: list[int]) -> tuple[Tensor, Tensor]:
        seq, t = self.index[items].unbind(1)
        return self.frames[seq, t], self.frames[seq, t + 1]

    def __getitem__(self, item: int) -> tuple[Tensor, Tensor]:
        x, y = self.__getitems__([item])
        return x[0], y[0]

    def batches(self, size: int = 512) -> Iterator[tuple[Tensor, Tensor]]:
        """All windows in order, ``size`` at a time."""
        for start in range(0, len(self), size):
            yield self.__getitems__(list(range(start, min(start + size, len(self)))))


def _keep_batch(batch: tuple[Tensor, Tensor]) -> tuple[Tensor, Tensor]:
    return batch


class SITransitionDataModule(L.LightningDataModule):
    """Transitions of binary lattice sequences (SI by default), split at random into train and
    validation windows.

    Without ``path``, reference sequences are simulated from ``seeds`` aware sites (1: the centre) with
    spread coefficient ``beta`` (optionally redrawn each step with sd ``beta_sd``), or with ``blocks`` and
    ``field`` from a spread field, one ``beta`` per block (:func:`field_map`, between ``field_range``).
    Unset ``n_sequences`` / ``n_frames`` take the paper's setting for ``beta``: 100 x 50 frames for beta
    <= 0.4, otherwise 200 x 30. The data are drawn from their own generator seeded with ``seed``, so they
    do not depend on the training seed.

    Args:
        path: ``.npz`` with key ``frames`` (see :func:`load_frames`); overrides the simulation.
        monotone: refuse files where a site turns from 1 back to 0 (true for SI; false for models that
            flip both ways).
        beta, beta_sd, n_sequences, n_frames, size, seeds: reference simulation settings.
        blocks, field, field_range: a spread field ``[by, bx]`` of blocks, ``smooth`` or an image file, scaled
            to ``[low, high]`` (the truth, ``by x bx``, replaces ``beta``).
        batch_size: transitions per minibatch (per device under DDP).
        val_fraction: share of transitions held out for validation.
        seed: seed of the reference simulation, the split and the shuffling.
    """

    def __init__(
        self,
        path: str | None = None,
        monotone: bool = True,
        beta: float = 0.4,
        beta_sd: float = 0.0,
        n_sequences: int | None = None,
        n_frames: int | None = None,
        size: int | list[int] = 64,
        batch_size: int = 32,
        val_fraction: float = 0.1,
        seed: int = 0,
        num_workers: int = 0,
        seeds: int = 1,
        blocks: list[int] | None = None,
        field: str | None = None,
        field_range: list[float] | None = (0.05, 0.6),
    ):
        super().__init__()
        # plain values (not Hydra's ListConfig), so that checkpoints load with torch.load(weights_only=True)
        blocks = check_blocks(blocks, "data.blocks")
        field_range = None if field_range is None else [float(v) for v in field_range]
        truth = None
        if path is None and field is not None:
            if blocks is None:
                raise InputError("truth.field: a spread field needs model.blocks=[by,bx]")
            if field_range is None or len(field_range) != 2:
                raise InputError(f"truth.field_range: expected [low, high], got {field_range}")
            low, high = (float(v) for v in field_range)
            for value in (low, high):
                Probability.check("truth.field_range", value)
            truth = {"beta": field_map(str(field), blocks, low, high).tolist()}
        elif path is None:
            Probability.check("truth.beta", beta)
            truth = {"beta": float(beta)}
        if batch_size < 1:
            raise InputError(f"data.batch_size: expected a positive integer, got {batch_size}")
        if not 0 <= val_fraction < 1:
            raise InputError(f"data.val_fraction: expected a fraction in [0, 1), got {val_fraction}")
        self.save_hyperparameters(logger=False)
        #: the true spread coefficient (or field, a nested list) of simulated data (``param_rel_error`` in
        #: ``results.json``)
        self.truth = truth
        self.frames: Tensor | None = None
        self.train_set: TransitionWindows | None = None
        self.val_set: TransitionWindows | None = None

    def _reference_frames(self) -> Tensor:
        hp = self.hparams
        paper_sequences, paper_frames = (100, 50) if hp.beta <= 0.4 else (200, 30)
        size = (hp.size, hp.size) if isinstance(hp.size, int) else tuple(hp.size)
        generator = torch.Generator().manual_seed(hp.seed)
        beta = self.truth["beta"]
        if hp.field is not None:
            beta = block_field(torch.tensor(beta), *size)
        frames = simulate_si(beta, hp.n_sequences or paper_sequences, hp.n_frames or paper_frames,
                             size=size, beta_sd=hp.beta_sd, generator=generator, seeds=hp.seeds)
        log.info("simulated %d SI sequences of %d frames (beta=%s, beta_sd=%s, %d seed sites)",
                 frames.shape[0], frames.shape[1], hp.field or hp.beta, hp.beta_sd, hp.seeds)
        return frames

    def setup(self, stage: str | None = None) -> None:
        if self.frames is not None:
            return
        hp = self.hparams
        if hp.blocks is not None and hp.path is None:  # before simulating
            block_shape(hp.blocks, *((hp.size, hp.size) if isinstance(hp.size, int) else hp.size))
        frames = load_frames(hp.path, hp.monotone) if hp.path else self._reference_frames()
        if hp.blocks is not None:
            block_shape(hp.blocks, *frames.shape[2:])
        n_seq, n_frames = frames.shape[:2]
        seq, t = torch.meshgrid(torch.arange(n_seq), torch.arange(n_frames - 1), indexing="ij")
        index = torch.stack([seq.flatten(), t.flatten()], dim=1)
        order = torch.randperm(len(index), generator=torch.Generator().manual_seed(self.hparams.seed))
        n_val = round(self.hparams.val_fraction * len(index))
        if len(index) - n_val < 1:
            raise InputError(f"data: {len(index)} transitions leave none for training with val_fraction "
                             f"{self.hparams.val_fraction}")
        self.frames = frames
        self.train_set = TransitionWindows(frames, index[order[n_val:]])
        self.val_set = TransitionWindows(frames, index[order[:n_val]])
        log.info("%d train and %d validation transitions of %dx%d lattices",
                 len(self.train_set), len(self.val_set), *frames.shape[2:])

    def _loader(self, dataset: TransitionWindows, shuffle: bool) -> DataLoader:
        # An explicit DistributedSampler (a single replica without DDP) makes the order a function of
        # (seed, epoch) only, so a resumed run sees the batches an uninterrupted run would have seen.
        trainer = self.trainer
        world, rank = (trainer.world_size, trainer.global_rank) if trainer is not None else (1, 0)
        sampler = DistributedSampler(dataset, num_replicas=world, rank=rank, shuffle=shuffle,
                                     seed=self.hparams.seed)
        return DataLoader(dataset, batch_size=self.hparams.batch_size, sampler=sampler,
                          collate_fn=_keep_batch, num_workers=self.hparams.num_workers)

    def task_target(self) -> TransitionTarget:
        """The training transitions (in batches) and the truth, for the task."""
        return TransitionTarget(truth=self.truth, transitions=self.train_set.batches)

    def train_dataloader(self) -> DataLoader:
        return self._loader(self.train_set, shuffle=True)

    def val_dataloader(self) -> DataLoader:
        return self._loader(self.val_set, shuffle=False) if len(self.val_set) else []
