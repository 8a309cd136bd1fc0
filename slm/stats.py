r"""Summary statistics: mean squared displacement (MSD) of tracks and of simulated positions, and
pattern metrics of concentration fields.

For positions ``x_t`` sampled at frames ``t = 0, 1, ...``, the MSD at lag ``k`` averages over all
tracks and all start times where both ends exist:

    MSD(k) = mean_{tracks, t} |x_{t+k} - x_t|^2.
"""

from __future__ import annotations

import csv
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

from slm.errors import InputError

REQUIRED_COLUMNS = ("track_id", "t", "x", "y")


@dataclass
class Tracks:
    """Tracks on a regular frame grid.

    Attributes:
        positions: float array ``(n_tracks, n_frames, D)``, NaN where a track has no point (gaps, and
            frames after its end); frame 0 is each track's first point.
        frame_interval: time between frames, in the file's time unit.
        ids: track ids, in the order of ``positions``.
    """

    positions: np.ndarray
    frame_interval: float
    ids: list[str]

    @property
    def n_frames(self) -> int:
        """Longest track span, in frames (first to last point, inclusive)."""
        present = ~np.isnan(self.positions[..., 0])
        last = present.shape[1] - 1 - np.argmax(present[:, ::-1], axis=1)
        return int(last.max()) + 1


def read_tracks(path: str | Path, tolerance: float = 0.1, key: str = "data.path") -> Tracks:
    """Read a tracks CSV with columns ``track_id,t,x,y[,z]`` (more columns are ignored).

    The frame interval is the median time step within tracks. Every step must be a whole number of
    intervals (a gap of missing frames is fine) within ``tolerance`` of an interval; ``z`` is used
    when every row has it.

    Raises:
        InputError: one line naming the file (and line or track) and what was expected.
    """
    path = Path(path)
    if not path.is_file():
        raise InputError(f"{key}: file not found: {path}")
    with path.open(newline="") as handle:
        reader = csv.DictReader(handle)
        header = [c.strip() for c in reader.fieldnames or []]
        missing = [c for c in REQUIRED_COLUMNS if c not in header]
        if missing:
            raise InputError(f"{key}: {path} is missing column(s) {', '.join(missing)}; expected a header "
                             f"track_id,t,x,y[,z]")
        reader.fieldnames = header
        rows = list(reader)
    has_z = "z" in header and rows and all((r.get("z") or "").strip() for r in rows)
    columns = ["t", "x", "y", "z"] if has_z else ["t", "x", "y"]
    ids, values = [], np.empty((len(rows), len(columns)))
    for i, row in enumerate(rows):
        ids.append(row["track_id"].strip())
        for j, column in enumerate(columns):
            text = (row[column] or "").strip()
            try:
                values[i, j] = float(text)
            except ValueError:
                raise InputError(f"{key}: {path} line {i + 2}, column {column}: {text!r} is not a number") from None
    if not np.isfinite(values).all():
        line = int(np.argwhere(~np.isfinite(values))[0, 0]) + 2
        raise InputError(f"{key}: {path} line {line}: values must be finite numbers")
    if not rows:
        raise InputError(f"{key}: {path} has no rows")

    names, track_of_row, counts = np.unique(np.array(ids), return_inverse=True, return_counts=True)
    by_track_then_time = np.lexsort((values[:, 0], track_of_row))
    blocks = np.split(values[by_track_then_time], np.cumsum(counts)[:-1])
    tracks = dict(zip(names.tolist(), blocks, strict=True))
    for track_id, block in tracks.items():
        if len(block) < 2:
            raise InputError(f"{key}: {path} track {track_id} has a single point; every track needs at least 2")
        if (np.diff(block[:, 0]) <= 0).any():
            raise InputError(f"{key}: {path} track {track_id} has two points at the same time")
    steps = np.concatenate([np.diff(block[:, 0]) for block in tracks.values()])
    interval = float(np.median(steps))
    multiples = steps / interval
    off = np.abs(multiples - np.round(multiples))
    if (off > tolerance).any() or (np.round(multiples) < 1).any():
        bad = float(steps[np.argmax(off)])
        raise InputError(f"{key}: {path} has an irregular frame interval: a step of {bad:g} where steps are "
                         f"multiples of {interval:g} (tolerance {tolerance:g} of an interval)")

    frames = [np.round((block[:, 0] - block[0, 0]) / interval).astype(int) for block in tracks.values()]
    positions = np.full((len(tracks), max(int(f[-1]) for f in frames) + 1, len(columns) - 1), np.nan)
    for i, (block, frame) in enumerate(zip(tracks.values(), frames, strict=True)):
        positions[i, frame] = block[:, 1:]
    return Tracks(positions, interval, list(tracks))


def track_msd(tracks: Tracks, lags: int, key: str = "data.lags") -> np.ndarray:
    """MSD at lags ``1..lags`` frames over all tracks and start times; shape ``(lags,)``.

    Raises:
        InputError: if the tracks are too short for ``lags``.
    """
    if tracks.n_frames <= lags:
        raise InputError(f"{key}: the tracks span at most {tracks.n_frames} frames, too few for {lags} lags "
                         f"(a lag of k frames needs tracks of k + 1 frames)")
    return track_statistics(torch.from_numpy(tracks.positions), lags)[:lags].numpy()


def track_statistic_names(lags: int) -> tuple[str, ...]:
    """Names of the columns of :func:`track_statistics`."""
    return (*(f"msd_{k}" for k in range(1, lags + 1)), "speed", "persistence")


def track_statistics(positions: Tensor, lags: int) -> Tensor:
    r"""MSD at lags ``1..lags``, mean speed and persistence of tracks; one implementation for real tracks
    (with gaps) and simulated ones (differentiable).

    Args:
        positions: ``(..., N, T, D)``: ``N`` tracks of ``T`` frames, NaN where a track has no point.

    Returns:
        ``(..., lags + 2)`` (columns :func:`track_statistic_names`), each a mean over the ``N`` tracks and
        all start times where the points exist: ``MSD(k) = mean |x_{t+k} - x_t|^2``; ``speed = mean
        |x_{t+1} - x_t|`` (length per frame); ``persistence = mean cos(angle between x_{t+1} - x_t and
        x_{t+2} - x_{t+1})``, the step-direction autocorrelation at lag one frame (0 for a random walk, 1
        for a straight line). Lengths are in the positions' unit.
    """

    def mean(values: Tensor) -> Tensor:
        present = values.isfinite()
        count = present.sum((-2, -1)).clamp_min(1)
        return torch.where(present, values, 0.0).sum((-2, -1)) / count

    columns = [mean(((positions[..., k:, :] - positions[..., :-k, :]) ** 2).sum(-1)) for k in range(1, lags + 1)]
    step = positions[..., 1:, :] - positions[..., :-1, :]
    # The small floor keeps the gradient finite for a step of length zero.
    length = ((step ** 2).sum(-1) + 1e-12).sqrt()
    columns.append(mean(length))
    direction = step / length[..., None]
    columns.append(mean((direction[..., 1:, :] * direction[..., :-1, :]).sum(-1)))
    return torch.stack(columns, -1)


#: The terms of :func:`track_loss`, in the order of its weights.
TRACK_TERMS = ("msd", "speed", "persistence")


def track_loss(simulated: Tensor, target: Tensor, weights: Tensor) -> Tensor:
    r"""The track-fitting loss from statistics ``(..., K + 2)`` (:func:`track_statistics`: MSDs, speed,
    persistence) against ``target (K + 2,)``; ``weights (3,)``: :data:`TRACK_TERMS`:

    .. math::  L = \frac{w_{msd}}{K} \sum_k \left(\frac{s_k - t_k}{t_k}\right)^2
                 + w_v \left(\frac{s_v - t_v}{t_v}\right)^2 + w_p (s_p - t_p)^2

    (persistence, a mean cosine near 0, in absolute terms)."""
    relative = (simulated - target) / target
    return (weights[0] * (relative[..., :-2] ** 2).mean(-1) + weights[1] * relative[..., -2] ** 2
            + weights[2] * (simulated[..., -1] - target[-1]) ** 2)


def walker_msd(positions: Tensor, lags: int) -> Tensor:
    """Differentiable MSD of each walker at lags ``1..lags`` over all its start times.

    Args:
        positions: ``(B, T, D)``, ``T > lags``.

    Returns:
        Tensor of shape ``(B, lags)``; its mean over walkers is the MSD of all walkers and start times.
    """
    return torch.stack([((positions[:, k:] - positions[:, :-k]) ** 2).sum(-1).mean(1) for k in range(1, lags + 1)],
                       dim=1)


#: A field counts as patterned when its score reaches this and its mean stays away from 0 and 1.
PATTERN_THRESHOLD = 0.1
SATURATION = 0.05


def pattern_score(field: Tensor, window: int = 5) -> Tensor:
    r"""Spatial standard deviation of the ``window x window`` box-smoothed field, per lattice.

    ``field``: ``(..., H, W)`` concentrations in [0, 1] (e.g. ``A / N``) on a torus. Smoothing removes
    the site-to-site noise of the lattice gas (independent noise of variance ``s^2`` keeps only
    ``s^2 / window^2``), so what remains is structure on scales of ``window`` sites and more:
    about 0.3 for the labyrinths of the reference parameters at 64x64, 0.01-0.06 for noise around
    a uniform or saturated state. Returns shape ``(...)``.
    """
    pad = window // 2
    flat = field.reshape(-1, 1, *field.shape[-2:]).float()
    smooth = F.avg_pool2d(F.pad(flat, (pad, pad, pad, pad), mode="circular"), window, stride=1)
    return smooth.std(dim=(-2, -1)).reshape(field.shape[:-2])


def is_patterned(field: Tensor, threshold: float = PATTERN_THRESHOLD) -> Tensor:
    """Boolean ``(...)``: score at least ``threshold`` and mean within ``[0.05, 0.95]`` (not saturated)."""
    mean = field.float().mean(dim=(-2, -1))
    return (pattern_score(field) >= threshold) & (mean >= SATURATION) & (mean <= 1 - SATURATION)


def dominant_wavelength(field: Tensor) -> Tensor:
    """Wavelength (in sites) at the peak of the radially averaged power spectrum, per lattice ``(...)``."""
    height, width = field.shape[-2:]
    centred = field.float() - field.float().mean(dim=(-2, -1), keepdim=True)
    power = torch.fft.fft2(centred).abs() ** 2
    ky = torch.fft.fftfreq(height, device=field.device)[:, None]
    kx = torch.fft.fftfreq(width, device=field.device)[None, :]
    radius = torch.sqrt(kx**2 + ky**2)
    bins = (radius * min(height, width)).round().long().flatten()
    flat = power.reshape(-1, height * width)
    radial = torch.zeros(flat.shape[0], int(bins.max()) + 1, device=field.device).index_add_(1, bins, flat)
    counts = torch.bincount(bins, minlength=radial.shape[1]).clamp_min(1)
    radial = radial / counts
    radial[:, 0] = 0
    peak = radial.argmax(-1).clamp_min(1)
    return (min(height, width) / peak.float()).reshape(field.shape[:-2])
