r"""Bias and variance of each gradient estimator on SI, where the exact answers are known.

For a batch of observed transitions ``x -> y`` and the pixelwise MSE of the fit, each site's
contribution has the expectation ``E[(z - y)^2] = p + y - 2 p y`` (``p`` its infection
probability at ``beta``), so the expected loss and its gradient are exact:

    d/dbeta E[MSE] = mean_sites (1 - 2 y) dp/dbeta.

Every estimator (``ste``, ``gumbel`` at tau 0.1 / 0.5 / 1, ``score`` with a leave-one-out baseline
over the lattices of the batch) is sampled ``repeats`` times; the table gives its mean, bias and
standard deviation against that exact gradient, and against the gradient of the least-squares
objective ``mean_sites (p - y)^2``, which is what the STE estimates without bias
(``E[2 (z - y) dp/dbeta] = 2 (p - y) dp/dbeta``). It also gives the minimisers of both objectives on
the whole data set next to the truth and the MLE: an unbiased gradient of the expected MSE leads to
the minimiser of the expected MSE, which is not the truth.

    python scripts/estimator_study.py --out docs/estimator_study.json --plot docs/estimator_study.png
"""

from __future__ import annotations

import math
from collections.abc import Callable
from functools import partial
from pathlib import Path

import torch
from matplotlib.figure import Figure
from torch import Tensor

from slm.estimators import Estimator, GumbelSoftmax, ScoreFunction, StraightThrough
from slm.models.si import infection_probability, simulate_si, transition_counts
from slm.si_likelihood import si_beta_least_squares, si_beta_mle

#: label -> a factory of the estimator (a fresh one per sample: the score function records its draws)
ESTIMATORS: dict[str, Callable[[], Estimator]] = {
    "ste": StraightThrough, "gumbel tau=0.1": partial(GumbelSoftmax, 0.1),
    "gumbel tau=0.5": partial(GumbelSoftmax, 0.5), "gumbel tau=1": partial(GumbelSoftmax, 1.0), "score": ScoreFunction}


def expected_mse(x: Tensor, y: Tensor, beta: Tensor) -> Tensor:
    """The exact expectation of the pixelwise MSE of one sampled step from ``x`` against ``y``."""
    p = infection_probability(x, beta)
    return (p + y - 2 * p * y).mean()


def least_squares(x: Tensor, y: Tensor, beta: Tensor) -> Tensor:
    """``mean_sites (p - y)^2``, the objective whose gradient the STE estimates without bias."""
    return ((infection_probability(x, beta) - y) ** 2).mean()


def exact_gradient(objective: Callable[[Tensor, Tensor, Tensor], Tensor], x: Tensor, y: Tensor, beta: float) -> float:
    """``d objective / d beta`` at ``beta``."""
    b = torch.tensor(beta, requires_grad=True)
    (grad,) = torch.autograd.grad(objective(x, y, b), b)
    return grad.item()


def sampled_gradient(name: str, x: Tensor, y: Tensor, beta: float, generator: torch.Generator) -> float:
    """One estimate of ``d MSE / d beta`` by the estimator ``name`` of :data:`ESTIMATORS` (lattices are the samples)."""
    estimator = ESTIMATORS[name]()
    b = torch.tensor(beta, requires_grad=True)
    z = estimator.bernoulli(infection_probability(x, b), generator)
    loss = estimator.surrogate(((z - y) ** 2).mean((-2, -1))).mean()
    (grad,) = torch.autograd.grad(loss, b)
    return grad.item()


def expected_mse_minimiser(counts: Tensor) -> float:
    """The ``beta`` of the grid 0.001, 0.002, ..., 0.999 that minimises :func:`expected_mse` on the
    transitions with :func:`~slm.models.si.transition_counts` ``counts``.

    Aware sites stay aware (``p = 1``), so only the ``S_n`` unaware sites with ``n`` aware neighbours, ``T_n``
    of which turn aware, depend on ``beta``: the sum of their ``p + y - 2 p y`` is ``sum_n p_n (S_n - 2 T_n)
    + T_n`` with ``p_n = 1 - (1 - beta)^n``.
    """
    grid = torch.linspace(0.001, 0.999, 999, dtype=torch.float64)
    n = torch.arange(counts.shape[0], dtype=torch.float64)
    p = -torch.expm1(n * torch.log1p(-grid[:, None]))  # (grid, n)
    susceptible, turned = counts.double().unbind(-1)
    return float(grid[(p * (susceptible - 2 * turned)).sum(-1).argmin()])


def study(beta_true: float, betas: list[float], repeats: int, batch: int, seed: int,
          progress: Callable[[str], object] | None = None) -> dict:
    """Every estimator's gradient at each of ``betas``, ``repeats`` times, on a batch of ``batch`` 64x64
    transitions simulated at ``beta_true`` (frame 5 to 6, a growing front).

    Returns ``{"beta_true", "mle", "least_squares_minimiser", "expected_mse_minimiser", "rows"}`` (the
    estimates on all transitions of the simulation), a row per beta and estimator with ``mean``, ``sd``,
    ``se``, the exact gradients and the biases against them. ``progress`` gets a line of text per result.
    """
    report = progress or (lambda line: None)
    generator = torch.Generator().manual_seed(seed)
    frames = simulate_si(beta_true, n_sequences=batch, n_frames=12, generator=generator).float()
    x, y = frames[:, 5], frames[:, 6]  # a batch of transitions with a growing front
    everything_x, everything_y = frames[:, :-1].flatten(0, 1), frames[:, 1:].flatten(0, 1)
    counts = transition_counts(everything_x, everything_y)
    summary = {"beta_true": beta_true, "mle": si_beta_mle(counts),
               "least_squares_minimiser": si_beta_least_squares(counts),
               "expected_mse_minimiser": expected_mse_minimiser(counts), "rows": []}
    report(f"truth {beta_true}: MLE {summary['mle']:.4f}, minimiser of the least-squares objective "
           f"{summary['least_squares_minimiser']:.4f}, minimiser of the expected MSE "
           f"{summary['expected_mse_minimiser']:.4f}")
    for beta in betas:
        exact = exact_gradient(expected_mse, x, y, beta)
        exact_ls = exact_gradient(least_squares, x, y, beta)
        for name in ESTIMATORS:
            samples = torch.tensor([sampled_gradient(name, x, y, beta, generator) for _ in range(repeats)])
            mean, sd = samples.mean().item(), samples.std().item()
            row = {"beta": beta, "estimator": name, "mean": mean, "sd": sd, "se": sd / math.sqrt(repeats),
                   "exact_expected_mse": exact, "bias": mean - exact, "relative_bias": (mean - exact) / abs(exact),
                   "exact_least_squares": exact_ls, "bias_vs_least_squares": mean - exact_ls}
            summary["rows"].append(row)
            report(f"beta={beta} {name:15s} mean {mean:+.5f} +- {row['se']:.5f} sd {sd:.5f} | exact dE[MSE] "
                   f"{exact:+.5f} bias {row['bias']:+.5f} ({100 * row['relative_bias']:+.0f}%) | "
                   f"d least squares {exact_ls:+.5f}")
    return summary


def plot(summary: dict, path: Path) -> None:
    """Each estimator's mean (+-1 sd) per beta against both exact gradients, saved to ``path``."""
    rows = summary["rows"]
    betas = sorted({r["beta"] for r in rows})
    figure = Figure(figsize=(7.5, 4), layout="tight")
    axis = figure.subplots()
    width = 0.8 / len(ESTIMATORS)
    for k, beta in enumerate(betas):
        first = next(r for r in rows if r["beta"] == beta)
        axis.hlines(first["exact_expected_mse"], k - 0.45, k + 0.45, colors="k", lw=2,
                    label="exact d E[MSE]" if k == 0 else None)
        axis.hlines(first["exact_least_squares"], k - 0.45, k + 0.45, colors="gray", linestyles="--", lw=2,
                    label="exact d least squares" if k == 0 else None)
    for i, name in enumerate(ESTIMATORS):
        chosen = [next(r for r in rows if r["beta"] == b and r["estimator"] == name) for b in betas]
        positions = [k + (i - len(ESTIMATORS) / 2 + 0.5) * width for k in range(len(betas))]
        axis.errorbar(positions, [r["mean"] for r in chosen], yerr=[r["sd"] for r in chosen], fmt="o", ms=4,
                      capsize=2, label=name)
    axis.set_xticks(range(len(betas)), [f"beta = {b}" for b in betas])
    axis.set_ylabel("dL/dbeta (mean, bars +-1 sd of one estimate)")
    axis.set_title(f"SI, truth beta = {summary['beta_true']}: gradient estimates of the pixelwise MSE")
    axis.legend(fontsize=7, ncols=2)
    figure.savefig(path, dpi=120)
