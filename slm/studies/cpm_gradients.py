"""Diagnose the CPM's gradients: each estimator's dE[MSD]/dT against the truth, across T.

The truth is known two ways: exactly, by differentiating the Markov-chain expectation
(``OnePixelCPM.expected_msd``), and empirically, by a central finite difference of the simulated
mean MSD at ``T (1 +- h)`` with common random numbers. Each estimator's gradient is the mean over
``repeats`` batches of ``cells`` cells (the training setting: 4000 cells, 800 steps), with its
standard error.

    python scripts/cpm_gradients.py --out docs/cpm_gradients.json --plot docs/cpm_gradients.png
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable
from pathlib import Path

import torch
from matplotlib.figure import Figure

from slm.estimators import make_estimator
from slm.models.cpm import OnePixelCPM

COLOURS = {"finite difference": "tab:gray", "score": "tab:blue", "ste": "tab:orange", "gumbel tau=1": "tab:green",
           "gumbel tau=0.5": "tab:red"}
#: label -> (estimator name, Gumbel temperature)
ESTIMATORS = {"score": ("score", 1.0), "ste": ("ste", 1.0), "gumbel tau=1": ("gumbel", 1.0),
              "gumbel tau=0.5": ("gumbel", 0.5)}
TEMPERATURES = (0.2, 0.25, 0.3, 0.35, 0.4, 0.5, 0.75, 1.0, 1.5, 2.0)
#: sampling steps of one MSD frame, as in training
STEPS = 800


def mean_and_error(values: list[float]) -> tuple[float, float]:
    """The mean of ``values`` and its standard error."""
    mean = sum(values) / len(values)
    var = sum((v - mean) ** 2 for v in values) / max(len(values) - 1, 1)
    return mean, math.sqrt(var / len(values))


def estimator_gradient(temperature: float, name: str, tau: float, cells: int, seed: int) -> float:
    """``dMSD/dT`` after one frame of ``cells`` cells by the estimator ``name`` (Gumbel temperature ``tau``)."""
    model = OnePixelCPM(temperature, estimator=make_estimator(name, tau), steps_per_frame=STEPS)
    model.msd(cells, 1, torch.Generator().manual_seed(seed)).sum().backward()
    return model.parametrizations.temperature.original.grad.item() / temperature  # d/dT = d/dlog T / T


@torch.no_grad()
def finite_difference(temperature: float, step: float, cells: int, seed: int) -> float:
    """Central difference of the simulated MSD at ``T (1 +- step)`` with common random numbers."""
    def msd(t: float) -> float:
        return float(OnePixelCPM(t, steps_per_frame=STEPS).msd(cells, 1, torch.Generator().manual_seed(seed)))

    return (msd(temperature * (1 + step)) - msd(temperature * (1 - step))) / (2 * step * temperature)


def study(cells: int, repeats: int, step: float, temperatures: Iterable[float] = TEMPERATURES,
          progress: Callable[[str], object] | None = None) -> list[dict]:
    """A row per temperature: ``acceptance``, exact ``msd`` and ``exact`` gradient, and ``(mean, standard
    error)`` of the ``finite difference`` and of each of :data:`ESTIMATORS` over ``repeats`` seeds.
    ``progress`` gets a line of text per row."""
    rows = []
    for temperature in temperatures:
        model = OnePixelCPM(temperature)
        expected = model.expected_msd(STEPS)
        (exact,) = torch.autograd.grad(expected, model.parametrizations.temperature.original)
        row = {"temperature": temperature, "acceptance": float(model.acceptance.detach()),
               "msd": float(expected.detach()), "exact": exact.item() / temperature}
        row["finite difference"] = mean_and_error([finite_difference(temperature, step, cells, s)
                                                   for s in range(repeats)])
        for label, (name, tau) in ESTIMATORS.items():
            row[label] = mean_and_error([estimator_gradient(temperature, name, tau, cells, s) for s in range(repeats)])
        rows.append(row)
        if progress is not None:
            progress(f"T={temperature:<5} p={row['acceptance']:.4f} E[MSD]={row['msd']:6.2f} exact {row['exact']:8.3f}"
                     " | " + " | ".join(f"{k} {row[k][0]:8.3f}+-{row[k][1]:.3f}"
                                        for k in ("finite difference", *ESTIMATORS)))
    return rows


@torch.no_grad()
def exact_temperature(target: float, low: float = 0.05, high: float = 20.0) -> float:
    """The ``T`` whose exact mean MSD after 800 steps is ``target`` (bisection in log T; monotone)."""
    for _ in range(40):
        middle = math.sqrt(low * high)
        low, high = (middle, high) if float(OnePixelCPM(middle).expected_msd(STEPS)) < target else (low, middle)
    return math.sqrt(low * high)


def plot(rows: list[dict], path: Path) -> None:
    """Gradients against T (left) and relative to the exact one (right), saved to ``path``."""
    figure = Figure(figsize=(10, 3.8), layout="tight")
    left, right = figure.subplots(1, 2)
    temperatures = [r["temperature"] for r in rows]
    left.plot(temperatures, [r["exact"] for r in rows], "k-", lw=2, label="exact")
    for label, marker in zip(["finite difference", *ESTIMATORS], "osvD^", strict=True):
        means = [r[label][0] for r in rows]
        errors = [r[label][1] for r in rows]
        left.errorbar(temperatures, means, yerr=errors, marker=marker, ls="--" if label == "finite difference" else ":",
                      ms=4, capsize=2, color=COLOURS[label], label=label)
    left.set_yscale("log")
    left.set_xlabel("temperature T")
    left.set_ylabel("dE[MSD]/dT")
    left.legend(fontsize=7)
    left.set_title("gradient of the mean MSD (800 steps)")
    for label in ESTIMATORS:
        right.plot(temperatures, [r[label][0] / r["exact"] for r in rows], marker="o", ms=4, color=COLOURS[label],
                   label=label)
    right.axhline(1.0, color="k", lw=1)
    right.plot(temperatures, [r["acceptance"] for r in rows], "k:", label="acceptance exp(-1/T)")
    right.set_yscale("log")
    right.set_xlabel("temperature T")
    right.set_ylabel("estimate / exact")
    right.legend(fontsize=7)
    right.set_title("relative to the exact gradient")
    figure.savefig(path, dpi=120)
