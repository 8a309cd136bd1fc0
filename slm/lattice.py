"""Neighbourhoods on a periodic (torus) square lattice."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor


def moore_neighbour_sum(x: Tensor) -> Tensor:
    r"""Sum of the 8 Moore neighbours of every site, with periodic boundaries.

    ``out[..., i, j] = sum_{(di, dj) != (0, 0), |di|, |dj| <= 1} x[..., (i + di) % H, (j + dj) % W]``

    Args:
        x: float tensor of shape ``(..., H, W)``.

    Returns:
        Tensor of the same shape and dtype.
    """
    shape = x.shape
    flat = x.reshape(-1, 1, shape[-2], shape[-1])
    kernel = torch.ones(1, 1, 3, 3, dtype=x.dtype, device=x.device)
    kernel[..., 1, 1] = 0
    out = F.conv2d(F.pad(flat, (1, 1, 1, 1), mode="circular"), kernel)
    return out.reshape(shape)
