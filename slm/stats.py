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
    present = positions.isfinite().all(-1)
    # Missing points enter as zeros behind masks, so that no NaN reaches the graph (a gap's NaN would turn the
    # gradient of every point paired with it into NaN).
    points = torch.where(present[..., None], positions, 0.0)

    def mean(values: Tensor, valid: Tensor) -> Tensor:
        return torch.where(valid, values, 0.0).sum((-2, -1)) / valid.sum((-2, -1)).clamp_min(1)

    columns = [mean(((points[..., k:, :] - points[..., :-k, :]) ** 2).sum(-1), present[..., k:] & present[..., :-k])
               for k in range(1, lags + 1)]
    step, valid, length = _steps(points, present)
    columns.append(mean(length, valid))
    direction = step / length[..., None]
    columns.append(mean((direction[..., 1:, :] * direction[..., :-1, :]).sum(-1), valid[..., 1:] & valid[..., :-1]))
    return torch.stack(columns, -1)


def _steps(points: Tensor, present: Tensor) -> tuple[Tensor, Tensor, Tensor]:
    """Steps ``(..., N, T - 1, D)`` between successive frames of zero-filled ``points``, where both ends are
    ``present`` ``(..., N, T - 1)``, and their lengths (a small floor keeps the gradient finite at zero)."""
    step = points[..., 1:, :] - points[..., :-1, :]
    return step, present[..., 1:] & present[..., :-1], ((step ** 2).sum(-1) + 1e-12).sqrt()


def track_speeds(positions: Tensor) -> tuple[Tensor, Tensor]:
    """Each track's mean step length ``(..., N)`` and its number of steps ``(..., N)`` from positions
    ``(..., N, T, D)`` (NaN where a track has no point; a track without a step gets NaN and 0 steps)."""
    present = positions.isfinite().all(-1)
    _, valid, length = _steps(torch.where(present[..., None], positions, 0.0), present)
    steps = valid.sum(-1)
    mean = torch.where(valid, length, 0.0).sum(-1) / steps.clamp_min(1)
    return torch.where(steps > 0, mean, torch.nan), steps


#: Quantile levels of the data's per-track mean speeds at which :func:`speed_distribution` is read.
SPEED_LEVELS = (0.1, 0.25, 0.5, 0.75, 0.9)


def speed_distribution(speeds: Tensor, steps: Tensor, thresholds: Tensor, width: float) -> Tensor:
    r"""The smoothed distribution function of per-track mean speeds ``(..., N)``, each track weighted by its
    number of ``steps (..., N)``, at ``thresholds (J,)``: ``F_j = sum_n s_n sigmoid((q_j - v_n) / width) /
    sum_n s_n``, ``(..., J)`` (NaN speeds left out); differentiable in the speeds. Weighting by steps puts it on
    the footing of the MSD, speed and persistence, which average over steps: in real data short tracks are
    often the fast ones (fast cells leave the field of view), so a per-track count would ask a model of tracks of
    one length for another mean speed than the step mean. With ``q_j`` the data's quantiles at
    :data:`SPEED_LEVELS` it compares distributions of per-track speeds: what tells one heterogeneous
    population from a mixture of fast and slow movers."""
    weight = torch.where(speeds.isfinite(), steps.to(speeds.dtype), 0.0)
    below = torch.sigmoid((thresholds - torch.where(weight > 0, speeds, 0.0)[..., None]) / width)
    return (below * weight[..., None]).sum(-2) / weight.sum(-1, keepdim=True).clamp_min(1)


def weighted_quantiles(values: Tensor, weights: Tensor, levels: Tensor) -> Tensor:
    """Quantiles ``(J,)`` at ``levels (J,)`` of ``values (N,)`` with ``weights (N,)`` (the smallest value whose
    cumulative weight reaches each level)."""
    order = values.argsort()
    cumulative = weights[order].cumsum(0) / weights.sum()
    index = torch.searchsorted(cumulative, levels.to(cumulative.dtype)).clamp_max(len(values) - 1)
    return values[order][index]


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


def track_objective(simulated: Tensor, target: Tensor, weights: Tensor, lags: int, speed_weight: float = 0.0
                    ) -> Tensor:
    r""":func:`track_loss` of the first ``lags + 2`` columns of ``simulated (..., lags + 2 [+ J])`` against
    ``target``, plus ``speed_weight * sum_j (F_j - G_j)^2`` over the appended speed distribution functions
    (:func:`speed_distribution`) when ``speed_weight > 0``."""
    size = lags + 2
    loss = track_loss(simulated[..., :size], target[:size], weights)
    if speed_weight > 0:
        loss = loss + speed_weight * ((simulated[..., size:] - target[size:]) ** 2).sum(-1)
    return loss


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
