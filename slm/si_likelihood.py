r"""The exact likelihood of the SI model and its estimators of the spread coefficient, from sufficient statistics.

With ``S_n`` unaware sites that had ``n`` aware neighbours and ``I_n`` of them turning aware,

    log L(beta) = sum_{n=1}^{8} I_n log(1 - (1 - beta)^n) + (S_n - I_n) n log(1 - beta).

Sites with ``n = 0`` carry no information on ``beta`` (and ``I_0 > 0`` is impossible under the
model: ``log L = -inf``). :func:`log_likelihood` evaluates it in torch (differentiable, any batch of
count tables: :meth:`slm.models.SI.log_likelihood` is it on per-lattice counts).
``log L`` is concave in ``beta`` (each term is), so its maximum is the
root of the score

    d log L / d beta = sum_n I_n n (1 - beta)^(n-1) / (1 - (1 - beta)^n) - (S_n - I_n) n / (1 - beta),

which decreases in ``beta``. :func:`si_beta_mle_blocks` bisects it for every block of a field at once
(one ``beta`` per block of the lattice, each with its own counts); :func:`si_beta_mle` is the one-block case.

The pixelwise-MSE fit with the straight-through estimator does not target the MLE: its expected
gradient ``2 (p - y) dp/dbeta`` is the gradient of the least-squares objective

    Q(beta) = sum_n I_n (1 - p_n)^2 + (S_n - I_n) p_n^2,    p_n = 1 - (1 - beta)^n,

so its fixed point is ``argmin Q``, :func:`si_beta_least_squares`. Both are consistent when the
data come from the model; they differ when the model is misspecified (e.g. beta redrawn every step).
"""

from __future__ import annotations

import numpy as np
import torch
from scipy.optimize import minimize_scalar
from torch import Tensor

from slm.errors import InputError

#: Aware neighbours of a site: 0..8 (Moore).
MAX_NEIGHBOURS = 8


def log_likelihood(beta: Tensor, counts: Tensor) -> Tensor:
    """``log L(beta)`` from ``counts (..., 9, 2)`` (:func:`slm.models.si.transition_counts`: unaware sites and
    those that turned, per number of aware neighbours) and ``beta`` broadcastable to ``(...)``; shape ``(...)``,
    ``-inf`` where a site turned with no aware neighbour. Differentiable in ``beta``."""
    counts = counts.to(beta.dtype if beta.is_floating_point() else torch.float64)
    n = torch.arange(MAX_NEIGHBOURS + 1, device=counts.device, dtype=counts.dtype)
    log_not = torch.log1p(-beta)[..., None]
    log_stay = n * log_not
    # n >= 1 inside log(1 - (1-beta)^n) keeps the unused where() branch from poisoning the gradient.
    log_turn = torch.log(-torch.expm1(n.clamp_min(1) * log_not))
    unaware, turned = counts[..., 0], counts[..., 1]
    informative = turned * log_turn + (unaware - turned) * log_stay
    impossible = torch.where(turned > 0, -torch.inf, 0.0)
    return torch.where(n > 0, informative, impossible).sum(-1)


def si_log_likelihood(beta: float, counts: Tensor | np.ndarray) -> float:
    """``log L(beta)`` from one table of ``counts (9, 2)``, as a number (:func:`log_likelihood`)."""
    return float(log_likelihood(torch.tensor(float(beta), dtype=torch.float64),
                                torch.as_tensor(np.asarray(counts), dtype=torch.float64)))


def si_least_squares(beta: float, counts: Tensor | np.ndarray) -> float:
    """``Q(beta)``, the expected-prediction squared error, from ``counts`` of shape ``(9, 2)``."""
    counts = np.asarray(counts, dtype=np.float64)
    p = -np.expm1(np.arange(counts.shape[0]) * np.log1p(-beta))
    susceptible, infected = counts[:, 0], counts[:, 1]
    return float(np.sum(infected * (1 - p) ** 2 + (susceptible - infected) * p**2))


def si_beta_mle_blocks(counts: Tensor | np.ndarray, iterations: int = 100) -> np.ndarray:
    """The maximum-likelihood ``beta`` of each block from its counts ``(d, 9, 2)``: ``(d,)`` float64.

    Bisection of the score on the logit of ``beta`` in ``[-40, 40]`` (``iterations`` halvings: the logit
    to 1e-28), all blocks at once. A block where no site turned aware gets ``~0`` and one where every
    exposed site did gets ``~1`` (the MLE on the boundary); a block where no unaware site ever had an
    aware neighbour carries no information and gets NaN.
    """
    counts = np.asarray(counts, dtype=np.float64)
    if counts.ndim != 3 or counts.shape[1:] != (9, 2):
        raise InputError(f"counts: expected shape (blocks, 9, 2), got {counts.shape}")
    n = np.arange(1, 9)
    susceptible, infected = counts[:, 1:, 0], counts[:, 1:, 1]
    low, high = np.full(len(counts), -40.0), np.full(len(counts), 40.0)
    with np.errstate(divide="ignore", invalid="ignore"):
        for _ in range(iterations):
            middle = (low + high) / 2
            stay = np.log1p(-1 / (1 + np.exp(-middle)))[:, None]  # log(1 - beta)
            # n (1-b)^(n-1) / (1 - (1-b)^n) - ... times (1 - b) > 0, which keeps the sign: no division by 1 - b
            score = (infected * n * np.exp(n * stay) / -np.expm1(n * stay) - (susceptible - infected) * n).sum(1)
            up = score > 0
            low, high = np.where(up, middle, low), np.where(up, high, middle)
    beta = 1 / (1 + np.exp(-(low + high) / 2))
    return np.where(susceptible.sum(1) > 0, beta, np.nan)


def si_beta_mle(counts: Tensor | np.ndarray) -> float:
    """The maximum-likelihood ``beta`` from ``counts`` of shape ``(9, 2)`` (one block of
    :func:`si_beta_mle_blocks`)."""
    counts = np.asarray(counts, dtype=np.float64)
    if counts[1:, 0].sum() == 0:
        raise InputError("data: no unaware site ever has an aware neighbour, so beta cannot be estimated")
    return float(si_beta_mle_blocks(counts[None])[0])


def si_beta_least_squares(counts: Tensor | np.ndarray) -> float:
    """``argmin Q``: where the MSE fit with the straight-through estimator converges (bounded Brent
    search on (0, 1), tolerance 1e-9)."""
    counts = np.asarray(counts, dtype=np.float64)
    if counts[1:, 0].sum() == 0:
        raise InputError("data: no unaware site ever has an aware neighbour, so beta cannot be estimated")
    result = minimize_scalar(lambda b: si_least_squares(b, counts), bounds=(1e-9, 1 - 1e-9), method="bounded",
                             options={"xatol": 1e-9})
    return float(result.x)


def si_posterior_interval(counts: Tensor | np.ndarray, level: float = 0.9, points: int = 20_000) -> list[float]:
    """The exact posterior's equal-tailed ``level`` interval of ``beta`` under a uniform prior on (0, 1), from
    one table of ``counts (9, 2)`` (:func:`log_likelihood` on a grid of ``points``): the reference width that
    an interval of the fit is compared with."""
    beta = (torch.arange(points, dtype=torch.float64) + 0.5) / points
    counts = torch.as_tensor(np.asarray(counts), dtype=torch.float64).clone()
    counts[0] = 0  # sites with no aware neighbour carry no information on beta (and impossible turns, as the MLE)
    log_post = log_likelihood(beta, counts[None])
    cdf = torch.softmax(log_post - log_post.max(), 0).cumsum(0)
    tail = (1 - level) / 2
    upper = torch.searchsorted(cdf, 1 - tail).clamp_max(points - 1)
    return [float(beta[torch.searchsorted(cdf, tail)]), float(beta[upper])]
