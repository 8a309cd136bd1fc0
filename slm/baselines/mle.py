r"""Exact estimators of the SI spread coefficient from sufficient statistics.

With ``S_n`` unaware sites that had ``n`` aware neighbours and ``I_n`` of them turning aware,

    log L(beta) = sum_{n=1}^{8} I_n log(1 - (1 - beta)^n) + (S_n - I_n) n log(1 - beta).

Sites with ``n = 0`` carry no information on ``beta`` (and ``I_0 > 0`` is impossible under the
model), so they are left out.

The pixelwise-MSE fit with the straight-through estimator does not target the MLE: its expected
gradient ``2 (p - y) dp/dbeta`` is the gradient of the least-squares objective

    Q(beta) = sum_n I_n (1 - p_n)^2 + (S_n - I_n) p_n^2,    p_n = 1 - (1 - beta)^n,

so its fixed point is ``argmin Q``, :func:`si_beta_least_squares`. Both are consistent when the
data come from the model; they differ when the model is misspecified (e.g. beta redrawn every step).
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
from scipy.optimize import minimize_scalar
from torch import Tensor

from slm.errors import InputError


def si_log_likelihood(beta: float, counts: Tensor | np.ndarray) -> float:
    """``log L(beta)`` from ``counts`` of shape ``(9, 2)`` (see :func:`slm.models.si.transition_counts`)."""
    counts = np.asarray(counts, dtype=np.float64)
    n = np.arange(1, counts.shape[0])
    susceptible, infected = counts[1:, 0], counts[1:, 1]
    log_stay = n * np.log1p(-beta)
    return float(np.sum(infected * np.log(-np.expm1(log_stay)) + (susceptible - infected) * log_stay))


def si_least_squares(beta: float, counts: Tensor | np.ndarray) -> float:
    """``Q(beta)``, the expected-prediction squared error, from ``counts`` of shape ``(9, 2)``."""
    counts = np.asarray(counts, dtype=np.float64)
    p = -np.expm1(np.arange(counts.shape[0]) * np.log1p(-beta))
    susceptible, infected = counts[:, 0], counts[:, 1]
    return float(np.sum(infected * (1 - p) ** 2 + (susceptible - infected) * p**2))


def _argmin(objective: Callable[[float], float], counts: Tensor | np.ndarray) -> float:
    counts = np.asarray(counts, dtype=np.float64)
    if counts[1:, 0].sum() == 0:
        raise InputError("data: no unaware site ever has an aware neighbour, so beta cannot be estimated")
    result = minimize_scalar(lambda b: objective(b, counts), bounds=(1e-9, 1 - 1e-9), method="bounded",
                             options={"xatol": 1e-9})
    return float(result.x)


def si_beta_mle(counts: Tensor | np.ndarray) -> float:
    """The maximum-likelihood ``beta`` (bounded Brent search on (0, 1), tolerance 1e-9)."""
    return _argmin(lambda b, c: -si_log_likelihood(b, c), counts)


def si_beta_least_squares(counts: Tensor | np.ndarray) -> float:
    """``argmin Q``: where the MSE fit with the straight-through estimator converges."""
    return _argmin(si_least_squares, counts)
