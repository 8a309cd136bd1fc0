r"""Bias and variance of each gradient estimator on SI, where the exact answers are known.

For a batch of observed transitions ``x -> y`` and the pixelwise MSE of the fit, each site's
contribution has the expectation ``E[(z - y)^2] = p + y - 2 p y`` (``p`` its infection
probability at ``beta``), so the expected loss and its gradient are exact:

    d/dbeta E[MSE] = mean_sites (1 - 2 y) dp/dbeta.

Every estimator (``ste``, ``gumbel`` at tau 0.1 / 0.5 / 1, ``score`` with a leave-one-out baseline
over the lattices of the batch) is sampled ``--repeats`` times; the table gives its mean, bias and
standard deviation against that exact gradient, and against the gradient of the least-squares
objective ``mean_sites (p - y)^2``, which is what the STE estimates without bias
(``E[2 (z - y) dp/dbeta] = 2 (p - y) dp/dbeta``). It also prints the minimisers of both objectives on
the whole data set next to the truth and the MLE: an unbiased gradient of the expected MSE leads to
the minimiser of the expected MSE, which is not the truth.

    python scripts/estimator_study.py --out docs/estimator_study.json --plot docs/estimator_study.png
"""

from __future__ import annotations

import argparse
import json
import math
import sys
from pathlib import Path

import matplotlib
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from slm.baselines.mle import si_beta_least_squares, si_beta_mle  # noqa: E402
from slm.estimators import GumbelSoftmax, ScoreFunction, StraightThrough, score_surrogate  # noqa: E402
from slm.models.si import infection_probability, simulate_si, transition_counts  # noqa: E402

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

ESTIMATORS = {"ste": StraightThrough(), "gumbel tau=0.1": GumbelSoftmax(0.1), "gumbel tau=0.5": GumbelSoftmax(0.5),
              "gumbel tau=1": GumbelSoftmax(1.0), "score": ScoreFunction()}


def expected_mse(x: torch.Tensor, y: torch.Tensor, beta: torch.Tensor) -> torch.Tensor:
    p = infection_probability(x, beta)
    return (p + y - 2 * p * y).mean()


def least_squares(x: torch.Tensor, y: torch.Tensor, beta: torch.Tensor) -> torch.Tensor:
    return ((infection_probability(x, beta) - y) ** 2).mean()


def exact_gradient(objective, x: torch.Tensor, y: torch.Tensor, beta: float) -> float:
    b = torch.tensor(beta, requires_grad=True)
    (grad,) = torch.autograd.grad(objective(x, y, b), b)
    return grad.item()


def sampled_gradient(name: str, x: torch.Tensor, y: torch.Tensor, beta: float, generator: torch.Generator) -> float:
    estimator = ESTIMATORS[name]
    b = torch.tensor(beta, requires_grad=True)
    p = infection_probability(x, b)
    z = estimator.bernoulli(p, generator)
    if estimator.pathwise:
        loss = ((z - y) ** 2).mean()
    else:
        per_lattice = ((z - y) ** 2).mean((-2, -1))
        eps = torch.finfo(p.dtype).eps
        log_prob = (z * torch.log(p.clamp_min(eps)) + (1 - z) * torch.log((1 - p).clamp_min(eps))).sum((-2, -1))
        loss = score_surrogate(per_lattice, log_prob).mean()
    (grad,) = torch.autograd.grad(loss, b)
    return grad.item()


def minimiser(objective, x: torch.Tensor, y: torch.Tensor) -> float:
    grid = torch.linspace(0.001, 0.999, 999)
    with torch.no_grad():
        values = torch.stack([objective(x, y, b) for b in grid])
    return float(grid[values.argmin()])


def study(beta_true: float, betas: list[float], repeats: int, batch: int, seed: int) -> dict:
    generator = torch.Generator().manual_seed(seed)
    frames = simulate_si(beta_true, n_sequences=batch, n_frames=12, generator=generator).float()
    x, y = frames[:, 5], frames[:, 6]  # a batch of transitions with a growing front
    everything_x, everything_y = frames[:, :-1].flatten(0, 1), frames[:, 1:].flatten(0, 1)
    counts = transition_counts(everything_x, everything_y)
    summary = {"beta_true": beta_true, "mle": si_beta_mle(counts),
               "least_squares_minimiser": si_beta_least_squares(counts),
               "expected_mse_minimiser": minimiser(expected_mse, everything_x, everything_y), "rows": []}
    print(f"truth {beta_true}: MLE {summary['mle']:.4f}, minimiser of the least-squares objective "
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
            print(f"beta={beta} {name:15s} mean {mean:+.5f} +- {row['se']:.5f} sd {sd:.5f} | exact dE[MSE] "
                  f"{exact:+.5f} bias {row['bias']:+.5f} ({100 * row['relative_bias']:+.0f}%) | "
                  f"d least squares {exact_ls:+.5f}")
    return summary


def plot(summary: dict, path: Path) -> None:
    rows = summary["rows"]
    betas = sorted({r["beta"] for r in rows})
    figure, axis = plt.subplots(figsize=(7.5, 4))
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
    figure.tight_layout()
    figure.savefig(path, dpi=120)
    plt.close(figure)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--beta-true", type=float, default=0.4)
    parser.add_argument("--betas", type=float, nargs="*", default=[0.2, 0.4, 0.6])
    parser.add_argument("--repeats", type=int, default=500)
    parser.add_argument("--batch", type=int, default=32, help="lattices (64x64) per gradient")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", type=Path, default=Path("estimator_study.json"))
    parser.add_argument("--plot", type=Path, default=Path("estimator_study.png"))
    args = parser.parse_args()
    summary = study(args.beta_true, args.betas, args.repeats, args.batch, args.seed)
    args.out.write_text(json.dumps(summary, indent=2) + "\n")
    plot(summary, args.plot)
    print(f"wrote {args.out} and {args.plot}")


if __name__ == "__main__":
    main()
