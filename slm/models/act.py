r"""Migrating cells: the act model (Niculescu et al. 2015) in the multi-cell Cellular Potts model.

Every site of a cell holds an activity ``a_i``: ``max_act`` when the site is copied into, falling by one
at the end of every MCS down to zero (sites never copied into hold 0). A copy from source ``s`` into
target ``t`` gets

.. math::  \Delta H_{act} = -\frac{\lambda_{act}}{max_{act}} \left(GM(s) - GM(t)\right),
           \quad GM(i) = \Big(\prod_{j \in N(i) \cup \{i\},\ \sigma_j = \sigma_i} a_j\Big)^{1/n_i}

(``n_i`` the number of such sites, Moore neighbourhood: 8 sites in 2D, 26 in 3D, as Artistoo's
ActivityConstraint; ``GM = 0`` on the medium), added to the energy
of :class:`slm.models.CellularPotts`: active protrusions pull the cell forward, and a cell with a front
keeps it, which makes it migrate persistently.

Gradients. ``lambda_act`` enters ``dH`` linearly, like every other energy parameter. ``max_act`` is an
integer memory in the source; here it is *relaxed*: the state keeps each site's age ``g_i`` (MCS since
it was copied into, activity ``max(m - g_i, 0)`` for a memory ``m``), and with ``m = floor(max_act)``
and ``f = max_act - m``

.. math::  \Delta H_{act}(max_{act}) = (1 - f)\, \Delta H_{act}(m) + f\, \Delta H_{act}(m + 1),

exactly the model at an integer ``max_act`` and linear between integers, so that
``d dH / d max_act = dH(m + 1) - dH(m)``. (Relaxing the activities themselves, ``max(max_act - g, 0)``,
is not usable: the geometric mean has an infinite slope where an activity reaches 0.)

Schedules (:mod:`slm.models.potts`). Under ``random`` (default, the field's: Artistoo's, the act model's own
implementation) every attempt reads ``GM`` from the current activities, one attempt at a time, and the
compiled engine replays :func:`slm.models.reference.potts.sequential_mcs` attempt for attempt
(``tests/test_potts_schedule.py``). Under ``sweep`` ``GM`` is evaluated for the whole lattice at the start of
each of the site classes of an MCS (:func:`slm.lattice.site_classes`) and used for all of the class's
copies; ``tests/test_act.py`` finds no difference in distribution from the literal model on that schedule
(``order="classes"``) and a clear one from uniform random targets: with a memory counted in MCS, the schedule
matters (the sweep renews more sites per MCS).

Tracks. The state also carries each cell's first moment ``M_c = sum_i x_i`` (unwrapped coordinates:
every site counted at its image nearest the cell's centroid), updated by the acceptances with the
estimator's gradient, so that :meth:`ActPotts.positions` ``M_c / V_c`` gives differentiable centroid
tracks that cross the torus' edges freely.

Populations (``classes = K > 1``): ``lambda_act``, ``max_act`` and every learned CPM parameter are
``K``-vectors, with class weights ``w`` (learnable with ``weights`` in ``learn``). Lattice ``i`` of a batch holds
cells of class ``i mod K`` (every class simulated, stratified; both engines take each lattice's parameters,
:meth:`slm.models.CellularPotts.lattice_params`), and :meth:`ActPotts.unit_classes` gives tasks the weights
``w_k / share_k`` that turn a mean over lattices into ``sum_k w_k E_k[.]``: the class is summed out exactly, as in
the PRW mixture. ``K = 1`` is the single population with the same random stream.

State: an :class:`ActState`, the :class:`slm.models.CellularPotts` state with ``age (B, *spatial)`` float and
``moment (B, C, dims)`` (rows, columns; depth, rows, columns in 3D).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any, NamedTuple

import torch
from torch import Tensor

from slm.errors import InputError
from slm.lattice import class_sites, moore_offsets, roll_axes
from slm.models import potts_engine
from slm.models.potts import CellularPotts, cell_edges, per_lattice
from slm.parameters import Positive, Simplex, class_values, register

#: The age of a site never copied into (activity 0 for any max_act).
NEVER = 1e9


class ActState(NamedTuple):
    """:class:`slm.models.potts.PottsState`'s fields, then each site's ``age (B, *spatial)`` (MCS since it was copied
    into) and each id's unwrapped first moment ``moment (B, C, dims)`` (a coordinate per lattice axis)."""

    labels: Tensor
    cell_types: Tensor
    volume: Tensor
    surface: Tensor
    path: Tensor
    age: Tensor
    moment: Tensor


class ActPotts(CellularPotts):
    """The act model of migrating cells in the multi-cell CPM (see the module docstring).

    Args:
        lambda_act: ``lambda_act >= 0``, the strength of the activity's pull.
        max_act: ``max_act > 0``, the activity of a freshly copied site, in MCS of memory.
        learn: as :class:`slm.models.CellularPotts`, with ``lambda_act`` and ``max_act`` too; default
            both.
        cells: cells placed by :meth:`initial_state`: one at the centre, or several packed around it.
        classes: ``K`` classes of cells with their own ``lambda_act`` and ``max_act`` (a number each, spread by
            :func:`slm.parameters.class_values` over logarithms -0.3 to +0.3, or ``K`` numbers) and their own
            value of every CPM parameter in ``learn`` (e.g. ``temperature``; each class starts at the configured
            value); lattice ``i`` holds class ``i mod K``.
        weights: the classes' start weights (``K`` positive numbers; default equal); fitted with ``weights`` in
            ``learn``.
        Others: as :class:`slm.models.CellularPotts`, by name (one cell type by default, no contact between
            cells of it other than ``J_cell_cell``).
    """

    more_parameters = ("lambda_act", "max_act", "weights")
    terms = (*CellularPotts.terms, "act")

    def __init__(self, lambda_act: float = 250.0, max_act: float = 20.0, classes: int = 1,
                 weights: Sequence[float] | None = None, learn: Sequence[str] | None = None,
                 contact: Sequence[Sequence[float]] = ((0, 20), (20, 40)),
                 volume_target: float | Sequence[float] = 60.0,
                 lambda_volume: float | Sequence[float] = 25.0, surface_target: float | Sequence[float] = 160.0,
                 lambda_surface: float | Sequence[float] = 1.0, temperature: float = 20.0,
                 type_names: Sequence[str] | None = ("cell",), cells: int = 1, **cpm: Any):
        learn = ["lambda_act", "max_act"] if learn is None else list(learn)
        if not (isinstance(classes, int) and not isinstance(classes, bool) and classes >= 1):
            raise InputError(f"model.classes: expected a positive number of classes, got {classes!r}")
        self.classes = classes  # before the CPM's parameters: each learned one gets a value per class
        # The CPM's arguments by name: here only the act model's own defaults; the rest (neighbourhood, fractions,
        # estimator, engine, schedule, targets) pass through as CellularPotts takes them.
        super().__init__(contact=contact, volume_target=volume_target, lambda_volume=lambda_volume,
                         surface_target=surface_target, lambda_surface=lambda_surface, temperature=temperature,
                         type_names=type_names, learn=learn, cells=cells, **cpm)
        for key, value in (("lambda_act", lambda_act), ("max_act", max_act)):
            values = class_values(f"model.{key}", value, classes, Positive(), 0.3)
            if key == "max_act" and bool((values < 1).any()):
                raise InputError(f"model.max_act: expected a memory of at least 1 MCS, got {value!r}")
            if key == "lambda_act" and bool((values < 0).any()):
                raise InputError(f"model.lambda_act: expected a non-negative number, got {value!r}")
            value = float(values[0]) if classes == 1 else values
            if key in learn:
                register(self, key, value, Positive())
            else:
                self.register_buffer(key, torch.as_tensor(value))
        if classes == 1 and (weights is not None or "weights" in learn):
            raise InputError("model.weights: class weights need model.classes > 1")
        if classes > 1:
            start = [1 / classes] * classes if weights is None else [float(w) for w in weights]
            if len(start) != classes or min(start) <= 0:
                raise InputError(f"model.weights: expected {classes} positive weights, got {weights!r}")
            start = [w / sum(start) for w in start]
            if "weights" in learn:
                register(self, "weights", start, Simplex())
            else:
                self.register_buffer("weights", torch.tensor(start))

    # -- the act term --------------------------------------------------------------------------

    def prepare(self) -> tuple[Tensor, ...]:
        """:meth:`slm.models.CellularPotts.prepare`, then ``lambda_act`` and ``max_act``."""
        return (*super().prepare(), self.lambda_act, self.max_act)

    def _start_value(self, name: str, value: float) -> float | list[float]:
        return value if self.classes == 1 else [value] * self.classes

    def lattice_classes(self, batch: int) -> Tensor | None:
        """Lattice ``i`` holds cells of class ``i mod K`` (None for one population)."""
        if self.classes == 1:
            return None
        return torch.arange(batch, device=self.temperature.device) % self.classes

    def lattice_act(self, prepared: tuple[Tensor, ...], batch: int) -> tuple[Tensor, Tensor]:
        """``lambda_act`` and ``max_act`` of the cells of each of ``batch`` lattices, ``(B,)`` each: lattice ``i``
        holds class ``i mod K``."""
        index = self.lattice_classes(batch)
        return tuple(per_lattice(value, 0, index, batch) for value in prepared[6:8])

    def unit_classes(self, n: int) -> tuple[Tensor, Tensor] | None:
        if self.classes == 1:
            return None
        if n < self.classes:
            raise InputError(f"data.batch_size: {n} lattices cannot hold {self.classes} classes of cells")
        kind = self.lattice_classes(n)
        share = torch.bincount(kind, minlength=self.classes).to(self.weights.dtype) / n
        return kind, (self.weights / share)[kind]

    def _copy_energy(self, state: ActState, prepared: tuple[Tensor, ...], site_class: tuple[int, ...],
                     where: Tensor) -> Tensor:
        dims = len(site_class)
        lambda_act, max_act = (v.view(-1, *(1,) * dims) for v in self.lattice_act(prepared, state.labels.shape[0]))
        below = max_act.detach().floor().clamp_min(1)
        fraction = max_act - below
        inside = class_sites(site_class)
        d_h = 0.0
        for memory, weight in ((below, 1 - fraction), (below + 1, fraction)):
            gm = geometric_activity(state.labels, (memory - state.age).clamp_min(0))
            padded = torch.nn.functional.pad(gm[:, None], (1, 1) * dims, mode="circular")[:, 0]
            source = padded.flatten(1).gather(1, where).view_as(gm[inside])
            d_h = d_h - weight * (lambda_act / memory) * (source - gm[inside])
        return d_h

    def _kernel_mcs(self, state: ActState, prepared: tuple[Tensor, ...], draws: Tensor) -> ActState:
        act = torch.stack(self.lattice_act(prepared, state.labels.shape[0]), 1)
        labels, volume, surface, path, moment, age = potts_engine.mcs(self, state, prepared, draws, act)
        return ActState(labels, state.cell_types, volume, surface, path, age, moment)

    def _copied(self, state: ActState, z: Tensor, source: Tensor, target: Tensor,
                site_class: tuple[int, ...]) -> ActState:
        age, moment = state.age.clone(), state.moment
        inside = class_sites(site_class)
        age[inside] = torch.where(z.detach() > 0, 0.0, age[inside])
        spatial, dims = tuple(age.shape[1:]), len(site_class)
        axes = [torch.arange(c, side, 2, device=z.device, dtype=moment.dtype) for c, side in zip(site_class, spatial,
                                                                                                 strict=True)]
        site = torch.stack(torch.meshgrid(*axes, indexing="ij"), -1)  # (*half, dims)
        centre = moment.detach() / state.volume.detach().clamp_min(1)[..., None]
        for cell, sign in ((source, 1.0), (target, -1.0)):
            index = cell.flatten(1)
            near = centre.gather(1, index[..., None].expand(-1, -1, dims)).view(*cell.shape, dims)
            position = near + _wrap(site - near, spatial)
            weight = (sign * z * (cell > 0)).flatten(1)[..., None]
            moment = moment.scatter_add(1, index[..., None].expand(-1, -1, dims), weight * position.flatten(1, -2))
        return state._replace(age=age, moment=moment)

    def _after_mcs(self, state: ActState, prepared: tuple[Tensor, ...]) -> ActState:
        return state._replace(age=state.age + 1)

    # -- states and tracks ---------------------------------------------------------------------

    def state(self, labels: Tensor, cell_types: Tensor, age: Tensor | None = None) -> ActState:
        """The CPM state of ``labels`` and ``cell_types`` (see :meth:`slm.models.CellularPotts.state`), with
        ``age`` (the labels' shape; default: never copied into, activity 0) and the cells' unwrapped moments."""
        base = super().state(labels, cell_types)
        labels = base.labels
        if age is None:
            age = torch.full(labels.shape, NEVER, device=labels.device)
        elif tuple(age.shape) != tuple(labels.shape):
            raise InputError(f"age: expected the labels' shape {tuple(labels.shape)}, got {tuple(age.shape)}")
        return ActState(*base, age.to(labels.device, torch.float), unwrapped_moments(labels, base.cell_types.shape[1]))

    def positions(self, state: ActState) -> Tensor:
        """Centroids ``(B, C - 1, dims)`` (rows, columns; depth first in 3D; in sites, unwrapped) of the cells, with the
        gradient."""
        return state.moment[:, 1:] / state.volume[:, 1:, None].clamp_min(1)

    def observe(self, state: ActState) -> Tensor:
        """``(B, *spatial)`` in [0, 1]: cells at 0.3 plus 0.7 x their activity over ``max_act``, the medium and the
        cell boundaries at 0."""
        labels, age = state.labels, state.age
        memory = self.lattice_act(self.prepared(), len(labels))[1].detach().view(-1, *(1,) * (labels.dim() - 1))
        activity = (memory - age).clamp(0, None) / memory
        return torch.where(cell_edges(labels) | (labels == 0), 0.0, 0.3 + 0.7 * activity)


def geometric_activity(labels: Tensor, activity: Tensor) -> Tensor:
    """``GM (B, *spatial)``: at every site of a cell the geometric mean of the activities of the sites of the
    same cell among the site and its Moore neighbours (8, or 26 in 3D; 0 if any of them is 0), and 0 on the
    medium."""
    log_sum = torch.zeros_like(activity)
    count = torch.zeros_like(activity)
    zero = labels == 0
    dims = labels.dim() - 1
    for offset in ((0,) * dims, *moore_offsets(dims)):
        near = torch.roll(activity, offset, roll_axes(dims))
        same = torch.roll(labels, offset, roll_axes(dims)) == labels
        log_sum = log_sum + torch.where(same, near.clamp_min(1e-30).log(), 0.0)
        count = count + same
        zero = zero | (same & (near <= 0))
    return torch.where(zero, 0.0, (log_sum / count).exp())


def unwrapped_moments(labels: Tensor, ids: int) -> Tensor:
    """``M (B, ids, dims)``: per id the sum of its sites' coordinates, each taken at the image nearest the id's
    circular mean (so a cell across the torus' edge is summed in one piece), of ``labels (B, *spatial)``."""
    batch, *spatial = labels.shape
    dims = len(spatial)
    axes = [torch.arange(side, device=labels.device, dtype=torch.float) for side in spatial]
    site = torch.stack(torch.meshgrid(*axes, indexing="ij"), -1).reshape(-1, dims)
    period = torch.tensor(spatial, device=labels.device, dtype=torch.float)
    angle = 2 * math.pi * site / period
    index = labels.flatten(1)[..., None].expand(-1, -1, dims)
    cos = torch.zeros(batch, ids, dims, device=labels.device).scatter_add_(1, index, angle.cos().expand(batch, -1, -1))
    sin = torch.zeros(batch, ids, dims, device=labels.device).scatter_add_(1, index, angle.sin().expand(batch, -1, -1))
    mean = torch.atan2(sin, cos) % (2 * math.pi) * period / (2 * math.pi)
    near = mean.gather(1, index)
    position = near + _wrap(site - near, tuple(spatial))
    return torch.zeros(batch, ids, dims, device=labels.device).scatter_add_(1, index, position)


def _wrap(offset: Tensor, size: tuple[int, ...]) -> Tensor:
    """Offsets ``(..., dims)`` on a torus of ``size`` folded into ``[-L/2, L/2)``."""
    period = torch.tensor(size, device=offset.device, dtype=offset.dtype)
    return offset - period * torch.floor(offset / period + 0.5)

