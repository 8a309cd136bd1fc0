r"""Whether a fit has converged, from its own gradient noise: a Lightning callback every run carries
(``stopping:`` in ``configs/train.yaml``).

After every optimiser step the callback keeps the gradient ``g_t`` with respect to the unconstrained parameters
(what the optimiser sees), the last ``window`` of them. At the end of every epoch with a full window it tests
whether their mean is zero within its noise, coordinate by coordinate:

.. math::  z_j = \frac{\bar g_j}{s_j / \sqrt{n}}, \qquad \text{converged} \iff \max_j |z_j| < \Phi^{-1}\Big(1 -
           \frac{\alpha}{2 d}\Big)

(``n`` = ``window`` steps, ``d`` coordinates, a Bonferroni bound at level ``alpha``). At a stationary point of the
expected loss a stochastic gradient averages to zero and the test passes; while the fit still drifts, the mean
stands out of the noise. Successive gradients of a fit are correlated, so ``z`` is a guide rather than an exact
test; the uncertainty code's one-step distance (``uq``) is the finer check when intervals are computed.

With ``stop: true`` the fit ends at the first epoch that passes (``stop_reason: converged``), ``trainer.max_epochs``
then being a cap. It is off by default while the experiments' documented numbers come from fixed run lengths; every
run still reports ``converged``, ``stop_reason`` (``converged``, ``cap`` or ``interrupted``) and the final
``gradient_z`` in ``results.json``. The window travels in checkpoints, so a resumed run tests the same numbers.
"""

from __future__ import annotations

import math
from typing import Any

import lightning as L
import torch
from scipy import stats
from torch import Tensor

from slm.errors import InputError


class Convergence(L.Callback):
    """The stopping rule (see the module docstring).

    Args:
        window: optimiser steps whose gradients the test averages.
        alpha: the test's level over all coordinates together.
        stop: end the fit at the first epoch that passes.
    """

    def __init__(self, window: int = 50, alpha: float = 0.05, stop: bool = False):
        if not (isinstance(window, int) and not isinstance(window, bool) and window >= 5):
            raise InputError(f"stopping.window: expected an integer number of steps >= 5, got {window!r}")
        if not (isinstance(alpha, int | float) and 0 < alpha < 1):
            raise InputError(f"stopping.alpha: expected a level strictly inside (0, 1), got {alpha!r}")
        self.window, self.alpha, self.stop = window, float(alpha), bool(stop)
        self.gradients: Tensor | None = None  # (window, d), a ring buffer
        self.seen = 0
        self.z: float | None = None
        self.stopped = False

    def on_before_optimizer_step(self, trainer: L.Trainer, pl_module: L.LightningModule, optimizer: Any) -> None:
        grads = [p.grad.detach().flatten() if p.grad is not None else torch.zeros_like(p).flatten()
                 for p in pl_module.parameters() if p.requires_grad]
        if not grads:
            return
        g = torch.cat(grads).double()
        if self.gradients is None or self.gradients.shape[1] != g.numel():
            self.gradients, self.seen = g.new_zeros(self.window, g.numel()), 0
        self.gradients[self.seen % self.window] = g
        self.seen += 1

    def on_train_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if self.gradients is None or self.seen < self.window:
            return
        self.z = self.statistic()
        if self.stop and self.converged and not trainer.should_stop:
            trainer.should_stop = True
            self.stopped = True

    def statistic(self) -> float:
        """``max_j |z_j|`` over the window (one host sync, once per epoch)."""
        g = self.gradients
        sd = g.std(0, unbiased=True).clamp_min(1e-300)
        return float((g.mean(0) / (sd / math.sqrt(len(g)))).abs().max())

    @property
    def threshold(self) -> float:
        d = 1 if self.gradients is None else self.gradients.shape[1]
        return float(stats.norm.ppf(1 - self.alpha / (2 * d)))

    @property
    def converged(self) -> bool:
        return self.z is not None and self.z < self.threshold

    def report(self, trainer: L.Trainer) -> dict[str, Any]:
        """``converged``, ``stop_reason`` and ``gradient_z`` (with the threshold) for ``results.json``."""
        reason = "converged" if self.stopped else "interrupted" if trainer.interrupted else "cap"
        return {"converged": self.converged, "stop_reason": reason,
                "gradient_z": None if self.z is None else round(self.z, 3),
                "gradient_z_threshold": round(self.threshold, 3)}

    def state_dict(self) -> dict[str, Any]:
        return {"gradients": self.gradients, "seen": self.seen, "z": self.z, "stopped": self.stopped}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        self.gradients, self.seen = state_dict["gradients"], state_dict["seen"]
        self.z, self.stopped = state_dict["z"], state_dict["stopped"]


def sentence(report: dict[str, Any]) -> str:
    """:meth:`Convergence.report` in words, for the run's last line."""
    z, threshold = report["gradient_z"], report["gradient_z_threshold"]
    if z is None:
        return "convergence not tested (fewer steps than the window)"
    if report["converged"]:
        return f"converged (gradient z {z:.1f} < {threshold:.1f}; {report['stop_reason']})"
    return f"NOT converged: gradient z {z:.1f} >= {threshold:.1f} at the {report['stop_reason']}; fit longer"
