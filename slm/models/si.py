r"""Susceptible-infected ("news spreading") lattice model.

A binary ``H x W`` torus, ``1`` = aware. With ``n`` aware Moore neighbours an unaware site becomes
aware with probability ``p = 1 - (1 - beta)^n``; aware sites stay aware; all sites update at once:

    P(x_{t+1} | x_t, beta) = prod_sites p(x_{t+1} | x_t, n_t, beta),
    p(1 | 1, n) = 1,    p(1 | 0, n) = 1 - (1 - beta)^n,    p(0 | 0, n) = (1 - beta)^n.

``beta`` is stored as a logit. One step is differentiable in ``beta`` through the estimator.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable

import torch
from torch import Tensor

from slm.baselines.mle import si_beta_least_squares, si_beta_mle
from slm.errors import InputError
from slm.estimators import Estimator, StraightThrough, make_estimator
from slm.lattice import moore_neighbour_sum
from slm.models.base import Simulator
from slm.parameters import Probability, register

log = logging.getLogger(__name__)

MAX_NEIGHBOURS = 8


def infection_probability(x: Tensor, beta: Tensor | float) -> Tensor:
    """``p = x + (1 - x) (1 - (1 - beta)^n)``: the probability that each site is aware next step.

    Args:
        x: float 0/1 lattices, shape ``(..., H, W)``.
        beta: scalar, or a tensor broadcastable to ``x`` (one beta per lattice, e.g. ``(B, 1, 1)``).
    """
    log_stay = moore_neighbour_sum(x) * torch.log1p(-torch.as_tensor(beta, dtype=x.dtype, device=x.device))
    return x - (1 - x) * torch.expm1(log_stay)


class SI(Simulator):
    """The SI model with a learnable spread coefficient ``beta``.

    State: float 0/1 lattices ``(B, H, W)``; one :meth:`step` draws every site's next value through
    ``estimator``.

    Args:
        beta: initial spread coefficient, in (0, 1).
        estimator: an :class:`slm.estimators.Estimator` or its name (``ste``, ``gumbel``, ``score``).
    """

    def __init__(self, beta: float = 0.1, estimator: Estimator | str = "ste"):
        super().__init__()
        register(self, "beta", beta, Probability())
        self.estimator = make_estimator(estimator)

    def prepare(self) -> tuple[Tensor]:
        return (self.beta,)

    def transition(self, x: Tensor, prepared: tuple[Tensor], generator: torch.Generator | None = None) -> Tensor:
        """One synchronous step: ``x`` float 0/1 of shape ``(B, H, W)`` to a hard 0/1 sample of the same shape."""
        return self.estimator.bernoulli(infection_probability(x, prepared[0]), generator)

    def initial_state(self, batch: int, size: int | tuple[int, int], device: torch.device | None = None,
                      generator: torch.Generator | None = None) -> Tensor:
        """One aware site in the centre of each lattice."""
        height, width = (size, size) if isinstance(size, int) else size
        x = torch.zeros(batch, height, width, device=device)
        x[:, height // 2, width // 2] = 1
        return x

    def reference_metrics(self, transitions: Iterable[tuple[Tensor, Tensor]]) -> dict[str, float]:
        """The exact maximum-likelihood ``beta`` (``beta_mle``) and the exact least-squares ``beta``
        (``beta_lsq``, the fixed point of the pixelwise-MSE fit with the straight-through estimator, see
        :mod:`slm.baselines.mle`) on the given transitions."""
        counts = sum(transition_counts(x.float(), y) for x, y in transitions).cpu()
        if int(counts[0, 1]):
            log.warning("%d sites turned aware with no aware neighbour, which the SI model cannot do; "
                        "the MLE ignores them", int(counts[0, 1]))
        return {"beta_mle": si_beta_mle(counts), "beta_lsq": si_beta_least_squares(counts)}

    def log_likelihood(self, x: Tensor, y: Tensor) -> Tensor:
        """Exact ``log P(y | x, beta)`` per lattice, shape ``(B,)``; ``-inf`` for impossible transitions."""
        n = moore_neighbour_sum(x)
        log_stay = n * torch.log1p(-self.beta)
        # n >= 1 inside log(1 - (1-beta)^n) keeps the unused where() branch from poisoning the gradient.
        log_infect = torch.log(-torch.expm1(n.clamp_min(1) * torch.log1p(-self.beta)))
        log_infect = torch.where(n > 0, log_infect, -torch.inf)
        per_site = torch.where(
            x > 0,
            torch.where(y > 0, 0.0, -torch.inf),
            torch.where(y > 0, log_infect, log_stay),
        )
        return per_site.sum((-2, -1))


def transition_counts(x: Tensor, y: Tensor) -> Tensor:
    """Sufficient statistics of the SI likelihood.

    Returns an int64 tensor of shape ``(9, 2)``: row ``n`` holds the number of sites unaware in ``x``
    with ``n`` aware neighbours, and how many of them are aware in ``y``. ``x``, ``y``: ``(B, H, W)``.
    """
    x = x.float()
    n = moore_neighbour_sum(x).long()
    unaware = x == 0
    infected = unaware & (y > 0)
    susceptible = torch.bincount(n[unaware], minlength=MAX_NEIGHBOURS + 1)
    turned = torch.bincount(n[infected], minlength=MAX_NEIGHBOURS + 1)
    return torch.stack([susceptible, turned], dim=1)


@torch.no_grad()
def simulate_si(
    beta: float,
    n_sequences: int,
    n_frames: int,
    size: tuple[int, int] = (64, 64),
    beta_sd: float = 0.0,
    generator: torch.Generator | None = None,
    device: torch.device | str = "cpu",
) -> Tensor:
    """Reference SI sequences from one aware site in the centre of each lattice.

    With ``beta_sd > 0``, each sequence redraws ``beta_t ~ N(beta, beta_sd)`` every step, clipped
    into ``[0.001, 0.999]`` (the thesis's noisy setting).

    Returns:
        uint8 tensor of shape ``(n_sequences, n_frames, H, W)``; frame 0 is the initial state.
    """
    Probability.check("beta", beta)
    if beta_sd < 0:
        raise InputError(f"beta_sd: expected a standard deviation >= 0, got {beta_sd}")
    if n_sequences < 1 or n_frames < 2:
        raise InputError(f"need n_sequences >= 1 and n_frames >= 2, got {n_sequences} and {n_frames}")
    sampler = StraightThrough()
    x = SI().initial_state(n_sequences, size, device)
    frames = torch.zeros(n_sequences, n_frames, *x.shape[1:], dtype=torch.uint8, device=device)
    frames[:, 0] = x.to(torch.uint8)
    for t in range(1, n_frames):
        beta_t = torch.full((n_sequences, 1, 1), float(beta), device=device)
        if beta_sd > 0:
            noise = torch.randn(beta_t.shape, generator=generator, device=device)
            beta_t = (beta_t + beta_sd * noise).clamp(0.001, 0.999)
        x = sampler.bernoulli(infection_probability(x, beta_t), generator)
        frames[:, t] = x.to(torch.uint8)
    return frames
