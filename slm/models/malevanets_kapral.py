r"""Malevanets-Kapral reaction-diffusion lattice gas (a FitzHugh-Nagumo model), batched.

State: ``x`` of shape ``(B, 2, H, W)``, float counts of species A (channel 0) and B (channel 1),
``0..N`` per site of a torus. One step (SPEC 4.3):

1. **Diffusion**, for A with ``D_A`` and then B with ``D_B``, independently:
   excitation ``E = H(X - N xi)`` (at most one particle per site; a full site always, an empty one
   never), ``X <- X - E``; translation of the whole lattice ``E`` in one of 9 directions, per lattice
   of the batch, with probabilities ``1 - D`` (stay), ``D (sqrt2 - 1) sqrt2 / 4`` (each axis move),
   ``D (sqrt2 - 1) / 4`` (each diagonal move); settling ``X <- X + shifted E``.
2. **Reaction**: each site picks one of 6 channels uniformly and applies it, with ``xi ~ U(0, 1)``:

   ==========  ============================  ====================================================
   channel     update                        probability (clamped into [0, 1])
   ==========  ============================  ====================================================
   sigma1      ``A += H(p1 - xi)``           ``gamma k1 A (A - 1) (N - A) / ((N - 1)(N - 2))``
   sigma2      ``A -= H(p2 - xi)``           ``gamma k1 A (N - A) (N - A - 1) / ((N - 1)(N - 2))``
   sigma3      ``A += H(p3 - xi)``           ``gamma k2 (N - A) B / N``
   sigma4      ``A -= H(p4 - xi)``           ``gamma k2 A (N - B) / N``
   sigma5      ``B += H(p5 - xi)``           ``gamma k3 (N - A) (N - B) / N``
   sigma6      ``B -= H(p6 - xi)``           ``gamma k3 A B / N``
   ==========  ============================  ====================================================

Gradients: the excitation threshold uses the identity straight-through (``dE/dX := 1``); the
translation is a categorical draw over the 9 directions through ``direction_estimator`` (Gumbel-softmax
ST by default), which is how ``D`` gets its gradient; the reaction draws go through ``estimator``
(identity STE by default), which is how the ``k`` get theirs.

Speed. Only the chosen translation is applied in the forward pass (one gather per species, not a
weighted sum of 9 shifted copies); the 9 shifted copies needed for the direction's gradient are made
in the backward pass only. Only the chosen channel's probability enters the reaction draw. Noise
is drawn per segment of steps from a generator seeded once per rollout, so a rollout with activation
checkpointing (:meth:`MalevanetsKapral.rollout` with ``checkpoint_every``) recomputes exactly the same
steps and gives the same values and gradients as one without.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor, nn
from torch.utils.checkpoint import checkpoint

from slm.errors import InputError
from slm.estimators import make_estimator, straight_through_threshold
from slm.parameters import Probability, UnitInterval, register

#: Translation offsets ``(drow, dcol)``: stay, 4 axis moves, 4 diagonal moves.
DIRECTIONS = ((0, 0), (-1, 0), (1, 0), (0, -1), (0, 1), (-1, -1), (-1, 1), (1, -1), (1, 1))
AXIS_SHARE = (math.sqrt(2) - 1) * math.sqrt(2) / 4
DIAGONAL_SHARE = (math.sqrt(2) - 1) / 4
PARAMETERS = ("D_A", "D_B", "k1", "k2", "k3")


def direction_probabilities(D: Tensor) -> Tensor:
    """``(..., 9)`` probabilities of :data:`DIRECTIONS` for diffusion coefficients ``D`` of shape ``(...)``."""
    D = D[..., None]
    return torch.cat([1 - D, (D * AXIS_SHARE).expand(*D.shape[:-1], 4), (D * DIAGONAL_SHARE).expand(*D.shape[:-1], 4)],
                     dim=-1)


def uniform_state(batch: int, size: int | tuple[int, int], N: int = 50, stripe: bool = True,
                  device: torch.device | str | None = None) -> Tensor:
    """Initial state ``(batch, 2, H, W)``: ``A = B = N / 2`` (the homogeneous fixed point of the reaction)
    everywhere, and with ``stripe`` a horizontal band of ``A = 4N/5`` through the centre, 1/16 of the
    height thick (thesis Fig. S1)."""
    height, width = (size, size) if isinstance(size, int) else size
    x = torch.full((batch, 2, height, width), float(N // 2), device=device)
    if stripe:
        thickness = max(1, height // 16)
        x[:, 0, (height - thickness) // 2:(height + thickness) // 2, :] = float(4 * N // 5)
    return x


def shift_indices(height: int, width: int, device: torch.device | None = None) -> Tensor:
    """``(9, H*W)``: flat source index of every site after translating by each direction on the torus.

    ``shifted.flatten()[i] = E.flatten()[index[k, i]]`` moves the contents of ``E`` by ``DIRECTIONS[k]``.
    """
    rows = torch.arange(height, device=device)[:, None]
    cols = torch.arange(width, device=device)[None, :]
    return torch.stack([(((rows - dr) % height) * width + (cols - dc) % width).flatten() for dr, dc in DIRECTIONS])


class _Translate(torch.autograd.Function):
    """``out = sum_k z_k roll_k(E)`` for a one-hot ``z`` per lattice, evaluating only the chosen roll.

    ``E``: ``(B, HW)``, ``z``: ``(B, 9)`` one-hot (possibly carrying a surrogate gradient),
    ``index``/``inverse``: ``(9, HW)`` from :func:`shift_indices` and its inverse permutation.
    Backward: ``dL/dE = roll_k^{-1}(g)`` for the chosen ``k``; ``dL/dz_j = <g, roll_j(E)>`` for all ``j``.
    """

    @staticmethod
    def forward(ctx, E: Tensor, z: Tensor, index: Tensor, inverse: Tensor) -> Tensor:
        chosen = z.argmax(-1)
        ctx.save_for_backward(E, chosen, index, inverse)
        return E.gather(1, index.index_select(0, chosen))

    @staticmethod
    def backward(ctx, grad: Tensor):
        E, chosen, index, inverse = ctx.saved_tensors
        grad_E = grad.gather(1, inverse.index_select(0, chosen)) if ctx.needs_input_grad[0] else None
        grad_z = None
        if ctx.needs_input_grad[1]:
            shifted = E[:, None, :].expand(-1, index.shape[0], -1).gather(2, index[None].expand(E.shape[0], -1, -1))
            grad_z = (shifted * grad[:, None, :]).sum(-1)
        return grad_E, grad_z, None, None


class MalevanetsKapral(nn.Module):
    """The MK lattice gas with learnable ``D_A, D_B, k1, k2, k3``, each in [0, 1].

    Args:
        D_A, D_B: diffusion coefficients (probability that the excited particles move).
        k1, k2, k3: reaction rates.
        N: capacity of a site per species.
        gamma: reaction timescale.
        estimator: Bernoulli estimator of the reaction draws (``ste`` or ``gumbel``).
        direction_estimator: categorical estimator of the translation (``gumbel`` or ``ste``).
        temperature: temperature of the Gumbel estimators.
        fixed: names of parameters to keep fixed (registered as buffers, not learnable).
        parameterization: ``clamp`` (raw values clamped into [0, 1], as the thesis's projected
            gradient descent; learning rates act on the values) or ``logit`` (stored as logits).
    """

    def __init__(self, D_A: float = 0.1, D_B: float = 0.4, k1: float = 0.98, k2: float = 0.1, k3: float = 0.2,
                 N: int = 50, gamma: float = 0.005, estimator: str = "ste", direction_estimator: str = "gumbel",
                 temperature: float = 1.0, fixed: tuple[str, ...] | list[str] = (), parameterization: str = "clamp"):
        super().__init__()
        unknown = set(fixed) - set(PARAMETERS)
        if unknown:
            raise InputError(f"model.fixed: unknown parameter(s) {sorted(unknown)}; expected some of {PARAMETERS}")
        if not (isinstance(N, int) and N >= 3):
            raise InputError(f"model.N: expected an integer capacity >= 3, got {N}")
        if not (math.isfinite(gamma) and gamma > 0):
            raise InputError(f"model.gamma: expected a positive number, got {gamma}")
        constraints = {"clamp": UnitInterval, "logit": Probability}
        if parameterization not in constraints:
            raise InputError(f"model.parameterization: expected clamp or logit, got {parameterization!r}")
        for name, value in zip(PARAMETERS, (D_A, D_B, k1, k2, k3), strict=True):
            if name in fixed:
                UnitInterval.check(f"model.{name}", float(value))
                self.register_buffer(name, torch.tensor(float(value)))
            else:
                register(self, name, value, constraints[parameterization]())
        self.N = N
        self.gamma = float(gamma)
        self.estimator = make_estimator(estimator, temperature)
        self.direction_estimator = make_estimator(direction_estimator, temperature)
        # (dA, dB) of channels sigma1..sigma6 when they fire
        changes = [[1.0, 0.0], [-1.0, 0.0], [1.0, 0.0], [-1.0, 0.0], [0.0, 1.0], [0.0, -1.0]]
        self.register_buffer("channel_changes", torch.tensor(changes), persistent=False)
        self._indices: dict[tuple[int, int, torch.device], tuple[Tensor, Tensor]] = {}

    def _shift_tables(self, height: int, width: int, device: torch.device) -> tuple[Tensor, Tensor]:
        key = (height, width, device)
        if key not in self._indices:
            index = shift_indices(height, width, device)
            self._indices[key] = (index, index.argsort(dim=1))
        return self._indices[key]

    def values(self) -> Tensor:
        """``(5,)``: the current ``D_A, D_B, k1, k2, k3`` (differentiable)."""
        return torch.stack([getattr(self, name) for name in PARAMETERS])

    def rates(self, values: Tensor) -> tuple[Tensor, Tensor]:
        """What a step needs from the parameters: ``(2, 9)`` direction probabilities of A and B, and the
        ``(6,)`` factors ``gamma k_r / ((N - 1)(N - 2))`` (channels 1, 2) or ``gamma k_r / N`` (3-6)."""
        N = self.N
        scale = torch.tensor([1 / ((N - 1) * (N - 2))] * 2 + [1 / N] * 4, device=values.device)
        return direction_probabilities(values[:2]), self.gamma * values[2:].repeat_interleave(2) * scale

    def diffuse(self, x: Tensor, directions: Tensor, xi: Tensor, direction_noise: Tensor) -> Tensor:
        """One diffusion step of both species; every lattice and species draws its own direction.

        ``xi``: ``U(0, 1)`` of the shape of ``x`` (excitation); ``direction_noise``: ``U(0, 1)`` of shape
        ``(B, 2, 9)`` (direction draw).
        """
        batch, species, height, width = x.shape
        E = straight_through_threshold(x - self.N * xi)
        z = self.direction_estimator.categorical(directions.expand(batch, -1, -1), noise=direction_noise)
        index, inverse = self._shift_tables(height, width, x.device)
        shifted = _Translate.apply(E.reshape(batch * species, -1), z.reshape(batch * species, -1), index, inverse)
        return x - E + shifted.view_as(x)

    def reaction_probabilities(self, A: Tensor, B: Tensor, factors: Tensor) -> Tensor:
        """``(6, ...)``: ``p1..p6`` of the six channels at counts ``A``, ``B`` (not clamped)."""
        rest_A, rest_B = self.N - A, self.N - B
        monomials = torch.stack([A * (A - 1) * rest_A, A * rest_A * (rest_A - 1), rest_A * B, A * rest_B,
                                 rest_A * rest_B, A * B])
        return monomials * factors.view(6, *([1] * A.dim()))

    def react(self, x: Tensor, factors: Tensor, choice: Tensor, xi: Tensor) -> Tensor:
        """One reaction step: every site applies one of the six channels, chosen uniformly.

        ``choice``, ``xi``: ``U(0, 1)`` of shape ``(B, H, W)`` (channel ``floor(6 choice)``, its draw).
        """
        A, B = x[:, 0], x[:, 1]
        channel = (choice * 6).long().clamp_max(5)
        p = self.reaction_probabilities(A, B, factors).gather(0, channel[None])[0].clamp(0, 1)
        fired = self.estimator.bernoulli(p, noise=xi)
        change = self.channel_changes.index_select(0, channel.flatten()).view(*A.shape, 2).movedim(-1, 1)
        return x + fired[:, None] * change

    def forward(self, x: Tensor, generator: torch.Generator | None = None) -> Tensor:
        """One step (diffuse A and B, then react) of ``x``: ``(B, 2, H, W)`` counts to the same shape."""
        return self._step(x, *self.rates(self.values()), generator)

    def _step(self, x: Tensor, directions: Tensor, factors: Tensor, generator: torch.Generator | None) -> Tensor:
        # All of a step's noise in two draws: excitation of A and B, channel choice, reaction draw.
        batch, _, height, width = x.shape
        noise = torch.rand(batch, 4, height, width, generator=generator, device=x.device, dtype=x.dtype)
        direction_noise = torch.rand(batch, 2, 9, generator=generator, device=x.device, dtype=x.dtype)
        return self.transition(x, directions, factors, noise, direction_noise)

    def transition(self, x: Tensor, directions: Tensor, factors: Tensor, noise: Tensor,
                   direction_noise: Tensor) -> Tensor:
        """One step with given noise: ``noise`` ``(B, 4, H, W)``, ``direction_noise`` ``(B, 2, 9)``, all ``U(0, 1)``."""
        x = self.diffuse(x, directions, noise[:, :2], direction_noise)
        return self.react(x, factors, noise[:, 2], noise[:, 3])

    def _segment(self, x: Tensor, directions: Tensor, factors: Tensor, first_seed: int, steps: int) -> Tensor:
        generator = torch.Generator(device=x.device)
        for t in range(steps):
            x = self._step(x, directions, factors, generator.manual_seed(first_seed + t))
        return x

    def rollout(self, x: Tensor, steps: int, generator: torch.Generator | None = None,
                checkpoint_every: int | None = None) -> Tensor:
        """``steps`` steps from ``x``; returns the final state ``(B, 2, H, W)``.

        Noise: one seed ``s`` is drawn from ``generator`` per rollout and step ``t`` draws from a
        generator seeded with ``s + t``, so the result does not depend on ``checkpoint_every``. With
        ``checkpoint_every`` and autograd on, the activations of each segment of that many steps are
        recomputed in the backward pass instead of stored: memory ``O(steps / checkpoint_every +
        checkpoint_every)`` lattices instead of ``O(steps)``.
        """
        device = generator.device if generator is not None else "cpu"
        base = int(torch.randint(2**62, (1,), generator=generator, device=device))
        segment = checkpoint_every or steps
        rates = self.rates(self.values())
        for done in range(0, steps, segment):
            length = min(segment, steps - done)
            if checkpoint_every and torch.is_grad_enabled():
                x = checkpoint(self._segment, x, *rates, base + done, length, use_reentrant=False)
            else:
                x = self._segment(x, *rates, base + done, length)
        return x
