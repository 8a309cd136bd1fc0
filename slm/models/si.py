r"""Susceptible-infected ("news spreading") lattice model.

A binary ``H x W`` torus, ``1`` = aware. With ``n`` aware Moore neighbours an unaware site becomes
aware with probability ``p = 1 - (1 - beta)^n``; aware sites stay aware; all sites update at once:

    P(x_{t+1} | x_t, beta) = prod_sites p(x_{t+1} | x_t, n_t, beta),
    p(1 | 1, n) = 1,    p(1 | 0, n) = 1 - (1 - beta)^n,    p(0 | 0, n) = (1 - beta)^n.

``beta`` is stored as a logit. One step is differentiable in ``beta`` through the estimator.

A spread *field* (``blocks = [by, bx]``) gives every one of ``by x bx`` equal blocks of the lattice
(row-major) its own ``beta``, which belongs to the receiving site: ``p_i = 1 - (1 - beta_i)^n_i``.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable

import torch
from torch import Tensor

from slm.errors import InputError
from slm.estimators import Estimator, StraightThrough, make_estimator
from slm.lattice import block_field, block_index, moore_neighbour_sum
from slm.models.base import Simulator
from slm.parameters import Probability, check_values, register
from slm.si_likelihood import (
    MAX_NEIGHBOURS,
    log_likelihood,
    si_beta_least_squares,
    si_beta_mle,
    si_beta_mle_blocks,
    si_posterior_interval,
)

log = logging.getLogger(__name__)


def infection_probability(x: Tensor, beta: Tensor | float) -> Tensor:
    """``p = x + (1 - x) (1 - (1 - beta)^n)``: the probability that each site is aware next step.

    Args:
        x: float 0/1 lattices, shape ``(..., H, W)``.
        beta: scalar, or a tensor broadcastable to ``x`` (one beta per lattice ``(B, 1, 1)``, one per site
            ``(H, W)``).
    """
    log_stay = moore_neighbour_sum(x) * torch.log1p(-torch.as_tensor(beta, dtype=x.dtype, device=x.device))
    return x - (1 - x) * torch.expm1(log_stay)


def check_blocks(blocks: list[int] | tuple[int, int] | None, key: str = "model.blocks") -> tuple[int, int] | None:
    """``blocks`` as a pair of positive integers ``(by, bx)`` (or ``None``), else a one-line error."""
    if blocks is None:
        return None
    if not (len(blocks) == 2 and all(isinstance(b, int) and b >= 1 for b in blocks)):
        raise InputError(f"{key}: expected [by, bx], two positive integers, got {list(blocks)}")
    return int(blocks[0]), int(blocks[1])


class SI(Simulator):
    """The SI model with a learnable spread coefficient ``beta``, one for the lattice or one per block.

    State: float 0/1 lattices ``(B, H, W)``; one :meth:`step` draws every site's next value through
    ``estimator``.

    Args:
        beta: initial spread coefficient in (0, 1): a number, or with ``blocks`` also a ``by x bx``
            nested list.
        estimator: an :class:`slm.estimators.Estimator` or its name (``ste``, ``gumbel``, ``score``).
        blocks: ``[by, bx]``: a spread field, one ``beta`` per equal block (``beta`` is then ``(by, bx)``;
            the blocks must tile the lattice); ``None``: one ``beta``.
    """

    def __init__(self, beta: float | list = 0.1, estimator: Estimator | str = "ste",
                 blocks: list[int] | tuple[int, int] | None = None):
        super().__init__()
        self.blocks = check_blocks(blocks)
        value = torch.as_tensor(beta, dtype=torch.float64)
        if self.blocks is not None:
            if value.ndim == 0:
                value = value.expand(self.blocks)
            elif tuple(value.shape) != self.blocks:
                raise InputError(f"model.beta: expected a number or a {self.blocks[0]}x{self.blocks[1]} nested "
                                 f"list for model.blocks={list(self.blocks)}, got shape {list(value.shape)}")
        elif value.ndim != 0:
            raise InputError(f"model.beta: a field of beta needs model.blocks=[by,bx]; got shape {list(value.shape)}")
        register(self, "beta", value, Probability())
        self.estimator = make_estimator(estimator)

    def prepare(self) -> tuple[Tensor]:
        return (self.beta,)

    def site_beta(self, beta: Tensor, height: int, width: int) -> Tensor:
        """``beta`` per site: the scalar, or the field ``(by, bx)`` spread over its blocks, ``(H, W)``."""
        return beta if self.blocks is None else block_field(beta, height, width)

    def transition(self, x: Tensor, prepared: tuple[Tensor], generator: torch.Generator | None = None) -> Tensor:
        """One synchronous step: ``x`` float 0/1 of shape ``(B, H, W)`` to a hard 0/1 sample of the same shape."""
        beta = self.site_beta(prepared[0], *x.shape[-2:])
        return self.estimator.bernoulli(infection_probability(x, beta), generator)

    def expected_transition(self, x: Tensor) -> Tensor:
        """``E[x_{t+1} | x_t = x]``: each site's probability to be aware next step, differentiable in ``beta``."""
        return infection_probability(x, self.site_beta(self.beta, *x.shape[-2:]))

    def initial_state(self, batch: int, size: int | tuple[int, int], device: torch.device | None = None,
                      generator: torch.Generator | None = None) -> Tensor:
        """One aware site in the centre of each lattice."""
        height, width = (size, size) if isinstance(size, int) else size
        x = torch.zeros(batch, height, width, device=device)
        x[:, height // 2, width // 2] = 1
        return x

    def reference_metrics(self, transitions: Iterable[tuple[Tensor, Tensor]]) -> dict[str, float | list]:
        """Exact references on the given transitions: the maximum-likelihood ``beta`` (``beta_mle``) and,
        for one ``beta``, the least-squares ``beta`` (``beta_lsq``, the fixed point of the pixelwise-MSE fit
        with the straight-through estimator, see :mod:`slm.si_likelihood`) and the exact posterior's 90% interval
        under a uniform prior (``beta_posterior_90``). For a field, ``beta_mle`` is the
        per-block MLE as a ``by x bx`` nested list (NaN, written ``null``, for a block without information)."""
        counts = sum(transition_counts(x.float(), y, self.blocks) for x, y in transitions).cpu()
        impossible = int(counts[..., 0, 1].sum())
        if impossible:
            log.warning("%d sites turned aware with no aware neighbour, which the SI model cannot do; "
                        "the MLE ignores them", impossible)
        if self.blocks is None:
            return {"beta_mle": si_beta_mle(counts), "beta_lsq": si_beta_least_squares(counts),
                    "beta_posterior_90": si_posterior_interval(counts)}
        mle = si_beta_mle_blocks(counts).reshape(self.blocks)
        return {"beta_mle": [[None if v != v else float(v) for v in row] for row in mle.tolist()]}

    def log_likelihood(self, x: Tensor, y: Tensor) -> Tensor:
        """Exact ``log P(y | x, beta)`` per lattice, shape ``(B,)`` (:func:`slm.si_likelihood.log_likelihood` of
        each lattice's counts); ``-inf`` for impossible transitions."""
        counts = transition_counts(x, y, self.blocks, per_lattice=True)
        beta = self.beta if self.blocks is None else self.beta.reshape(-1)
        per_lattice = log_likelihood(beta, counts)
        per_lattice = per_lattice if self.blocks is None else per_lattice.sum(-1)
        forgot = ((x > 0) & (y <= 0)).flatten(1).any(1)
        return torch.where(forgot, -torch.inf, per_lattice)


def transition_counts(x: Tensor, y: Tensor, blocks: tuple[int, int] | None = None, per_lattice: bool = False
                      ) -> Tensor:
    """Sufficient statistics of the SI likelihood, for the lattice or per block, summed over the batch or
    (``per_lattice``) per lattice.

    Returns an int64 tensor of shape ``(9, 2)``, or ``(by * bx, 9, 2)`` with ``blocks = (by, bx)`` (row-major
    blocks), with a leading ``(B,)`` when ``per_lattice``: row ``n`` holds the number of sites unaware in ``x``
    with ``n`` aware neighbours, and how many of them are aware in ``y``. ``x``, ``y``: ``(B, H, W)``.
    """
    x = x.float()
    bins = MAX_NEIGHBOURS + 1
    cell = moore_neighbour_sum(x).long()
    groups = 1
    if blocks is not None:
        groups = blocks[0] * blocks[1]
        cell = cell + bins * block_index(blocks, *x.shape[-2:], device=x.device)
    lattices = x.shape[0] if per_lattice else 1
    if per_lattice:
        cell = cell + groups * bins * torch.arange(lattices, device=x.device)[:, None, None]
    unaware = x == 0
    infected = unaware & (y > 0)
    susceptible = torch.bincount(cell[unaware], minlength=lattices * groups * bins)
    turned = torch.bincount(cell[infected], minlength=lattices * groups * bins)
    counts = torch.stack([susceptible, turned], dim=1)
    shape = ((lattices,) if per_lattice else ()) + ((groups,) if blocks is not None else ()) + (bins, 2)
    return counts.view(shape)


@torch.no_grad()
def simulate_si(
    beta: float | Tensor,
    n_sequences: int,
    n_frames: int,
    size: tuple[int, int] = (64, 64),
    beta_sd: float = 0.0,
    generator: torch.Generator | None = None,
    device: torch.device | str = "cpu",
    seeds: int = 1,
) -> Tensor:
    """Reference SI sequences.

    ``beta`` is one spread coefficient or one per site (``(H, W)``, a field). With ``seeds = 1`` each
    lattice starts from one aware site in its centre; with more, from ``seeds`` distinct aware sites drawn
    at random. With ``beta_sd > 0``, each sequence redraws ``beta_t ~ N(beta, beta_sd)`` every step,
    clipped into ``[0.001, 0.999]`` (the thesis's noisy setting).

    Returns:
        uint8 tensor of shape ``(n_sequences, n_frames, H, W)``; frame 0 is the initial state.
    """
    beta = torch.as_tensor(beta, dtype=torch.float32, device=device)
    check_values("beta", beta, Probability())
    if beta.ndim not in (0, 2) or (beta.ndim == 2 and tuple(beta.shape) != tuple(size)):
        raise InputError(f"beta: expected a number or one value per site of the {size[0]}x{size[1]} lattice, "
                         f"got shape {list(beta.shape)}")
    if beta_sd < 0:
        raise InputError(f"beta_sd: expected a standard deviation >= 0, got {beta_sd}")
    if n_sequences < 1 or n_frames < 2:
        raise InputError(f"need n_sequences >= 1 and n_frames >= 2, got {n_sequences} and {n_frames}")
    if not (isinstance(seeds, int) and 1 <= seeds <= size[0] * size[1]):
        raise InputError(f"seeds: expected 1 to {size[0] * size[1]} aware sites to start from, got {seeds}")
    sampler = StraightThrough()
    if seeds == 1:
        x = SI().initial_state(n_sequences, size, device)
    else:
        # the first `seeds` sites of a random order of each lattice's sites
        order = torch.rand(n_sequences, size[0] * size[1], generator=generator, device=device).argsort(1)
        x = torch.zeros(n_sequences, size[0] * size[1], device=device)
        x.scatter_(1, order[:, :seeds], 1.0)
        x = x.view(n_sequences, *size)
    frames = torch.zeros(n_sequences, n_frames, *x.shape[1:], dtype=torch.uint8, device=device)
    frames[:, 0] = x.to(torch.uint8)
    for t in range(1, n_frames):
        beta_t = (beta if beta.ndim else beta.view(1, 1)).expand(n_sequences, -1, -1)
        if beta_sd > 0:
            noise = torch.randn(n_sequences, 1, 1, generator=generator, device=device)
            beta_t = (beta_t + beta_sd * noise).clamp(0.001, 0.999)
        x = sampler.bernoulli(infection_probability(x, beta_t), generator)
        frames[:, t] = x.to(torch.uint8)
    return frames
