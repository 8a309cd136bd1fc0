r"""Summary statistics: mean squared displacement (MSD) of tracks and of simulated positions, and
pattern metrics of concentration fields.

For positions ``x_t`` sampled at frames ``t = 0, 1, ...``, the MSD at lag ``k`` averages over all
tracks and all start times where both ends exist:

    MSD(k) = mean_{tracks, t} |x_{t+k} - x_t|^2.
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

from slm.errors import InputError
from slm.io import Tracks


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


def track_speeds(positions: Tensor) -> Tensor:
    """Each track's mean step length ``(..., N)`` from positions ``(..., N, T, D)`` (NaN where a track has no
    point; a track without a step gets NaN)."""
    length = ((positions[..., 1:, :] - positions[..., :-1, :]) ** 2).sum(-1).add(1e-12).sqrt()
    present = length.isfinite()
    return torch.where(present, length, 0.0).sum(-1) / present.sum(-1).where(present.any(-1), torch.nan)


#: Quantile levels of the data's per-track mean speeds at which :func:`speed_distribution` is read.
SPEED_LEVELS = (0.1, 0.25, 0.5, 0.75, 0.9)


def speed_distribution(speeds: Tensor, thresholds: Tensor, width: float) -> Tensor:
    r"""The smoothed distribution function of per-track mean speeds ``(..., N)`` at ``thresholds (J,)``:
    ``F_j = mean_n sigmoid((q_j - v_n) / width)``, ``(..., J)`` (NaN speeds left out); differentiable in the
    speeds. With ``q_j`` the data's quantiles at :data:`SPEED_LEVELS` it compares distributions of per-track
    speeds: what tells one heterogeneous population from a mixture of fast and slow movers."""
    present = speeds.isfinite()
    below = torch.sigmoid((thresholds - torch.where(present, speeds, 0.0)[..., None]) / width)
    return (below * present[..., None]).sum(-2) / present.sum(-1, keepdim=True).clamp_min(1)


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
