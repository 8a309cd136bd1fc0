"""Neighbourhoods and equal blocks on a periodic (torus) square lattice."""

from __future__ import annotations

import torch
from torch import Tensor

from slm.errors import InputError


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


def block_shape(blocks: tuple[int, int] | list[int], height: int, width: int,
                key: str = "model.blocks") -> tuple[int, int]:
    """The ``(height / by, width / bx)`` sites of each of ``by x bx`` equal blocks of a ``height x width`` lattice.

    Raises :class:`slm.errors.InputError` naming ``key`` when the blocks do not tile the lattice.
    """
    by, bx = blocks
    if height % by or width % bx:
        raise InputError(f"{key}: {by}x{bx} blocks must tile the {height}x{width} lattice in equal blocks "
                         f"(each a divisor of its side)")
    return height // by, width // bx


def block_field(values: Tensor, height: int, width: int) -> Tensor:
    """One value per block ``(by, bx)`` (row-major blocks) to one per site ``(height, width)``, each block
    ``height / by x width / bx`` sites; differentiable in ``values``."""
    by, bx = values.shape[-2:]
    sy, sx = block_shape((by, bx), height, width)
    return values[..., :, None, :, None].expand(*values.shape[:-2], by, sy, bx, sx).reshape(
        *values.shape[:-2], height, width)


def block_index(blocks: tuple[int, int] | list[int], height: int, width: int, device: torch.device | None = None
                ) -> Tensor:
    """The row-major block number of every site, ``(height, width)`` int64, of ``by x bx`` equal blocks."""
    by, bx = blocks
    sy, sx = block_shape(blocks, height, width)
    rows = torch.arange(height, device=device) // sy
    cols = torch.arange(width, device=device) // sx
    return rows[:, None] * bx + cols[None, :]
