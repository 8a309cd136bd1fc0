"""Check the multi-cell CPM's gradients: each estimator's d E[statistic] / d parameter against a finite difference.

For the cell-sorting setting (CompuCell3D's cellsort energies, scaled down to ``size`` lattices with
``cells`` cells), every statistic of ``CellularPotts.summary`` after ``mcs`` MCS from a random mixture
is differentiated with respect to each fitted parameter, at several parameter points:

* finite difference: the central difference of the batch-mean statistic at ``theta (1 +- step)`` with
  common random numbers (the same starting lattices and the same noise seed on both sides);
* each estimator (``ste``, ``gumbel``, ``score``): the gradient of the same batch mean, through
  ``model.surrogate`` (the score function's leave-one-out baseline needs the per-lattice values).

Each is the mean over ``repeats`` seeds with its standard error. A gradient is *usable* for a parameter
when its sign agrees with the finite difference wherever the difference is resolved (|mean| > 2 standard
errors); the ratio estimate / difference measures its scale bias.

    python scripts/potts_gradients.py --out docs/potts_gradients.json --plot docs/potts_gradients.png
"""

from __future__ import annotations

import math
from collections.abc import Callable

import torch
from matplotlib.figure import Figure

from slm.estimators import make_estimator
from slm.models.potts import CellularPotts
from slm.parameters import set_values
from slm.studies.cpm_gradients import mean_and_error

CONTACT = [[0, 16, 16], [16, 2, 11], [16, 11, 14]]
PARAMETERS = ("J_dark_light", "J_light_light", "lambda_volume", "temperature")
#: the truth of cpm_sorting and the experiment's start
POINTS = ({"J_dark_light": 11.0, "J_light_light": 14.0, "lambda_volume": 2.0, "temperature": 10.0},
          {"J_dark_light": 16.5, "J_light_light": 7.0, "lambda_volume": 3.0, "temperature": 15.0})
#: stored as logarithms
POSITIVE = ("lambda_volume", "temperature")
#: label -> (estimator name, Gumbel temperature)
ESTIMATORS = {"ste": ("ste", 1.0), "gumbel tau=1": ("gumbel", 1.0), "score": ("score", 1.0)}


def make_model(point: dict[str, float], estimator: str, tau: float, cells: int) -> CellularPotts:
    model = CellularPotts(CONTACT, type_names=["dark", "light"], learn=list(PARAMETERS), cells=cells,
                          estimator=make_estimator(estimator, tau))
    set_values(model, point)
    return model


def starts(model: CellularPotts, lattices: int, size: int, seed: int) -> tuple:
    return model.initial_state(lattices, size, generator=torch.Generator().manual_seed(10_000 + seed))


def estimator_gradients(point: dict[str, float], label: str, lattices: int, size: int, cells: int, mcs: int,
                        seed: int) -> dict[str, list[float]]:
    """``{parameter: [d mean statistic / d parameter for each statistic]}`` by one estimator, one seed."""
    name, tau = ESTIMATORS[label]
    model = make_model(point, name, tau, cells)
    state = model.rollout(starts(model, lattices, size, seed), mcs, torch.Generator().manual_seed(seed))
    statistics = model.surrogate(model.summary(state)).mean(0)
    originals = [getattr(model.parametrizations, p).original for p in PARAMETERS]
    grads = {p: [] for p in PARAMETERS}
    for statistic in statistics:
        if not statistic.requires_grad:
            values = [None] * len(PARAMETERS)
        else:
            values = torch.autograd.grad(statistic, originals, retain_graph=True, allow_unused=True)
        for p, g in zip(PARAMETERS, values, strict=True):
            g = 0.0 if g is None else float(g)
            grads[p].append(g / point[p] if p in POSITIVE else g)  # d/dx = d/dlog x / x
    return grads


@torch.no_grad()
def finite_differences(point: dict[str, float], lattices: int, size: int, cells: int, mcs: int, step: float,
                       seed: int) -> dict[str, list[float]]:
    """Central differences with common random numbers, ``{parameter: [one per statistic]}``."""
    out = {}
    for p in PARAMETERS:
        sides = []
        for sign in (1, -1):
            model = make_model({**point, p: point[p] * (1 + sign * step)}, "ste", 1.0, cells)
            state = model.rollout(starts(model, lattices, size, seed), mcs, torch.Generator().manual_seed(seed))
            sides.append(model.summary(state).mean(0))
        out[p] = ((sides[0] - sides[1]) / (2 * step * point[p])).tolist()
    return out


def study(lattices: int, size: int, cells: int, mcs: int, repeats: int, step: float,
          progress: Callable[[str], object] | None = None) -> list[dict]:
    """A row per (point, parameter, statistic): ``(mean, standard error)`` of the finite difference and of
    each estimator over ``repeats`` seeds."""
    rows = []
    for point in POINTS:
        fd = [finite_differences(point, lattices, size, cells, mcs, step, s) for s in range(repeats)]
        est = {label: [estimator_gradients(point, label, lattices, size, cells, mcs, s) for s in range(repeats)]
               for label in ESTIMATORS}
        for p in PARAMETERS:
            for j, statistic in enumerate(make_model(point, "ste", 1.0, cells).summary_names):
                row = {"point": point, "parameter": p, "statistic": statistic,
                       "finite difference": mean_and_error([r[p][j] for r in fd])}
                for label in ESTIMATORS:
                    row[label] = mean_and_error([r[p][j] for r in est[label]])
                rows.append(row)
                if progress is not None:
                    progress(f"{point} d {statistic}/d {p}: " + " | ".join(
                        f"{k} {row[k][0]:+.4g}+-{row[k][1]:.2g}" for k in ("finite difference", *ESTIMATORS)))
    return rows


def verdicts(rows: list[dict]) -> dict[str, dict]:
    """Per estimator: how many resolved finite differences it matches in sign, and the median ratio."""
    out = {}
    for label in ESTIMATORS:
        resolved = [r for r in rows if abs(r["finite difference"][0]) > 2 * r["finite difference"][1]]
        agree = [r for r in resolved if r[label][0] * r["finite difference"][0] > 0]
        ratios = sorted(r[label][0] / r["finite difference"][0] for r in resolved)
        out[label] = {"resolved": len(resolved), "same_sign": len(agree),
                      "median_ratio": ratios[len(ratios) // 2] if ratios else math.nan}
    return out


def plot(rows: list[dict], path) -> None:
    """Estimator / finite difference per (parameter, statistic) at each point, saved to ``path``."""
    figure = Figure(figsize=(11, 3.6), layout="tight")
    axes = figure.subplots(1, len(POINTS), squeeze=False)[0]
    for axis, point in zip(axes, POINTS, strict=True):
        mine = [r for r in rows if r["point"] == point]
        labels = [f"{r['statistic']}\n/{r['parameter']}" for r in mine]
        for k, (label, colour) in enumerate(zip(ESTIMATORS, ("tab:orange", "tab:green", "tab:blue"), strict=True)):
            values = [r[label][0] / r["finite difference"][0] if r["finite difference"][0] else math.nan for r in mine]
            axis.scatter([i + 0.2 * (k - 1) for i in range(len(mine))], [max(min(v, 10), -10) for v in values],
                         s=12, color=colour, label=label)
        axis.axhline(1, color="k", lw=1)
        axis.axhline(0, color="gray", lw=0.5)
        axis.set_xticks(range(len(mine)), labels, rotation=90, fontsize=6)
        axis.set_ylabel("estimate / finite difference (clipped to +-10)")
        axis.set_title(", ".join(f"{k}={v:g}" for k, v in point.items()), fontsize=8)
    axes[0].legend(fontsize=7)
    figure.savefig(path, dpi=120)
