"""Check the multi-cell CPM's gradients: each estimator's d E[statistic] / d parameter against a finite difference.

Two settings (:class:`Setting`): ``sorting`` (CompuCell3D's cellsort energies, scaled down: every
statistic of ``CellularPotts.summary`` after some MCS from a random mixture) and ``act`` (migrating cells
of ``experiment=cpm_tcells``: the MSD at lags 1 and 10, speed and persistence of the centroid tracks).
Every statistic is differentiated with respect to each parameter, at several parameter points:

* finite difference: the central difference of the batch-mean statistic at ``theta (1 +- step)`` with
  common random numbers (the same starting lattices and the same noise seed on both sides);
* each estimator (``ste``, ``gumbel``, ``score``): the gradient of the same batch mean, through
  ``model.surrogate`` (the score function's leave-one-out baseline needs the per-lattice values).

Each is the mean over ``repeats`` seeds with its standard error. A gradient is *usable* for a parameter
when its sign agrees with the finite difference wherever the difference is resolved (|mean| > 2 standard
errors); the ratio estimate / difference measures its scale bias.

    python scripts/potts_gradients.py --out docs/potts_gradients.json --plot docs/potts_gradients.png
    python scripts/potts_gradients.py --setting act --repeats 3 --out docs/act_gradients.json \
        --plot docs/act_gradients.png
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable
from dataclasses import dataclass

import torch
from matplotlib.figure import Figure
from torch import Tensor

from slm.estimators import Estimator, make_estimator
from slm.models.act import ActPotts
from slm.models.base import Simulator
from slm.models.potts import CellularPotts
from slm.parameters import set_values
from slm.stats import track_statistics
from slm.studies.cpm_gradients import mean_and_error

CONTACT = [[0, 16, 16], [16, 2, 11], [16, 11, 14]]
#: label -> (estimator name, Gumbel temperature)
ESTIMATORS = {"ste": ("ste", 1.0), "gumbel tau=1": ("gumbel", 1.0), "score": ("score", 1.0)}


@dataclass
class Setting:
    """What the study differentiates: ``statistics(model, seed)`` ``(B, m)`` (columns ``names``) of a model
    built by ``build(point, estimator)``, with respect to ``parameters`` (``positive`` ones stored as
    logarithms), at each of ``points``."""

    parameters: tuple[str, ...]
    positive: tuple[str, ...]
    points: tuple[dict[str, float], ...]
    names: tuple[str, ...]
    build: Callable[[dict[str, float], Estimator], Simulator]
    statistics: Callable[[Simulator, int], Tensor]


def sorting(lattices: int = 4, size: int = 48, cells: int = 40, mcs: int = 30) -> Setting:
    """Cell sorting: :meth:`CellularPotts.summary` after ``mcs`` MCS from a random mixture, with respect to
    ``J_dark_light``, ``J_light_light``, ``lambda_volume`` and ``T`` at the truth of ``cpm_sorting`` and its start."""
    parameters = ("J_dark_light", "J_light_light", "lambda_volume", "temperature")

    def build(point: dict[str, float], estimator: Estimator) -> CellularPotts:
        model = CellularPotts(CONTACT, type_names=["dark", "light"], learn=list(parameters), cells=cells,
                              estimator=estimator)
        set_values(model, point)
        return model

    def statistics(model: Simulator, seed: int) -> Tensor:
        start = model.initial_state(lattices, size, generator=torch.Generator().manual_seed(10_000 + seed))
        return model.summary(model.rollout(start, mcs, torch.Generator().manual_seed(seed)))

    points = ({"J_dark_light": 11.0, "J_light_light": 14.0, "lambda_volume": 2.0, "temperature": 10.0},
              {"J_dark_light": 16.5, "J_light_light": 7.0, "lambda_volume": 3.0, "temperature": 15.0})
    names = build(points[0], make_estimator("ste")).summary_names
    return Setting(parameters, ("lambda_volume", "temperature"), points, names, build, statistics)


def act(lattices: int = 16, size: int = 40, burn_in: int = 50, frames: int = 12, mcs_per_frame: int = 8) -> Setting:
    """Migrating cells (``experiment=cpm_tcells``'s act model): the track statistics (MSD at lags 1 and 10,
    speed, persistence) of one cell per lattice, with respect to ``lambda_act``, ``max_act`` and the
    surface target, at the experiment's start and near its fit."""
    parameters = ("lambda_act", "max_act", "surface_target")

    def build(point: dict[str, float], estimator: Estimator) -> ActPotts:
        model = ActPotts(learn=list(parameters), estimator=estimator)
        set_values(model, point)
        return model

    def statistics(model: Simulator, seed: int) -> Tensor:
        start = model.initial_state(lattices, size)
        recording = model.tracks(start, frames, mcs_per_frame, torch.Generator().manual_seed(seed), burn_in)
        tracks = recording.frames.transpose(1, 2)
        return track_statistics(tracks, 10)[:, [0, 9, 10, 11]]

    points = ({"lambda_act": 150.0, "max_act": 40.5, "surface_target": 160.0},
              {"lambda_act": 250.0, "max_act": 24.5, "surface_target": 160.0})
    return Setting(parameters, parameters, points, ("msd_1", "msd_10", "speed", "persistence"), build, statistics)


SETTINGS = {"sorting": sorting, "act": act}


def estimator_gradients(setting: Setting, point: dict[str, float], label: str, seed: int) -> dict[str, list[float]]:
    """``{parameter: [d mean statistic / d parameter for each statistic]}`` by one estimator, one seed."""
    name, tau = ESTIMATORS[label]
    model = setting.build(point, make_estimator(name, tau))
    statistics = model.surrogate(setting.statistics(model, seed)).mean(0)
    originals = [getattr(model.parametrizations, p).original for p in setting.parameters]
    grads = {p: [] for p in setting.parameters}
    for statistic in statistics:
        if not statistic.requires_grad:
            values = [None] * len(setting.parameters)
        else:
            values = torch.autograd.grad(statistic, originals, retain_graph=True, allow_unused=True)
        for p, g in zip(setting.parameters, values, strict=True):
            g = 0.0 if g is None else float(g)
            grads[p].append(g / point[p] if p in setting.positive else g)  # d/dx = d/dlog x / x
    return grads


@torch.no_grad()
def finite_differences(setting: Setting, point: dict[str, float], step: float, seed: int) -> dict[str, list[float]]:
    """Central differences with common random numbers, ``{parameter: [one per statistic]}``."""
    out = {}
    for p in setting.parameters:
        sides = []
        for sign in (1, -1):
            model = setting.build({**point, p: point[p] * (1 + sign * step)}, make_estimator("ste"))
            sides.append(setting.statistics(model, seed).mean(0))
        out[p] = ((sides[0] - sides[1]) / (2 * step * point[p])).tolist()
    return out


def study(setting: Setting, repeats: int, step: float, progress: Callable[[str], object] | None = None
          ) -> list[dict]:
    """A row per (point, parameter, statistic): ``(mean, standard error)`` of the finite difference and of
    each estimator over ``repeats`` seeds."""
    rows = []
    for point in setting.points:
        fd = [finite_differences(setting, point, step, s) for s in range(repeats)]
        est = {label: [estimator_gradients(setting, point, label, s) for s in range(repeats)] for label in ESTIMATORS}
        for p in setting.parameters:
            for j, statistic in enumerate(setting.names):
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
    points = list({json.dumps(r["point"], sort_keys=True): r["point"] for r in rows}.values())
    figure = Figure(figsize=(11, 3.6), layout="tight")
    axes = figure.subplots(1, len(points), squeeze=False)[0]
    for axis, point in zip(axes, points, strict=True):
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
