"""The best a persistent random walk can do on an MSD curve, from its exact expected MSD.

:meth:`slm.models.persistent_walk.PersistentRandomWalk.expected_msd` is differentiable in both
parameters, so the loss of a statistics fit can be minimised without simulation noise. This gives
the target that the approximate-gradient fit should reach, and the floor of ``msd_rel_error`` for
a given lattice scale.
"""

from __future__ import annotations

import numpy as np
import torch
from scipy.optimize import minimize
from torch import Tensor

from slm.models.persistent_walk import PersistentRandomWalk


def prw_exact_fit(target: Tensor, mcs_per_frame: int = 1, dx: float = 1.0, loss: str = "relative",
                  starts: int = 5) -> dict[str, float]:
    """Minimise the statistics-fit loss on the exact MSD over (p_center, p_resample).

    Args:
        target: MSD at lags ``1..K``, in ``dx`` units squared.
        loss: ``relative`` or ``squared`` (see :class:`slm.tasks.statistics.StatisticsFitting`).
        starts: grid of ``starts x starts`` initial logits; the best local optimum wins.

    Returns:
        ``{"p_center", "p_resample", "msd_rel_error"}`` at the optimum.
    """
    target = torch.as_tensor(target, dtype=torch.float64)
    walk = PersistentRandomWalk(mcs_per_frame=mcs_per_frame, dx=dx).double()
    originals = [walk.parametrizations[name].original for name in ("p_center", "p_resample")]

    def objective(theta: np.ndarray) -> tuple[float, np.ndarray]:
        with torch.no_grad():
            for original, value in zip(originals, theta, strict=True):
                original.fill_(float(value))
        for original in originals:
            original.grad = None
        error = walk.expected_msd(len(target)) - target
        value = ((error / target) ** 2).sum() if loss == "relative" else (error**2).sum()
        value.backward()
        return float(value.detach()), np.array([float(o.grad) for o in originals])

    grid = np.linspace(-4, 4, starts)
    best = min((minimize(objective, np.array([a, b]), jac=True, method="L-BFGS-B", bounds=[(-12, 12)] * 2)
                for a in grid for b in grid), key=lambda r: r.fun)
    objective(best.x)
    with torch.no_grad():
        relative = ((walk.expected_msd(len(target)) - target).abs() / target).mean()
        return {"p_center": float(walk.p_center), "p_resample": float(walk.p_resample),
                "msd_rel_error": float(relative)}
