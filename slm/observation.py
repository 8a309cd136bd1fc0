r"""How a microscope records simulated cells: an imaging window, tracks cut where cells leave it, tracking
gaps, short tracks dropped, a projection.

Real tracks come from a window into a larger tissue. A cell is tracked while its centroid is inside the window;
leaving ends its track and coming back starts a new one; trackers drop tracks of few points and miss some. So
fast cells give short tracks and the long lags of an MSD come from slow ones. :class:`Observation` applies the
same to simulated centroid tracks ``(B, C, T, dims)`` on a torus of ``size``:

* the centroid folded onto the torus is *inside* when ``low_a <= x_a < high_a`` on every axis ``a``;
* frame ``t`` starts a new track when it is inside and frame ``t - 1`` is not (or ``t = 0``): the track's
  points are the frames up to its exit, so a cell gives at most ``ceil(T / 2)`` tracks;
* each point is missed with probability ``gap_rate`` (a gap: the track goes on, as in a tracks file);
* each recorded coordinate is off by a localisation error ``noise * N(0, 1)`` (sites), independent between
  points: it adds ``2 d noise^2`` to the MSD at every lag, lengthens short steps and lowers the persistence,
  as a tracker's error does;
* tracks of fewer than ``min_points`` points are dropped;
* the recorded coordinates are the lattice ``axes`` (all, or the last two: a 3D lattice seen in XY).

The result ``(B, C * S, T, d)`` holds each track on its own row, NaN where it has no point, which is how
:func:`slm.io.read_tracks` gives a file's tracks: both then go through the same :func:`slm.stats.track_statistics`.
Which frames are inside is decided on the detached centroids (no gradient through a track's ends); the
recorded points keep the estimators' gradient.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import torch
from torch import Tensor

from slm.errors import InputError


@dataclass(frozen=True)
class Observation:
    """What the microscope records (see the module docstring).

    Args:
        size: the lattice's sides (sites).
        window: ``(low, high)`` per lattice axis in sites, or ``None``: the whole lattice (nothing leaves).
        min_points: tracks with fewer points are dropped.
        gap_rate: probability that a point of a track is missed.
        noise: standard deviation of the localisation error per coordinate (sites).
        axes: the lattice axes recorded (``None``: all).
    """

    size: tuple[int, ...]
    window: tuple[tuple[float, float], ...] | None = None
    min_points: int = 1
    gap_rate: float = 0.0
    noise: float = 0.0
    axes: tuple[int, ...] | None = None

    def __call__(self, tracks: Tensor, generator: torch.Generator | None = None) -> Tensor:
        """Observed tracks ``(B, C * S, T, d)`` of centroid tracks ``(B, C, T, dims)`` (unwrapped, in sites; ``S``
        tracks per cell at most, one without a window)."""
        batch, cells, frames, dims = tracks.shape
        if self.window is None:
            member = torch.ones(batch, cells, 1, frames, dtype=torch.bool, device=tracks.device)
        else:
            period = torch.tensor(self.size, device=tracks.device, dtype=tracks.dtype)
            bounds = torch.tensor(self.window, device=tracks.device, dtype=tracks.dtype)
            folded = tracks.detach() % period
            inside = ((folded >= bounds[:, 0]) & (folded < bounds[:, 1])).all(-1)
            before = torch.nn.functional.pad(inside[..., :-1], (1, 0), value=False)
            track = (inside & ~before).cumsum(-1) - 1
            count = math.ceil(frames / 2)
            member = inside[:, :, None] & (track[:, :, None] == torch.arange(count, device=tracks.device)[:, None])
        if self.gap_rate > 0:
            seen = torch.rand(batch, cells, 1, frames, generator=generator, device=tracks.device) >= self.gap_rate
            member = member & seen
        member = member & (member.sum(-1, keepdim=True) >= self.min_points)
        points = tracks if self.axes is None else tracks[..., list(self.axes)]
        if self.noise > 0:
            points = points + self.noise * torch.randn(points.shape, generator=generator, device=points.device,
                                                       dtype=points.dtype)
        observed = torch.where(member[..., None], points[:, :, None], torch.nan)
        return observed.flatten(1, 2)


def window_bounds(window: Sequence | None, size: Sequence[int], extent: Sequence[float] | None = None,
                  key: str = "data.window") -> tuple[tuple[float, float], ...] | None:
    """``(low, high)`` per axis of a window centred in a lattice of ``size``, from ``window``: per axis a fraction
    of the side (a number up to 1), a width in sites (a number above 1, at most the side), or ``"data"`` (the
    data's ``extent`` along that axis, in sites); ``None``: the whole lattice."""
    if window is None:
        return None
    if isinstance(window, str) or not isinstance(window, Sequence) or len(window) != len(size):
        raise InputError(f"{key}: expected {len(size)} widths (one per lattice axis: fractions up to 1, sites, or "
                         f"'data'), got {window!r}")
    bounds = []
    for axis, (given, side) in enumerate(zip(window, size, strict=True)):
        if given == "data":
            if extent is None:
                raise InputError(f"{key}: 'data' takes the width from a tracks file; data.path is not set")
            width = float(extent[axis])
        elif isinstance(given, int | float) and not isinstance(given, bool) and math.isfinite(given) and given > 0:
            width = given * side if given <= 1 else float(given)
        else:
            raise InputError(f"{key}: axis {axis}: expected a fraction up to 1, a width in sites or 'data', got "
                             f"{given!r}")
        if width > side:
            raise InputError(f"{key}: axis {axis}: a window {width:g} sites wide does not fit in the lattice's "
                             f"{side} sites (raise data.size)")
        low = (side - width) / 2
        bounds.append((low, low + width))
    return tuple(bounds)
