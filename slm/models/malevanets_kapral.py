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

Gradients: the excitation ``H(X - N xi)`` is a threshold and the reaction draws are Bernoulli draws
through ``estimator`` (identity STE by default, ``dE/dX := 1``), which is how the ``k`` get their
gradients; the translation is a categorical draw over the 9 directions through
``direction_estimator`` (Gumbel-softmax ST by default), which is how ``D`` gets its gradient.

Speed. Only the chosen translation is applied in the forward pass (one gather per lattice and
species, not a weighted sum of 9 shifted copies); the correlations with the 9 shifted copies that
the direction's gradient needs are gathered in the backward pass only. The reaction probabilities of
all channels and counts ``A, B = 0..N+1`` are tabulated once per rollout, so a step looks up the
chosen channel's probability, and its backward pass the exact polynomial derivatives. All of a
step's noise is one ``torch.rand`` call from a generator seeded by ``(rollout seed + step)``, so a
rollout with activation checkpointing (:meth:`slm.models.Simulator.rollout` with ``checkpoint_every``)
recomputes exactly the same steps and gives the same values and gradients as one without.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

from slm.errors import InputError
from slm.estimators import Estimator, make_estimator
from slm.models.base import Simulator
from slm.parameters import Probability, UnitInterval, register

#: Translation offsets ``(drow, dcol)``: stay, 4 axis moves, 4 diagonal moves.
DIRECTIONS = ((0, 0), (-1, 0), (1, 0), (0, -1), (0, 1), (-1, -1), (-1, 1), (1, -1), (1, 1))
AXIS_SHARE = (math.sqrt(2) - 1) * math.sqrt(2) / 4
DIAGONAL_SHARE = (math.sqrt(2) - 1) / 4
PARAMETERS = ("D_A", "D_B", "k1", "k2", "k3")
#: The reference parameters, which form labyrinthine patterns (thesis Fig. S1).
REFERENCE = {"D_A": 0.1, "D_B": 0.4, "k1": 0.98, "k2": 0.1, "k3": 0.2}


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


def _monomials(A: Tensor, B: Tensor, N: int) -> Tensor:
    """``(6, ...)``: the count-dependent parts of ``p1..p6`` (see the table in the module docstring)."""
    rest_A, rest_B = N - A, N - B
    return torch.stack([A * (A - 1) * rest_A, A * rest_A * (rest_A - 1), rest_A * B, A * rest_B, rest_A * rest_B,
                        A * B])


def shift_indices(height: int, width: int, device: torch.device | None = None) -> Tensor:
    """``(9, H*W)``: flat source index of every site after translating by each direction on the torus.

    ``shifted.flatten()[i] = E.flatten()[index[k, i]]`` moves the contents of ``E`` by ``DIRECTIONS[k]``.
    """
    rows = torch.arange(height, device=device)[:, None]
    cols = torch.arange(width, device=device)[None, :]
    return torch.stack([(((rows - dr) % height) * width + (cols - dc) % width).flatten() for dr, dc in DIRECTIONS])


class _Translate(torch.autograd.Function):
    """``out = sum_k z_k roll_k(E)`` for a one-hot ``z`` per lattice, evaluating only the chosen roll.

    ``E``: ``(R, H, W)``, ``z``: ``(R, 9)`` one-hot (possibly carrying a surrogate gradient),
    ``index``/``inverse``: ``(9, HW)`` from :func:`shift_indices` and its inverse permutation.
    Backward: ``dL/dE = roll_k^{-1}(g)`` for the chosen ``k``, and ``dL/dz_j = <g, roll_j(E)>`` for all
    ``j`` at once, products of ``g`` with the 9 gathered rolls ``(R, 9, HW)`` (cheaper than an
    FFT cross-correlation at every lattice size: only 9 of its ``HW`` shifts are needed).
    """

    @staticmethod
    def forward(ctx, E: Tensor, z: Tensor, index: Tensor, inverse: Tensor) -> Tensor:
        chosen = z.argmax(-1)
        ctx.save_for_backward(E, chosen, index, inverse)
        return E.reshape(E.shape[0], -1).gather(1, index.index_select(0, chosen)).view_as(E)

    @staticmethod
    def backward(ctx, grad: Tensor):
        E, chosen, index, inverse = ctx.saved_tensors
        rows = E.shape[0]
        grad_E = grad_z = None
        if ctx.needs_input_grad[0]:
            grad_E = grad.reshape(rows, -1).gather(1, inverse.index_select(0, chosen)).view_as(E)
        if ctx.needs_input_grad[1]:
            shifted = E.reshape(rows, -1).index_select(1, index.flatten()).view(rows, *index.shape)
            grad_z = (shifted * grad.reshape(rows, 1, -1)).sum(-1)
        return grad_E, grad_z, None, None


class _Lookup(torch.autograd.Function):
    """``p = table[index]`` with the gradient of a smooth ``p(A, B)`` of the state ``x = (A, B)``:
    ``(dp/dA, dp/dB) = slopes[:, index]``, and ``dL/dtable`` accumulated at ``index``.

    ``table``: flat ``(6 * S * S,)``, ``slopes``: ``(2, 6 * S * S)``; ``index``: long ``(B, H, W)``; ``x``:
    ``(B, 2, H, W)``
    (taken whole, so that its gradient is one stacked tensor rather than two ``select`` backwards).
    """

    @staticmethod
    def forward(ctx, table: Tensor, slopes: Tensor, index: Tensor, x: Tensor) -> Tensor:
        ctx.save_for_backward(slopes, index)
        ctx.table_size = table.shape[0]
        return table.index_select(0, index.flatten()).view_as(index)

    @staticmethod
    def backward(ctx, grad: Tensor):
        slopes, index = ctx.saved_tensors
        flat = index.flatten()
        grad_table = grad_x = None
        if ctx.needs_input_grad[0]:
            grad_table = grad.new_zeros(ctx.table_size).index_add_(0, flat, grad.flatten())
        if ctx.needs_input_grad[3]:
            grad_x = slopes.index_select(1, flat).view(2, *grad.shape).transpose(0, 1) * grad[:, None]
        return grad_table, None, None, grad_x


class MalevanetsKapral(Simulator):
    """The MK lattice gas with learnable ``D_A, D_B, k1, k2, k3``, each in [0, 1].

    State: counts ``(B, 2, H, W)``; lattices are the samples.

    Args:
        D_A, D_B: diffusion coefficients (probability that the excited particles move).
        k1, k2, k3: reaction rates (defaults: :data:`REFERENCE`).
        N: capacity of a site per species.
        gamma: reaction timescale.
        estimator: estimator (or its name) of the excitation thresholds and the reaction draws.
        direction_estimator: estimator (or its name) of the translation directions.
        fixed: names of parameters to keep fixed (registered as buffers, not learnable).
        parameterization: ``clamp`` (raw values clamped into [0, 1], as the thesis's projected
            gradient descent; learning rates act on the values) or ``logit`` (stored as logits).
    """

    def __init__(self, D_A: float = REFERENCE["D_A"], D_B: float = REFERENCE["D_B"], k1: float = REFERENCE["k1"],
                 k2: float = REFERENCE["k2"], k3: float = REFERENCE["k3"], N: int = 50, gamma: float = 0.005,
                 estimator: Estimator | str = "ste", direction_estimator: Estimator | str = "gumbel",
                 fixed: tuple[str, ...] | list[str] = (), parameterization: str = "clamp"):
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
        self.estimator = make_estimator(estimator)
        self.direction_estimator = make_estimator(direction_estimator, key="model.direction_estimator")
        # (dA, dB) of channels sigma1..sigma6 when they fire, (2, 6 (N + 2)^2) like the tables below
        changes = torch.tensor([[1.0, -1.0, 1.0, -1.0, 0.0, 0.0], [0.0, 0.0, 0.0, 0.0, 1.0, -1.0]])
        self.register_buffer("channel_changes", changes.repeat_interleave((N + 2) ** 2, dim=1), persistent=False)
        # The counts stay within 0..N (a full site always excites one particle, and no channel fires
        # into a full site), so the reaction probabilities are tabulated once per rollout for
        # A, B = 0..N+1 (one spare row for safety), with the derivatives of the smooth polynomials.
        counts = torch.arange(N + 2, dtype=torch.float32)
        with torch.enable_grad():
            grid_A, grid_B = (g.clone().requires_grad_() for g in torch.meshgrid(counts, counts, indexing="ij"))
            monomials = _monomials(grid_A, grid_B, N)
            dA = torch.stack([torch.autograd.grad(m.sum(), grid_A, retain_graph=True)[0] for m in monomials])
            dB = torch.stack([torch.autograd.grad(m.sum(), grid_B, retain_graph=True)[0] for m in monomials])
        self.register_buffer("monomials", monomials.detach(), persistent=False)
        self.register_buffer("monomial_slopes", torch.stack([dA, dB]), persistent=False)
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

    def rates(self, values: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        """What a step needs from the parameters: the ``(2, 9)`` direction probabilities of A and B, and
        the reaction probabilities ``p_r(A, B)``, clamped into [0, 1] (flat ``(6 * (N + 2)^2,)``), with their
        derivatives in ``A`` and ``B`` (``(2, 6 * (N + 2)^2)``), tabulated for ``r = 1..6`` and
        ``A, B = 0..N+1``."""
        factors = self.reaction_factors(values)[:, None, None]
        unclamped = factors * self.monomials
        inside = ((unclamped >= 0) & (unclamped <= 1)).float()  # as the gradient of clamp()
        slopes = (factors.detach() * self.monomial_slopes * inside).flatten(1)
        return direction_probabilities(values[:2]), unclamped.clamp(0, 1).flatten(), slopes

    def diffuse(self, x: Tensor, directions: Tensor, xi: Tensor, direction_noise: Tensor) -> Tensor:
        """One diffusion step of both species; every lattice and species draws its own direction.

        ``xi``: ``U(0, 1)`` of the shape of ``x`` (excitation); ``direction_noise``: ``U(0, 1)`` of shape
        ``(B, 2, 9)`` (direction draw).
        """
        batch, species, height, width = x.shape
        E = self.estimator.threshold(torch.add(x, xi, alpha=-self.N))
        directions = directions.expand(batch, -1, -1)
        index, inverse = self._shift_tables(height, width, x.device)
        if E.requires_grad or directions.requires_grad:
            z = self.direction_estimator.categorical(directions, noise=direction_noise)
            shifted = _Translate.apply(E.reshape(batch * species, height, width), z.reshape(batch * species, -1),
                                       index, inverse)
        else:  # the same draw and translation without one-hot vectors and autograd.Function overhead
            chosen = self.direction_estimator.categorical_index(directions, noise=direction_noise)
            shifted = E.reshape(batch * species, -1).gather(1, index.index_select(0, chosen.flatten()))
        return x - E + shifted.view_as(x)

    def reaction_factors(self, values: Tensor) -> Tensor:
        """``(6,)``: ``gamma k_r / ((N - 1)(N - 2))`` for channels 1, 2 and ``gamma k_r / N`` for 3-6."""
        N = self.N
        scale = torch.tensor([1 / ((N - 1) * (N - 2))] * 2 + [1 / N] * 4, device=values.device)
        return self.gamma * values[2:].repeat_interleave(2) * scale

    def reaction_probabilities(self, A: Tensor, B: Tensor) -> Tensor:
        """``(6, ...)``: ``p1..p6`` of the six channels at counts ``A``, ``B`` (not clamped)."""
        return _monomials(A, B, self.N) * self.reaction_factors(self.values()).view(6, *([1] * A.dim()))

    def react(self, x: Tensor, table: Tensor, slopes: Tensor, u: Tensor) -> Tensor:
        """One reaction step: every site applies one of the six channels, chosen uniformly.

        ``table``, ``slopes`` from :meth:`rates`; ``u``: ``U(0, 1)`` of shape ``(B, H, W)``, which gives
        both the channel ``c = floor(6 u)`` and, independent of it and uniform, the draw ``6 u - c``.
        """
        size = self.N + 2
        scaled = u * 6
        xi = torch.frac(scaled)
        counts = x.detach()
        # Exact in floating point (integers below 6 (N + 2)^2); u < 1, so the channel is at most 5.
        index = torch.add(counts[:, 1], counts[:, 0], alpha=size).add_(scaled - xi, alpha=size**2).long()
        flat = index.flatten()
        if table.requires_grad or x.requires_grad:
            p = _Lookup.apply(table, slopes, index, x)
        else:
            p = table.index_select(0, flat).view_as(index)
        fired = self.estimator.bernoulli(p, noise=xi)
        change = self.channel_changes.index_select(1, flat).view(2, *index.shape).transpose(0, 1)
        return torch.addcmul(x, fired[:, None], change)

    def prepare(self) -> tuple[Tensor, Tensor, Tensor]:
        return self.rates(self.values())

    def transition(self, x: Tensor, prepared: tuple[Tensor, Tensor, Tensor],
                   generator: torch.Generator | None = None) -> Tensor:
        """One step (diffuse A and B, then react) of ``x``: ``(B, 2, H, W)`` counts to the same shape."""
        directions, table, slopes = prepared
        # All of a step's noise in one draw: excitation of A and B, reaction, directions.
        batch, _, height, width = x.shape
        sites = batch * 3 * height * width
        draws = torch.rand(sites + batch * 18, generator=generator, device=x.device, dtype=x.dtype)
        noise, direction_noise = draws[:sites].view(batch, 3, height, width), draws[sites:].view(batch, 2, 9)
        x = self.diffuse(x, directions, noise[:, :2], direction_noise)
        return self.react(x, table, slopes, noise[:, 2])

    def initial_state(self, batch: int, size: int | tuple[int, int], device: torch.device | None = None,
                      generator: torch.Generator | None = None) -> Tensor:
        """:func:`uniform_state` with the central stripe."""
        return uniform_state(batch, size, self.N, device=device)

    def observe(self, x: Tensor) -> Tensor:
        """Species A as a fraction of the capacity, ``(B, H, W)``."""
        return x[:, 0] / self.N
