r"""When a fit is done, from its own noise: the stopping rule every run carries (``stopping:`` in
``configs/train.yaml``), a Lightning callback.

Stochastic approximation ends in noise: with a constant or slowly decaying learning rate the iterates wander
around the root of the expected gradient, so the last one is a draw, not the estimate. The callback does what
the theory does (Polyak and Juditsky 1992; suffix averaging, Rakhlin, Shamir and Sridharan 2012):

* **Blocks.** The optimiser steps are cut into blocks of ``window`` steps. For every finished block the callback
  keeps the sums of the parameters (the unconstrained ones the optimiser moves), of their gradients and of the
  squared gradients: three vectors of ``d`` numbers per block, whatever the run length.
* **The estimate** is the mean of the parameters over the newest half of the blocks (``ceil(K / 2)`` of ``K``,
  tested from ``K = 2`` on, so the first block, the approach, is never in it): the early, drifting steps fall
  out as the run grows, and the average's noise shrinks as ``1 / sqrt(steps)``.
* **The test**, at the end of every epoch that finished a block, on the same steps (``n`` of them):

  .. math::  z_j = \frac{\bar g_j}{s_j / \sqrt{n}}, \qquad \max_j |z_j| < \Phi^{-1}\Big(1 - \frac{\alpha}{2d}\Big)

  (a Bonferroni bound at level ``alpha``): the mean gradient is zero within its noise, so the fit has stopped
  drifting. Where the run has intervals (``uq=sandwich``), it must then also be within ``tolerance`` standard
  errors of the root of its own estimating equation, measured at the averaged estimate by the one-step distance
  of :mod:`slm.uncertainty` (:meth:`slm.uncertainty.Sandwich.distance`, the root mean square over coordinates):
  the gradient's noise is a step's, the standard error is the data's, and only the second says whether the
  estimate is as good as the data allow. A distance costs a sandwich (``2d + 1`` evaluations of the
  statistics, or the estimating equation's Hessian), so it is measured after 2, 3, 5, 8, 12, ... blocks
  (each count at least 1.5 times the last) and once more at the end on the estimate the run reports.
* **Stopping.** With ``stop: true`` (the default) the fit ends at the first epoch that passes
  (``stop_reason: converged``) and ``trainer.max_epochs`` is a cap (``stop_reason: cap``). Either way the run
  ends on the averaged estimate once the gradient test has passed (the fit reached its noise), and on the last
  iterate otherwise (it was still drifting; the run says it has not converged).

Everything the rule keeps travels in checkpoints: a resumed run averages and tests the same numbers.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

import lightning as L
import torch
from scipy import stats
from torch import Tensor

from slm.errors import InputError


class Convergence(L.Callback):
    """The stopping rule (see the module docstring).

    Args:
        window: optimiser steps per block (the least the test averages).
        alpha: the gradient test's level over all coordinates together.
        tolerance: largest distance, in standard errors, from the root of the fit's estimating equation (used
            where the run has a sandwich, ``uq=sandwich``).
        stop: end the fit at the first epoch that passes.
    """

    def __init__(self, window: int = 25, alpha: float = 0.05, tolerance: float = 1.0, stop: bool = True):
        if not (isinstance(window, int) and not isinstance(window, bool) and window >= 5):
            raise InputError(f"stopping.window: expected an integer number of steps >= 5, got {window!r}")
        if not (isinstance(alpha, int | float) and 0 < alpha < 1):
            raise InputError(f"stopping.alpha: expected a level strictly inside (0, 1), got {alpha!r}")
        if not (isinstance(tolerance, int | float) and tolerance > 0):
            raise InputError(f"stopping.tolerance: expected a positive number of standard errors, got {tolerance!r}")
        self.window, self.alpha, self.tolerance, self.stop = window, float(alpha), float(tolerance), bool(stop)
        #: the one-step distance of the module's current parameters (set by :func:`slm.fit.fit` from ``uq``)
        self.distance: Callable[[L.LightningModule], float] | None = None
        self.blocks: list[Tensor] = []  # (3, d) per finished block: sums of parameters, gradients, squared gradients
        self.current: Tensor | None = None  # (3, d) of the block under way
        self.gradient: Tensor | None = None  # (d,) of the step under way
        self.seen = 0
        self.tested = 0  # blocks already tested
        self.measured = 0  # blocks when the distance was last measured
        self.z: float | None = None
        self.root_se: float | None = None
        self.passed = False
        self.stopped = False

    def on_before_optimizer_step(self, trainer: L.Trainer, pl_module: L.LightningModule, optimizer: Any) -> None:
        grads = [p.grad.detach().flatten() if p.grad is not None else torch.zeros_like(p).flatten()
                 for p in _parameters(pl_module)]
        self.gradient = torch.cat(grads).double() if grads else None

    def on_train_batch_end(self, trainer: L.Trainer, pl_module: L.LightningModule, *args: Any) -> None:
        if self.gradient is None:
            return
        values = torch.cat([p.detach().flatten() for p in _parameters(pl_module)]).double()
        step = torch.stack([values, self.gradient, self.gradient ** 2])
        self.current = step if self.current is None else self.current + step
        self.gradient = None
        self.seen += 1
        if self.seen % self.window == 0:
            self.blocks.append(self.current)
            self.current = None

    def on_train_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if len(self.blocks) < 2 or self.tested == len(self.blocks):
            return  # the first block is the approach: the test and the average start from the second
        self.tested = len(self.blocks)
        self.z = self.statistic()
        self.passed = self.z < self.threshold
        if self.passed and self.distance is not None and len(self.blocks) >= math.ceil(1.5 * self.measured):
            # the distance costs a sandwich (2d + 1 evaluations): measured after 2, 3, 5, 8, 12, ... blocks only
            self.measured = len(self.blocks)
            with averaged(pl_module, self.estimate()):
                self.root_se = self.distance(pl_module)
        if self.stop and self.converged and not trainer.should_stop:
            trainer.should_stop = True
            self.stopped = True

    def on_train_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if not self.passed:
            return
        set_parameters(pl_module, self.estimate())
        if self.distance is not None and self.measured != len(self.blocks):  # said of the estimate reported
            self.measured = len(self.blocks)
            self.root_se = self.distance(pl_module)

    @property
    def suffix(self) -> Tensor:
        """``(3, d)`` sums over the newest half of the blocks."""
        kept = self.blocks[len(self.blocks) // 2:]
        return torch.stack(kept).sum(0)

    @property
    def averaged_steps(self) -> int:
        return self.window * (len(self.blocks) - len(self.blocks) // 2)

    def estimate(self) -> Tensor:
        """The averaged parameters, flat ``(d,)``."""
        return self.suffix[0] / self.averaged_steps

    def statistic(self) -> float:
        """``max_j |z_j|`` of the mean gradient over the averaged steps (one host sync per block)."""
        n = self.averaged_steps
        _, total, squares = self.suffix
        mean = total / n
        sd = ((squares - n * mean ** 2) / (n - 1)).clamp_min(0).sqrt().clamp_min(1e-300)
        return float((mean / (sd / math.sqrt(n))).abs().max())

    @property
    def threshold(self) -> float:
        d = 1 if not self.blocks else self.blocks[0].shape[1]
        return float(stats.norm.ppf(1 - self.alpha / (2 * d)))

    @property
    def converged(self) -> bool:
        return self.passed and (self.root_se is None or self.root_se <= self.tolerance)

    def report(self, trainer: L.Trainer) -> dict[str, Any]:
        """``converged``, ``stop_reason``, the test's numbers and which estimate the run reports, for
        ``results.json``."""
        reason = "converged" if self.stopped else "interrupted" if trainer.interrupted else "cap"
        return {"converged": self.converged, "stop_reason": reason,
                "gradient_z": None if self.z is None else round(self.z, 3),
                "gradient_z_threshold": round(self.threshold, 3),
                "root_distance_se": None if self.root_se is None else round(self.root_se, 3),
                "tolerance_se": self.tolerance if self.distance is not None else None,
                "estimate": f"mean of the last {self.averaged_steps} steps" if self.passed else "last step"}

    def state_dict(self) -> dict[str, Any]:
        return {"blocks": self.blocks, "current": self.current, "seen": self.seen, "tested": self.tested,
                "measured": self.measured,
                "z": self.z, "root_se": self.root_se, "passed": self.passed, "stopped": self.stopped}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        for key, value in state_dict.items():
            setattr(self, key, value)


def _parameters(pl_module: L.LightningModule) -> list[Tensor]:
    return [p for p in pl_module.parameters() if p.requires_grad]


def set_parameters(pl_module: L.LightningModule, flat: Tensor) -> None:
    """Write a flat ``(d,)`` vector into the module's learnable parameters, in their order."""
    at = 0
    with torch.no_grad():
        for p in _parameters(pl_module):
            p.copy_(flat[at:at + p.numel()].view_as(p).to(p.dtype))
            at += p.numel()


@contextmanager
def averaged(pl_module: L.LightningModule, flat: Tensor) -> Iterator[None]:
    """Within the block, the module's parameters are ``flat``; afterwards they are what they were."""
    saved = torch.cat([p.detach().flatten() for p in _parameters(pl_module)]).double()
    set_parameters(pl_module, flat)
    try:
        yield
    finally:
        set_parameters(pl_module, saved)


def sentence(report: dict[str, Any]) -> str:
    """:meth:`Convergence.report` in words, for the run's last line."""
    z, threshold, root = report["gradient_z"], report["gradient_z_threshold"], report.get("root_distance_se")
    if z is None:
        return "convergence not tested (fewer steps than two blocks)"
    at = f"{report['stop_reason']}, {report['estimate']}"
    if report["converged"]:
        near = f", {root:.2f} se from its root" if root is not None else ""
        return f"converged (gradient z {z:.1f} < {threshold:.1f}{near}; {at})"
    if z >= threshold:
        return f"NOT converged: still drifting (gradient z {z:.1f} >= {threshold:.1f}; {at})"
    return (f"NOT converged: {root:.2f} se from the root of its own equation (tolerance "
            f"{report['tolerance_se']}; {at})")
