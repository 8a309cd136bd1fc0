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
categorical over the three values (one-hot). The state of a step is ``(position (n, 2), velocity
(n, 2, 3) one-hot)``; walkers are the samples.
"""

from __future__ import annotations

import torch
from torch import Tensor

from slm.errors import InputError
from slm.estimators import Estimator, make_estimator
from slm.models.base import WalkSimulator
from slm.parameters import Probability, register
from slm.stats import walker_msd

AXES = 2


class PersistentRandomWalk(WalkSimulator):
    """PRW with learnable ``p_center`` and ``p_resample`` (stored as logits).

    Args:
        p_center: probability that a redrawn velocity component is 0.
        p_resample: probability of redrawing a velocity component in an MCS.
        estimator: an :class:`slm.estimators.Estimator` or its name (``ste``, ``gumbel``, ``score``); ``ste``
            gives ``p_center`` no gradient (``E[v] = 0`` for every ``p_center``), so the fits use ``gumbel``.
        mcs_per_frame: Monte Carlo steps per data frame.
        dx: lattice spacing in the data's length unit (e.g. um).
    """

    def __init__(self, p_center: float = 0.5, p_resample: float = 0.5, estimator: Estimator | str = "ste",
                 mcs_per_frame: int = 1, dx: float = 1.0):
        super().__init__()
        register(self, "p_center", p_center, Probability())
        register(self, "p_resample", p_resample, Probability())
        if not (isinstance(mcs_per_frame, int) and mcs_per_frame >= 1):
            raise InputError(f"model.mcs_per_frame: expected a positive integer, got {mcs_per_frame}")
        if not (isinstance(dx, int | float) and dx > 0):
            raise InputError(f"model.dx: expected a positive lattice spacing, got {dx}")
        self.estimator = make_estimator(estimator)
        self.mcs_per_frame = mcs_per_frame
        self.dx = float(dx)
        self.register_buffer("values", torch.tensor([-1.0, 0.0, 1.0]), persistent=False)

    def velocity_probs(self) -> Tensor:
        """``(3,)`` probabilities of -1, 0, +1."""
        side = (1 - self.p_center) / 2
        return torch.stack([side, self.p_center, side])

    def prepare(self) -> tuple[Tensor, Tensor]:
        return self.velocity_probs(), self.p_resample

    def transition(self, state: tuple[Tensor, Tensor], prepared: tuple[Tensor, Tensor],
                   generator: torch.Generator | None = None) -> tuple[Tensor, Tensor]:
        """One MCS of every walker: ``(position (n, 2), velocity (n, 2, 3))`` to the same."""
        position, velocity = state
        probs, p_resample = prepared
        resample = self.estimator.bernoulli(p_resample.expand(*velocity.shape[:2]), generator)[..., None]
        velocity = resample * self.estimator.categorical(probs.expand_as(velocity), generator) \
            + (1 - resample) * velocity
        return position + velocity @ self.values, velocity

    def positions(self, n_walkers: int, n_frames: int, generator: torch.Generator | None = None) -> Tensor:
        """Positions of ``n_walkers`` walkers at frames ``0..n_frames``, shape ``(n_walkers, n_frames + 1, 2)``,
        in units of ``dx``, starting at the origin with velocities from the stationary distribution."""
        prepared = self.prepared()
        velocity = self.estimator.categorical(prepared[0].expand(n_walkers, AXES, 3), generator)
        state = (torch.zeros(n_walkers, AXES, device=velocity.device, dtype=velocity.dtype), velocity)
        frames = [state[0]]
        for _ in range(n_frames):
            for _ in range(self.mcs_per_frame):
                state = self.transition(state, prepared, generator)
            frames.append(state[0])
        return torch.stack(frames, dim=1) * self.dx

    def msd(self, n: int, lags: int, generator: torch.Generator | None = None) -> Tensor:
        """Simulated MSD at lags ``1..lags`` frames, shape ``(lags,)`` (all walkers and start times)."""
        return self.surrogate(walker_msd(self.positions(n, lags, generator), lags)).mean(0)

    def expected_msd(self, lags: int) -> Tensor:
        """Exact MSD at lags ``1..lags`` frames, shape ``(lags,)``, in ``dx`` units squared."""
        n = torch.arange(1, lags + 1, device=self.values.device) * self.mcs_per_frame
        k = torch.arange(1, int(n[-1]), device=self.values.device)
        rho = 1 - self.p_resample
        terms = (n[:, None] - k[None, :]).clamp_min(0) * rho ** k[None, :]
        return 2 * (1 - self.p_center) * (n + 2 * terms.sum(-1)) * self.dx**2
