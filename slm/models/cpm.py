r"""One-pixel random-walk Cellular Potts model (CPM), one cell per lattice, batched over cells.

A cell occupies 1 or 2 Moore-adjacent pixels of a torus (hard constraint ``1 <= v <= 2``, target
volume 1). Every *sampling step*:

1. a source pixel is drawn uniformly from the cell's pixels and their Moore neighbours;
2. a target pixel is drawn among the source's 8 Moore neighbours, each axis neighbour with weight
   ``(sqrt2 - 1) sqrt2 / 4`` and each diagonal one with ``(sqrt2 - 1) / 4`` (they sum to 1);
3. the source copies its value into the target: a copy that would leave ``v`` outside ``[1, 2]`` is
   rejected, shrinking (2 -> 1) is always accepted, and growing (1 -> 2) is accepted with
   ``p = exp(-1 / T)``, the draw ``H(p - U)`` going through the gradient estimator.

The state of a cell is not a lattice but its *anchor* pixel (integer coordinates, unwrapped) and its
*type*: 0 for a single pixel, ``k = 1..8`` for a second pixel at Moore offset ``OFFSETS[k - 1]``
from the anchor. All outcomes of a step are looked up in tables indexed by (type, source, target
direction), built once from the rules above, so a step costs a handful of gathers on ``(n,)``
tensors whatever the lattice size. Unwrapped coordinates give the same centroid displacement as the
minimum image on the 128x128 torus as long as a cell moves less than 64 pixels, which at the
scales of interest (MSD of a few pixels^2) never happens. A dense-lattice reference in the tests
checks that both give the same displacement distribution.

Gradients. The centroid ``X = anchor + offset(type) / 2`` is exact in the forward pass. Every step
draws the growth decision ``z ~ Bernoulli(p)`` through the estimator, masked to the cells that attempt
a growth (only attempts carry information on ``T``). With a pathwise
estimator (``ste``, ``gumbel``) each attempt ``i`` in direction ``o_i`` adds
``(z_i - stop_grad(z_i)) o_i / 2`` to ``X``: zero in value, ``dz_i/dp * o_i / 2`` in gradient, i.e.
the estimator's answer to "had this growth gone the other way, the centroid would have moved by
``o_i / 2``". With ``score`` the estimator records ``log P`` of every attempt per cell, and
:meth:`OnePixelCPM.msd` passes the per-cell squared displacements through
:meth:`slm.models.Simulator.surrogate`, an unbiased gradient.

:meth:`OnePixelCPM.expected_msd` computes ``E|X_t - X_0|^2`` exactly by propagating the first two
moments of the displacement through the 9-type Markov chain (differentiable in ``T``).
"""

from __future__ import annotations

import math
from typing import NamedTuple

import torch
from torch import Tensor

from slm.errors import InputError
from slm.estimators import Estimator, gradient_only, make_estimator
from slm.models.base import WalkSimulator
from slm.parameters import Positive, register

#: Moore offsets ``(dx, dy)``: the four axis moves, then the four diagonal ones.
OFFSETS = ((1, 0), (0, 1), (-1, 0), (0, -1), (1, 1), (-1, 1), (-1, -1), (1, -1))
AXIS_WEIGHT = (math.sqrt(2) - 1) * math.sqrt(2) / 4
DIAGONAL_WEIGHT = (math.sqrt(2) - 1) / 4
TARGET_WEIGHTS = (AXIS_WEIGHT,) * 4 + (DIAGONAL_WEIGHT,) * 4
TYPES = 1 + len(OFFSETS)
MAX_SOURCES = 14  # a diagonal pair: two 3x3 blocks sharing 4 pixels


def _cell_pixels(cell_type: int) -> list[tuple[int, int]]:
    return [(0, 0)] if cell_type == 0 else [(0, 0), OFFSETS[cell_type - 1]]


def transition_tables() -> dict[str, Tensor]:
    """Outcome of every (type, source index, target direction), relative to the anchor.

    Returns ``sources (TYPES,)`` (number of candidate sources), ``grow (TYPES, MAX_SOURCES, 8)`` (a
    growth attempt, accepted with ``p``), ``next_type`` (type after the copy if it happens),
    ``shift (..., 2)`` (anchor move if it happens) and ``centroid_offset (TYPES, 2)`` (centroid minus anchor).
    Slots beyond ``sources[t]`` are never drawn.
    """
    sources = torch.zeros(TYPES, dtype=torch.long)
    grow = torch.zeros(TYPES, MAX_SOURCES, len(OFFSETS), dtype=torch.bool)
    next_type = torch.zeros(TYPES, MAX_SOURCES, len(OFFSETS), dtype=torch.long)
    shift = torch.zeros(TYPES, MAX_SOURCES, len(OFFSETS), 2, dtype=torch.long)
    centroid_offset = torch.zeros(TYPES, 2)
    for t in range(TYPES):
        cell = _cell_pixels(t)
        candidates = sorted({(x + dx, y + dy) for x, y in cell for dx, dy in ((0, 0), *OFFSETS)})
        sources[t] = len(candidates)
        centroid_offset[t] = torch.tensor(cell[-1], dtype=torch.float32) / len(cell)
        for s, (sx, sy) in enumerate(candidates):
            for j, (dx, dy) in enumerate(OFFSETS):
                target = (sx + dx, sy + dy)
                next_type[t, s, j] = t
                if (sx, sy) in cell and target not in cell and t == 0:
                    grow[t, s, j] = True
                    next_type[t, s, j] = 1 + j
                elif (sx, sy) not in cell and target in cell and t > 0:
                    next_type[t, s, j] = 0
                    if target == (0, 0):
                        shift[t, s, j] = torch.tensor(OFFSETS[t - 1])
    return {"sources": sources, "grow": grow, "next_type": next_type, "shift": shift,
            "centroid_offset": centroid_offset}


class PixelCellState(NamedTuple):
    """Cells of 1-2 pixels: ``cell_type (n,)`` long (0 one pixel, ``k`` a second pixel at ``OFFSETS[k - 1]``),
    ``anchor (n, 2)`` long (unwrapped), ``gradient_path (n, 2)`` (zero-valued, carries the estimator's gradient)."""

    cell_type: Tensor
    anchor: Tensor
    gradient_path: Tensor


class OnePixelCPM(WalkSimulator):
    """1-2 pixel random-walk CPM with learnable temperature ``T`` (stored as ``log T``).

    State of a step: a :class:`PixelCellState` per cell.

    Args:
        temperature: initial ``T``; growth is accepted with ``exp(-1 / T)``.
        estimator: an :class:`slm.estimators.Estimator` or its name: ``score`` (unbiased, default),
            ``ste`` or ``gumbel``.
        steps_per_frame: sampling steps per frame of :meth:`msd` (the thesis: 800, one frame).
    """

    def __init__(self, temperature: float = 0.2, estimator: Estimator | str = "score", steps_per_frame: int = 800):
        super().__init__()
        register(self, "temperature", temperature, Positive())
        if not (isinstance(steps_per_frame, int) and steps_per_frame >= 1):
            raise InputError(f"model.steps_per_frame: expected a positive integer, got {steps_per_frame}")
        self.estimator = make_estimator(estimator)
        self.steps_per_frame = steps_per_frame
        for name, table in transition_tables().items():
            self.register_buffer(name, table, persistent=False)
        self.register_buffer("offsets", torch.tensor(OFFSETS, dtype=torch.float32), persistent=False)
        self.register_buffer("target_cdf", torch.tensor(TARGET_WEIGHTS).cumsum(0), persistent=False)

    @property
    def frame_steps(self) -> int:
        return self.steps_per_frame

    @property
    def acceptance(self) -> Tensor:
        """``p = exp(-1 / T)``, the probability that a growth attempt succeeds."""
        return torch.exp(-1 / self.temperature)

    def derived(self) -> dict[str, Tensor]:
        """``{"acceptance": p}``, logged and reported by the fitting task."""
        return {"acceptance": self.acceptance}

    def prepare(self) -> tuple[Tensor]:
        return (self.acceptance,)

    def transition(self, state: PixelCellState, prepared: tuple[Tensor],
                   generator: torch.Generator | None = None) -> PixelCellState:
        """One sampling step of every cell."""
        cell_type, anchor, gradient_path = state
        u = torch.rand(3, len(cell_type), generator=generator, device=anchor.device)
        source = (u[0] * self.sources[cell_type]).long()
        direction = torch.searchsorted(self.target_cdf, u[1]).clamp_max(len(OFFSETS) - 1)
        index = (cell_type * MAX_SOURCES + source) * len(OFFSETS) + direction
        grow = self.grow.view(-1)[index]
        # One shared acceptance for every cell, drawn only where a growth is attempted.
        z = self.estimator.bernoulli(prepared[0], noise=u[2], mask=grow)
        happens = ~grow | (z.detach() > 0)
        cell_type = torch.where(happens, self.next_type.view(-1)[index], cell_type)
        anchor = anchor + self.shift.view(-1, 2)[index] * happens[:, None]
        if z.requires_grad:
            gradient_path = gradient_path + gradient_only(z)[:, None] * self.offsets[direction] / 2
        return PixelCellState(cell_type, anchor, gradient_path)

    def initial_state(self, batch: int, size: int | tuple[int, int] | None = None, device: torch.device | None = None,
                      generator: torch.Generator | None = None) -> PixelCellState:
        """``batch`` single-pixel cells at the origin (``size`` is not used: coordinates are unwrapped)."""
        device = device if device is not None else self.offsets.device
        anchor = torch.zeros(batch, 2, dtype=torch.long, device=device)
        return PixelCellState(anchor[:, 0].clone(), anchor, torch.zeros(batch, 2, device=device))

    def positions(self, state: PixelCellState) -> Tensor:
        """``(n, 2)``: exact centroids, with the pathwise gradient of the growth decisions."""
        return state.anchor + self.centroid_offset[state.cell_type] + state.gradient_path

    def msd_per_walker(self, n: int, lags: int, generator: torch.Generator | None = None) -> Tensor:
        """Squared displacement of each of ``n`` cells (each from a single pixel at the origin) from the start
        after ``1..lags`` frames of ``steps_per_frame`` sampling steps, ``(n, lags)``."""
        frames = self.walk(n, lags, generator)
        return ((frames[:, 1:] - frames[:, :1]) ** 2).sum(-1)

    def expected_msd(self, steps: int) -> Tensor:
        """Exact ``E|X_steps - X_0|^2`` (scalar, differentiable in ``T``) from the 9-type Markov chain."""
        p = self.acceptance
        weights = torch.tensor(TARGET_WEIGHTS, device=p.device)
        slots = torch.arange(MAX_SOURCES, device=p.device)
        valid = (slots[None, :] < self.sources[:, None]).float()[..., None]
        move = valid * weights / self.sources[:, None, None]  # (TYPES, MAX_SOURCES, 8): P(source, direction)
        happens = torch.where(self.grow, p * move, move)
        src = torch.arange(TYPES, device=p.device)[:, None, None].expand_as(move)
        delta = self.shift.float() + self.centroid_offset[self.next_type] - self.centroid_offset[src]
        src, dst = src.reshape(-1), self.next_type.reshape(-1)
        happens, delta = happens.reshape(-1), delta.reshape(-1, 2)
        stay = 1 - torch.zeros(TYPES, device=p.device).index_add(0, src, happens * (dst != src))
        prob = torch.zeros(TYPES, device=p.device)
        prob[0] = 1.0
        first = torch.zeros(TYPES, 2, device=p.device)
        second = torch.zeros(TYPES, device=p.device)
        moved = dst != src
        src, dst, happens, delta = src[moved], dst[moved], happens[moved], delta[moved]
        for _ in range(steps):
            new_prob = stay * prob
            new_first = stay[:, None] * first
            new_second = stay * second
            new_prob = new_prob.index_add(0, dst, happens * prob[src])
            new_first = new_first.index_add(0, dst, happens[:, None] * (first[src] + delta * prob[src, None]))
            new_second = new_second.index_add(0, dst, happens * (second[src] + 2 * (delta * first[src]).sum(-1)
                                                                 + (delta**2).sum(-1) * prob[src]))
            prob, first, second = new_prob, new_first, new_second
        return second.sum()
