"""The best a persistent random walk (or a mixture of K walker classes) can do on an MSD curve, from its
exact expected MSD.

:meth:`slm.models.persistent_walk.PersistentRandomWalk.expected_msd` is differentiable in every
parameter, so the loss of a statistics fit can be minimised without simulation noise. This gives
the target that the approximate-gradient fit should reach, and the floor of ``msd_rel_error`` for
a given lattice scale and number of classes.
"""

from __future__ import annotations

import numpy as np
import torch
from scipy.optimize import minimize
from torch import Tensor

from slm.models.persistent_walk import PersistentRandomWalk


def prw_exact_fit(target: Tensor, mcs_per_frame: int = 1, dx: float = 1.0, loss: str = "relative",
                  classes: int = 1, starts: int = 25, seed: int = 0) -> dict[str, float | list[float]]:
    """Minimise the statistics-fit loss on the exact MSD over every parameter (L-BFGS-B on the unconstrained
    values from ``starts`` random starts, ``N(0, 2)`` each, seeded; the best local optimum wins).

    Args:
        target: MSD at lags ``1..K``, in ``dx`` units squared.
        loss: ``relative`` or ``squared`` (see :class:`slm.tasks.statistics.StatisticsFitting`).
        classes: walker classes of the mixture (1: the homogeneous walk).

    Returns:
        The fitted parameters by name (lists for a mixture) and ``msd_rel_error`` at the optimum.
    """
    target = torch.as_tensor(target, dtype=torch.float64)
    walk = PersistentRandomWalk(mcs_per_frame=mcs_per_frame, dx=dx, classes=classes).double()
    originals = [walk.parametrizations[name].original for name in walk.parameter_values()]
    sizes = [o.numel() for o in originals]

    def load(theta: np.ndarray) -> None:
        with torch.no_grad():
            for original, part in zip(originals, np.split(theta, np.cumsum(sizes)[:-1]), strict=True):
                original.copy_(torch.from_numpy(part).reshape(original.shape))

    def objective(theta: np.ndarray) -> tuple[float, np.ndarray]:
        load(theta)
        for original in originals:
            original.grad = None
        error = walk.expected_msd(len(target)) - target
        value = ((error / target) ** 2).sum() if loss == "relative" else (error**2).sum()
        value.backward()
        return float(value.detach()), np.concatenate([o.grad.reshape(-1).numpy() for o in originals])

    rng = np.random.default_rng(seed)
    best = min((minimize(objective, rng.normal(0, 2, sum(sizes)), jac=True, method="L-BFGS-B",
                         bounds=[(-12, 12)] * sum(sizes)) for _ in range(starts)), key=lambda r: r.fun)
    load(best.x)
    with torch.no_grad():
        relative = ((walk.expected_msd(len(target)) - target).abs() / target).mean()
        values = {name: value.tolist() for name, value in walk.parameter_values().items()}
        return values | {"msd_rel_error": float(relative)}
