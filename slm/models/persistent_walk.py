r"""Persistent random walk (PRW) of one agent per lattice, batched over walkers.

The two axes are independent walks. Each axis carries a velocity ``v`` in {-1, 0, +1}. Every Monte
Carlo step (MCS), per walker and axis:

1. with probability ``p_resample`` redraw ``v`` from
   ``{-1: (1 - p_center)/2, 0: p_center, +1: (1 - p_center)/2}``, otherwise keep it;
2. move by ``v``.

Velocities start from that same distribution, which is stationary, so the MSD is the same from any
start time:

    MSD(n) = 2 s^2 (n + 2 sum_{k=1}^{n-1} (n - k) rho^k),   s^2 = 1 - p_center,  rho = 1 - p_resample

in lattice units after ``n`` MCS (:meth:`PersistentRandomWalk.expected_msd`). A frame of the data is
``mcs_per_frame`` MCS and a lattice site is ``dx`` long, so positions come out in the data's length
unit. Both draws go through the estimator: the resampling decision as a Bernoulli, the velocity as a
categorical over the three values (one-hot). The state of a step is a :class:`WalkerState`
``(position (n, 2), velocity (n, 2, 3) one-hot)``; walkers are the samples.

**Mixture.** With ``classes = K > 1`` the population is a mixture of K walker classes with weights
``w`` (learnable, on the simplex) and their own ``p_center_k``, ``p_resample_k``:
``MSD(n) = sum_k w_k MSD_k(n)``. The class of a walker is not drawn: walker ``i`` belongs to class
``i mod K`` and the MSD weighs each class's walkers by ``w_k / (their share)``. That is the exact
expectation over the class draw (stratified sampling), so the weights get an exact gradient and no
variance from the class draw, and each class's parameters get the estimator's gradient.
"""

from __future__ import annotations

from typing import NamedTuple

import torch
from torch import Tensor

from slm.errors import InputError
from slm.estimators import Estimator, make_estimator
from slm.models.base import WalkSimulator
from slm.parameters import Probability, Simplex, class_values, register
from slm.stats import walker_msd

AXES = 2


class WalkerState(NamedTuple):
    """Walkers' positions ``(n, 2)`` in lattice sites and one-hot velocities ``(n, 2, 3)`` over -1, 0, +1."""

    position: Tensor
    velocity: Tensor


class PersistentRandomWalk(WalkSimulator):
    """PRW with learnable ``p_center`` and ``p_resample`` (stored as logits), one walker class or a mixture.

    Args:
        p_center: probability that a redrawn velocity component is 0 (with ``classes > 1``: one number,
            spread over the classes by :func:`slm.parameters.class_values` (logits -1 to +1), or one per class).
        p_resample: probability of redrawing a velocity component in an MCS (likewise).
        estimator: an :class:`slm.estimators.Estimator` or its name (``ste``, ``gumbel``, ``score``); ``ste``
            gives ``p_center`` no gradient (``E[v] = 0`` for every ``p_center``), so the fits use ``gumbel``.
        mcs_per_frame: Monte Carlo steps per data frame.
        dx: lattice spacing in the data's length unit (e.g. um).
        classes: number K of walker classes (1: one population).
        weights: start weights of the classes (K positive values summing to 1; default equal); learnable.
    """

    def __init__(self, p_center: float | list[float] = 0.5, p_resample: float | list[float] = 0.5,
                 estimator: Estimator | str = "ste", mcs_per_frame: int = 1, dx: float = 1.0, classes: int = 1,
                 weights: list[float] | None = None):
        super().__init__()
        if not (isinstance(classes, int) and classes >= 1):
            raise InputError(f"model.classes: expected a positive integer, got {classes}")
        self.classes = classes
        if classes == 1:
            register(self, "p_center", p_center, Probability())
            register(self, "p_resample", p_resample, Probability())
        else:
            for key, value in (("p_center", p_center), ("p_resample", p_resample)):
                values = class_values(f"model.{key}", value, classes, Probability(), 1.0, Probability.check)
                register(self, key, values, Probability())
            register(self, "weights", [1 / classes] * classes if weights is None else weights, Simplex())
        if classes == 1 and weights is not None:
            raise InputError("model.weights: class weights need model.classes > 1")
        if not (isinstance(mcs_per_frame, int) and mcs_per_frame >= 1):
            raise InputError(f"model.mcs_per_frame: expected a positive integer, got {mcs_per_frame}")
        if not (isinstance(dx, int | float) and dx > 0):
            raise InputError(f"model.dx: expected a positive lattice spacing, got {dx}")
        self.estimator = make_estimator(estimator)
        self.mcs_per_frame = mcs_per_frame
        self.dx = float(dx)
        self.register_buffer("values", torch.tensor([-1.0, 0.0, 1.0]), persistent=False)

    @property
    def frame_steps(self) -> int:
        return self.mcs_per_frame

    def velocity_probs(self) -> Tensor:
        """``(K, 3)`` probabilities of -1, 0, +1 per class."""
        p_center = self.p_center.reshape(-1)
        side = (1 - p_center) / 2
        return torch.stack([side, p_center, side], dim=-1)

    def class_weights(self) -> Tensor:
        """``(K,)`` the weights of the classes (``[1]`` for one class)."""
        return self.weights if self.classes > 1 else torch.ones(1, device=self.values.device)

    def walker_class(self, n: int) -> Tensor:
        """The class of each of ``n`` walkers, ``(n,)``: walker ``i`` is in class ``i mod K``."""
        return torch.arange(n, device=self.values.device) % self.classes

    def prepare(self) -> tuple[Tensor, Tensor]:
        return self.velocity_probs(), self.p_resample.reshape(-1)

    def transition(self, state: WalkerState, prepared: tuple[Tensor, Tensor],
                   generator: torch.Generator | None = None) -> WalkerState:
        """One MCS of every walker."""
        position, velocity = state
        probs, p_resample = prepared
        kind = self.walker_class(len(position))
        resample = self.estimator.bernoulli(p_resample[kind, None].expand(*velocity.shape[:2]), generator)[..., None]
        velocity = resample * self.estimator.categorical(probs[kind, None].expand_as(velocity), generator) \
            + (1 - resample) * velocity
        return WalkerState(position + velocity @ self.values, velocity)

    def initial_state(self, batch: int, size: int | tuple[int, int] | None = None, device: torch.device | None = None,
                      generator: torch.Generator | None = None) -> WalkerState:
        """``batch`` walkers at the origin with velocities drawn (through the estimator) from the stationary
        distribution; ``size`` is not used (the walk has no lattice bounds)."""
        if batch < self.classes:
            raise InputError(f"task.batch_size: {batch} walkers cannot fill {self.classes} classes")
        probs = self.prepared()[0][self.walker_class(batch), None]
        velocity = self.estimator.categorical(probs.expand(batch, AXES, 3), generator)
        return WalkerState(torch.zeros(batch, AXES, device=velocity.device, dtype=velocity.dtype), velocity)

    def positions(self, state: WalkerState) -> Tensor:
        """The walkers' positions ``(n, 2)`` in units of ``dx``."""
        return state.position * self.dx

    def msd_per_walker(self, n: int, lags: int, generator: torch.Generator | None = None) -> Tensor:
        """Each walker's squared displacement at lags ``1..lags`` frames over all its start times, ``(n, lags)``,
        recorded over ``lags`` frames; a mixture's walkers are weighted by their class's weight over its share
        of the walkers, so that the mean is the mixture's MSD (see the module docstring)."""
        per_walker = walker_msd(self.walk(n, lags, generator), lags)
        kind = self.walker_class(n)
        share = torch.bincount(kind, minlength=self.classes).to(per_walker.dtype) / n
        return per_walker * (self.class_weights() / share)[kind, None]

    def expected_msd(self, lags: int) -> Tensor:
        """Exact MSD at lags ``1..lags`` frames, shape ``(lags,)``, in ``dx`` units squared (a mixture: the
        weighted sum of its classes' MSDs)."""
        n = torch.arange(1, lags + 1, device=self.values.device) * self.mcs_per_frame
        k = torch.arange(1, int(n[-1]), device=self.values.device)
        rho = (1 - self.p_resample).reshape(-1, 1, 1)
        terms = (n[:, None] - k[None, :]).clamp_min(0) * rho ** k[None, :]
        per_class = 2 * (1 - self.p_center).reshape(-1, 1) * (n + 2 * terms.sum(-1)) * self.dx**2
        return (self.class_weights()[:, None] * per_class).sum(0)
