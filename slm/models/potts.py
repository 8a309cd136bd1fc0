r"""Cellular Potts model with many cells (Graner and Glazier 1992), in CompuCell3D's conventions.

Lattice: an ``H x W`` or ``D x H x W`` torus of integer cell ids ``sigma`` (0 = medium; the dimension comes from
the state's labels, ``(B, H, W)`` or ``(B, D, H, W)``); cell ``c`` has a type
``tau(c)`` (0 for the medium, ``1..K`` for cells). Energy

.. math::

    H = \sum_{(i, j)} J(\tau(\sigma_i), \tau(\sigma_j)) [\sigma_i \ne \sigma_j]
        + \sum_c \lambda_V(\tau_c) (V_c - V_t(\tau_c))^2 + \sum_c \lambda_S(\tau_c) (S_c - S_t(\tau_c))^2

over the bonds ``(i, j)`` of neighbouring sites (Moore, 8 neighbours in 2D and 26 in 3D, by default;
``von_neumann``: 4 or 6; :data:`slm.lattice.NEIGHBOURHOODS`),
with ``V_c`` the number of sites of cell ``c`` and ``S_c`` the number of its bonds to sites of other
ids. The medium has no volume or surface energy.

Dynamics: one Monte Carlo step (MCS, one :meth:`CellularPotts.transition`) is ``N`` copy attempts (``N`` sites).
An attempt picks a target site ``t`` and a source ``s`` among its Moore neighbours (8, or 26 in 3D, as Artistoo
copies) and copies
``sigma_s`` into ``t`` with probability ``min(1, exp(-dH / T))``; a copy that would remove a cell's last
site is refused. (Picking ``t`` then a neighbour ``s`` proposes every ordered pair as often as picking
``s`` then a neighbour ``t``.) Which targets, in which order, is the schedule (``schedule``):

* ``random`` (default), the field's: every attempt's target is a uniform random site, with replacement, and
  the attempts are decided one at a time on the current state, as in CompuCell3D, Morpheus, Artistoo and
  glazier; an MCS here means what it means there, in dynamics as well as at equilibrium. The compiled engine
  runs it (:mod:`slm.models.potts_engine`; it draws only the targets that can change, which is the same
  process), and :func:`slm.models.reference.potts.sequential_mcs` with ``order="random"`` is its literal
  reference, replayed attempt for attempt in ``tests/test_potts_schedule.py``.
* ``sweep``: every site once per MCS, in four classes ``(i mod 2, j mod 2)`` (eight in 3D,
  :func:`slm.lattice.site_classes`); within a class no two targets are
  neighbours, so no bond has both ends changing: the contact energy change and the surface change of every
  proposal of a class are computed at once from the lattice. Proposals still interact through the volume and
  surface of the cells they share, so the class's proposals are decided in rounds
  (:meth:`CellularPotts._resolve`) that give exactly the outcome of deciding them one at a time in a random
  order: the literal algorithm with the attempts ordered by class, which
  :func:`slm.models.reference.potts.sequential_mcs` with ``order="classes"`` checks in distribution
  (``tests/test_potts.py``). The same stationary distribution as ``random``, other kinetics (cells move
  farther per MCS). It runs in tensor operations (``engine="torch"``, any device and dimension, the reference)
  or, in 2D, with the same noise and decisions, compiled.

Gradients. The acceptance ``z ~ Bernoulli(p)`` of every attempt is drawn through the estimator, with
``p`` differentiable in every energy parameter and ``T``. The state carries float volumes and surfaces
updated by ``z`` (so later ``dH`` depend on earlier decisions) and, with autograd on, a zero-valued
*gradient path* ``(z - stop_grad(z)) * delta`` of the bond counts per pair of types, so that
:meth:`CellularPotts.summary` has the pathwise gradient of the estimator. With ``score`` the estimator
records ``log P`` per lattice and tasks pass per-lattice summaries through ``surrogate``.

State: a :class:`PottsState` ``(labels, cell_types, volume, surface, path)``, with ``C`` ids (the medium
included); :meth:`CellularPotts.state` builds it from labels.
Surfaces are kept up to date only when some type has a surface energy (or a learned ``lambda_S``).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import NamedTuple

import torch
import torch.nn.functional as F
from torch import Tensor

from slm.errors import InputError
from slm.estimators import Estimator, gradient_only, make_estimator
from slm.lattice import NEIGHBOURHOODS, class_sites, moore_offsets, roll_axes, site_classes
from slm.models import potts_engine
from slm.models.base import Simulator, _Cache
from slm.parameters import Positive, Real, register

#: Per-type energy terms: their config names.
PER_TYPE = ("volume_target", "lambda_volume", "surface_target", "lambda_surface")
#: The Hamiltonian's terms, each once: what it adds to ``dH`` of a copy and the parameters it reads. A model lists
#: the terms it adds up in ``terms``; the compiled engine (:data:`slm.models.potts_engine.KERNEL_TERMS`) and the
#: literal reference (:data:`slm.models.reference.potts.REFERENCE_TERMS`) each say which they implement, and
#: refuse a model with others. Adding a term: an entry here, the torch sweep's ``_copy_energy`` (and the state it
#: needs), then the kernel and the reference, each tested against the torch path.
TERMS = {
    "contact": ("sum over the target's bonds of J(type, type') [id != id'], before and after",
                ("J_<a>_<b>",)),
    "volume": ("lambda_V (V - V_t)^2 of the source and target cells", ("lambda_volume", "volume_target")),
    "surface": ("lambda_S (S - S_t)^2 of the source and target cells", ("lambda_surface", "surface_target")),
    "act": ("-(lambda_act / max_act) (GM(s) - GM(t)), slm.models.act", ("lambda_act", "max_act")),
}
#: What :meth:`CellularPotts.summary` returns, in this order.
SUMMARY = ("heterotypic_fraction", "volume_mean", "volume_sd", "clusters")



class PottsState(NamedTuple):
    """The multi-cell CPM's state: ``labels (B, H, W)`` or ``(B, D, H, W)`` long, ``cell_types (B, C)`` long, float
    ``volume (B, C)`` and ``surface (B, C)`` (kept by the acceptances, with their gradient) and the zero-valued
    gradient path of the bond counts per pair of types, ``path (B, (K+1)^2)``."""

    labels: Tensor
    cell_types: Tensor
    volume: Tensor
    surface: Tensor
    path: Tensor


#: How :meth:`CellularPotts.initial_state` places its cells.
PLACEMENTS = ("packed", "scattered")


class CellularPotts(Simulator):
    """Multi-cell CPM; one :meth:`transition` is one MCS (see the module docstring).

    Args:
        contact: ``(K+1) x (K+1)`` symmetric contact energies over the medium and the ``K`` cell types,
            e.g. the cellsort example's ``[[0, 16, 16], [16, 2, 11], [16, 11, 14]]``.
        volume_target, lambda_volume, surface_target, lambda_surface: a number for every cell type, or
            a list of ``K`` numbers (one per type). ``lambda_* >= 0``, targets ``> 0``.
        temperature: ``T > 0``.
        type_names: names of the ``K`` types (parameter names use them); default ``1..K``.
        learn: the parameters to fit; the others are fixed. Names: ``J_<a>_<b>`` (``a``, ``b`` among
            ``medium`` and the type names, in that order), ``temperature``, and ``lambda_volume`` etc.
            (a shared number) or ``lambda_volume_<type>`` (per type). Default: every contact energy.
        neighbourhood: ``moore`` (8 neighbours in 2D, CompuCell3D's NeighborOrder 2; 26 in 3D, its NeighborOrder 3
            and Artistoo's) or ``von_neumann`` (4; 6 in 3D) for the contact and surface energies; copy attempts
            always go to a Moore neighbour.
        cells, fractions: what :meth:`initial_state` places: ``cells`` square (cubic in 3D) cells of about
            ``volume_target`` sites with types drawn in the proportions ``fractions`` (default equal).
        placement: ``packed`` (default: a compact blob at the centre) or ``scattered`` (at random slots over the
            whole lattice, other ones in each lattice: a crowded tissue seen through a window).
        estimator: the :class:`slm.estimators.Estimator` (or name) of the acceptance draws.
        engine: ``auto`` (default), ``kernel`` or ``torch``: which implementation runs an MCS
            (:mod:`slm.models.potts_engine`).
        schedule: ``random`` (default, the field's: uniform random targets; compiled engine) or ``sweep``
            (every site once per MCS; any engine and device). See the module docstring.
        targets: how the compiled engine draws the random schedule's targets: ``border`` (default; only those
            that can change, the attempts in between skipped in one draw) or ``uniform`` (literally, three
            uniforms per attempt: what the reference replays, and the benchmark's comparison). The same process.
    """

    #: The terms of :data:`TERMS` this model's energy adds up; a subclass that adds one declares it here.
    terms: tuple[str, ...] = ("contact", "volume", "surface")
    #: Parameters of more energy terms that a subclass registers itself (names ``learn`` may hold).
    more_parameters: tuple[str, ...] = ()

    def __init__(self, contact: Sequence[Sequence[float]], volume_target: float | Sequence[float] = 25.0,
                 lambda_volume: float | Sequence[float] = 2.0, surface_target: float | Sequence[float] = 20.0,
                 lambda_surface: float | Sequence[float] = 0.0, temperature: float = 10.0,
                 type_names: Sequence[str] | None = None, learn: Sequence[str] | None = None,
                 neighbourhood: str = "moore", cells: int = 200, fractions: Sequence[float] | None = None,
                 estimator: Estimator | str = "ste", engine: str = "auto", schedule: str = "random",
                 targets: str = "border", placement: str = "packed"):
        super().__init__()
        self.engine, self.schedule = engine, schedule
        potts_engine.check(self)
        if targets not in potts_engine.TARGETS:
            raise InputError(f"model.targets: expected one of {', '.join(potts_engine.TARGETS)}, got {targets!r}")
        self.targets = targets
        self._kernel_params = _Cache()  # the parameters packed for the kernel, once per prepared()
        matrix = _contact_matrix(contact)
        n_types = len(matrix) - 1
        names = ["medium", *(type_names if type_names is not None else [str(k) for k in range(1, n_types + 1)])]
        if len(names) != n_types + 1 or len(set(names)) != len(names):
            raise InputError(f"model.type_names: expected {n_types} distinct names (one per cell type), got "
                             f"{type_names}")
        if neighbourhood not in NEIGHBOURHOODS:
            raise InputError(f"model.neighbourhood: expected one of {', '.join(NEIGHBOURHOODS)}, got {neighbourhood!r}")
        self.type_names = names
        #: :data:`SUMMARY`, then (with several types) ``medium_share_<type>``: each type's share of the bonds
        #: between cells and the medium
        self.summary_names = SUMMARY + (tuple(f"medium_share_{name}" for name in names[1:]) if n_types > 1 else ())
        self.n_types = n_types
        self.neighbourhood = neighbourhood
        self.estimator = make_estimator(estimator)
        values = {f"J_{names[a]}_{names[b]}": (matrix[a][b], Real()) for a in range(n_types + 1)
                  for b in range(a, n_types + 1) if a + b > 0}
        self.contact_names = list(values)
        self.per_type: dict[str, list[str]] = {}
        for key, given in zip(PER_TYPE, (volume_target, lambda_volume, surface_target, lambda_surface), strict=True):
            self.per_type[key] = self._per_type_values(key, given, values)
        values["temperature"] = (_number("model.temperature", temperature), Positive())
        if not values["temperature"][0] > 0:
            raise InputError(f"model.temperature: expected a positive temperature, got {temperature}")
        learn = list(self.contact_names if learn is None else learn)
        unknown = sorted(set(learn) - set(values) - set(self.more_parameters))
        if unknown:
            raise InputError(f"model.learn: unknown parameter(s) {unknown}; expected some of "
                             f"{sorted([*values, *self.more_parameters])}")
        for name, (value, constraint) in values.items():
            if name in learn:
                register(self, name, self._start_value(name, value), constraint)
            else:
                self.register_buffer(name, torch.tensor(float(value)))
        self.has_surface = any(name in learn or values[name][0] != 0 for name in self.per_type["lambda_surface"])
        if not (isinstance(cells, int) and cells >= 1):
            raise InputError(f"model.cells: expected a positive number of cells, got {cells}")
        weights = [1.0] * n_types if fractions is None else [_number("model.fractions", f) for f in fractions]
        if len(weights) != n_types or min(weights) < 0 or sum(weights) <= 0:
            raise InputError(f"model.fractions: expected {n_types} non-negative weights (one per type), got "
                             f"{fractions}")
        if placement not in PLACEMENTS:
            raise InputError(f"model.placement: expected one of {', '.join(PLACEMENTS)}, got {placement!r}")
        self.cells, self.placement = cells, placement
        self.register_buffer("fractions", torch.tensor(weights) / sum(weights), persistent=False)

    def bonds(self, dims: int) -> int:
        """Bonds of a site in the contact and surface energies on a ``dims``-dimensional lattice (8 or 4 in 2D,
        26 or 6 in 3D)."""
        return NEIGHBOURHOODS[self.neighbourhood][dims]

    def _start_value(self, name: str, value: float) -> float | list[float]:
        """The start of the learned parameter ``name`` from its configured ``value`` (a population of classes
        gives each class its own copy)."""
        return value

    def _per_type_values(self, key: str, given: float | Sequence[float], values: dict) -> list[str]:
        """Add ``key`` (one number) or ``key_<type>`` (a list) to ``values``; return the name of each type's value."""
        if isinstance(given, int | float):
            numbers, names = [given], [key]
        else:
            numbers, names = list(given), [f"{key}_{name}" for name in self.type_names[1:]]
            if len(numbers) != self.n_types:
                raise InputError(f"model.{key}: expected a number or {self.n_types} numbers (one per type), got "
                                 f"{given}")
        for name, number in zip(names, numbers, strict=True):
            number = _number(f"model.{key}", number)
            if number < 0 or (key.endswith("target") and number == 0):
                kind = "a positive target" if key.endswith("target") else "a lambda >= 0"
                raise InputError(f"model.{key}: expected {kind}, got {number}")
            values[name] = (number, Positive())
        return names if len(names) == self.n_types else names * self.n_types

    # -- the contract --------------------------------------------------------------------------

    def prepare(self) -> tuple[Tensor, ...]:
        """``(J (K+1)^2 flattened, then for the medium and each type: V_t, lambda_V, S_t, lambda_S, and T)``; with
        a parameter per class of cells (:meth:`lattice_classes`), each of these that holds one has a leading class
        dimension."""
        k = self.n_types + 1
        index = {name: i for i, name in enumerate(self.contact_names)}
        zero = torch.zeros((), device=self.temperature.device)
        entries = torch.broadcast_tensors(zero, *(getattr(self, name) for name in self.contact_names))
        order = [0 if a == b == 0 else 1 + index[f"J_{self.type_names[min(a, b)]}_{self.type_names[max(a, b)]}"]
                 for a in range(k) for b in range(k)]
        contact = torch.stack(entries, -1)[..., torch.tensor(order, device=zero.device)]
        terms = [torch.stack(torch.broadcast_tensors(zero.new_ones(()) if key.endswith("target") else zero,
                                                     *(getattr(self, name) for name in self.per_type[key])), -1)
                 for key in PER_TYPE]
        return (contact, *terms, self.temperature)

    def lattice_classes(self, batch: int) -> Tensor | None:
        """The class of cells of each of ``batch`` lattices ``(B,)`` (a population of classes), or None (one)."""
        return None

    def lattice_params(self, prepared: tuple[Tensor, ...], batch: int) -> tuple[Tensor, ...]:
        """Each lattice's CPM parameters: ``J (B, (K+1)^2)``, ``V_t, lambda_V, S_t, lambda_S (B, K+1)`` and
        ``T (B,)``, a class's own where :meth:`prepare` has one per class."""
        index = self.lattice_classes(batch)
        return (*(per_lattice(term, 1, index, batch) for term in prepared[:5]),
                per_lattice(prepared[5], 0, index, batch))

    def transition(self, state: PottsState, prepared: tuple[Tensor, ...],
                   generator: torch.Generator | None = None) -> PottsState:
        """One MCS by the engine :func:`slm.models.potts_engine.choose` picks: under ``random`` the compiled one
        with a seed from ``generator``, under ``sweep`` the site classes (:func:`slm.lattice.site_classes`) in
        turn."""
        engine = potts_engine.choose(self, state)
        if self.schedule == "random":
            return self._kernel_mcs(state, prepared, torch.tensor([potts_engine.mcs_seed(generator)]))
        dims = state.labels.dim() - 1
        classes = site_classes(dims)
        noise = torch.rand(len(classes), 2, *state.labels[class_sites((0,) * dims)].shape,
                           generator=generator, device=state.labels.device)
        if engine == "kernel":
            return self._kernel_mcs(state, prepared, noise)
        state = state._replace(labels=state.labels.clone())
        lattice = self.lattice_params(prepared, state.labels.shape[0])
        per_cell = [term.gather(1, state.cell_types) for term in lattice[1:5]]
        for site_class, u in zip(classes, noise, strict=True):
            state = self._sweep(state, prepared, (lattice[0], per_cell, lattice[5]), site_class, u)
        return self._after_mcs(state, prepared)

    def _kernel_mcs(self, state: PottsState, prepared: tuple[Tensor, ...], draws: Tensor) -> PottsState:
        """MCS by the compiled engine: ``draws`` as :func:`slm.models.potts_engine.mcs` takes them."""
        labels, volume, surface, path, _, _ = potts_engine.mcs(self, state, prepared, draws)
        return state._replace(labels=labels, volume=volume, surface=surface, path=path)

    def _segment(self, state: PottsState, prepared: tuple[Tensor, ...], first_seed: int, steps: int) -> PottsState:
        """The random schedule's MCS of a segment in one call of the kernel (one tape with gradients), with the seeds
        the steps' generators would give one at a time."""
        if self.schedule != "random" or steps < 2:
            return super()._segment(state, prepared, first_seed, steps)
        potts_engine.choose(self, state)
        generator = torch.Generator()
        seeds = torch.tensor([potts_engine.mcs_seed(generator.manual_seed(first_seed + t)) for t in range(steps)])
        return self._kernel_mcs(state, prepared, seeds)

    # -- what a CPM with more terms overrides (the act model, slm.models.act) -----------------------

    def _copy_energy(self, state: PottsState, prepared: tuple[Tensor, ...], site_class: tuple[int, ...],
                     where: Tensor) -> Tensor | None:
        """More ``dH (B, *half)`` of the class's copies (``half``: the class's sites per axis), from the state before
        the class; ``where (B, n)``: each source's flat index in the lattice padded by one site. None: no more
        terms."""
        return None

    def _copied(self, state: PottsState, z: Tensor, source: Tensor, target: Tensor,
                site_class: tuple[int, ...]) -> PottsState:
        """The state's further fields after the class's copies ``z (B, *half)`` (1: ``source`` ids copied into the
        targets); ``state`` has the volumes after them, the labels before."""
        return state

    def _after_mcs(self, state: PottsState, prepared: tuple[Tensor, ...]) -> PottsState:
        """The state at the end of an MCS."""
        return state

    def _sweep(self, state: PottsState, prepared: tuple[Tensor, ...], lattice: tuple[Tensor, list[Tensor], Tensor],
               site_class: tuple[int, ...], u: Tensor) -> PottsState:
        """Copy attempts into every site of class ``site_class`` (``(a, b)``, or ``(a, b, c)`` in 3D) at once; writes
        ``state.labels`` in place. ``lattice``:
        each lattice's ``J (B, (K+1)^2)``, the per-cell ``V_t, lambda_V, S_t, lambda_S (B, C)`` and ``T (B,)``.

        With ``c_q`` the number of energy neighbours of type ``q`` and ``n_x`` those with id ``x``, the
        contact energy of id ``x`` (type ``tau_x``) at the target is ``sum_q J(tau_x, q) c_q - J(tau_x, tau_x) n_x``,
        so ``dH`` needs no per-neighbour lookups of ``J``.
        """
        labels, volume = state.labels, state.volume
        batch, *spatial = labels.shape
        dims = len(spatial)
        k, z_max = self.n_types + 1, self.bonds(dims)
        contact, per_cell, temperature = lattice
        padded = F.pad(labels[:, None], (1, 1) * dims, mode="circular")[:, 0]  # (B, *(side + 2))
        padded_types = state.cell_types.gather(1, padded.flatten(1)).view_as(padded)
        inside = class_sites(site_class)
        target = labels[inside]
        flat = (batch, -1)
        # The source: the Moore neighbour in a random direction, read by its flat index in the padded lattice.
        # One uniform gives both the direction (its first bits) and the acceptance noise (the rest); another
        # the order of the class's proposals.
        strides = padded.stride()[1:]
        moore = moore_offsets(dims)
        base = sum(torch.arange(1 + c, 1 + c + side, 2, device=labels.device).view(
            *([1] * axis), -1, *([1] * (dims - 1 - axis))) * stride
            for axis, (c, side, stride) in enumerate(zip(site_class, spatial, strides, strict=True)))
        steps = torch.tensor([sum(o * st for o, st in zip(off, strides, strict=True)) for off in moore],
                             device=labels.device)
        u, priority = u[0] * len(moore), u[1]
        direction = u.long().clamp_max_(len(moore) - 1)
        noise = u - direction
        where = (base + steps[direction]).reshape(flat)
        source = padded.flatten(1).gather(1, where).view_as(target)
        source_type = padded_types.flatten(1).gather(1, where).view_as(target)
        target_type = padded_types[(slice(None), *(slice(1 + c, 1 + c + side, 2)
                                                   for c, side in zip(site_class, spatial, strict=True)))]
        same_source = self._neighbour_sum(_window(padded, site_class), dims, source)
        same_target = self._neighbour_sum(_window(padded, site_class), dims, target)
        kinds = torch.arange(k, device=labels.device).view(-1, *([1] * (dims + 1)))
        one_hot = (padded_types[None] == kinds[1:]).view(torch.uint8)
        by_type = self._neighbour_sum(_window(one_hot, site_class), dims)
        by_type = torch.cat([z_max - by_type.sum(0, keepdim=True), by_type]).to(volume.dtype)  # (k, B, *half)
        matrix = contact.view(batch, k, k)
        diagonal = torch.diagonal(matrix, dim1=1, dim2=2)  # (B, k)
        field = torch.einsum("bts,sb...->tb...", matrix, by_type)  # (k, B, *half): sum_q J(t, q) c_q, every type t
        d_h = field.gather(0, source_type[None])[0] - field.gather(0, target_type[None])[0]
        d_h = (d_h - diagonal.gather(1, source_type.flatten(1)).view_as(d_h) * same_source
               + diagonal.gather(1, target_type.flatten(1)).view_as(d_h) * same_target)
        more = self._copy_energy(state, prepared, site_class, where.view(batch, -1))
        if more is not None:
            d_h = d_h + more
        d_source = (z_max - 2 * same_source.to(volume.dtype)).reshape(flat)  # bonds gained - lost by the source cell
        d_target = (2 * same_target.to(volume.dtype) - z_max).reshape(flat)
        cells = torch.cat([source.reshape(flat), target.reshape(flat)], 1)
        z, volume, surface = self._resolve(d_h.reshape(flat), cells, volume, state.surface, d_source, d_target,
                                           per_cell, temperature, (source != target).reshape(flat),
                                           noise.reshape(flat), priority.reshape(flat))
        z = z.view_as(target)
        state = self._copied(state._replace(volume=volume, surface=surface), z, source, target, site_class)
        labels[inside] = torch.where(z.detach() > 0, source, target)
        if z.requires_grad:
            # Bonds from the target gained by (source type, q) and lost by (target type, q), for every type q,
            # summed over the sites as (k x k) products.
            signal = gradient_only(z)
            is_source, is_target = (kinds == source_type).to(signal.dtype), (kinds == target_type).to(signal.dtype)
            gained = torch.einsum("tb...,qb...->btq", is_source * signal, by_type - is_source * same_source)
            lost = torch.einsum("tb...,qb...->btq", is_target * signal, by_type - is_target * same_target)
            state = state._replace(path=state.path + (gained - lost).reshape(batch, k * k))
        return state

    def _resolve(self, d_contact: Tensor, cells: Tensor, volume: Tensor, surface: Tensor, d_source: Tensor,
                 d_target: Tensor, per_cell: list[Tensor], temperature: Tensor, active: Tensor, noise: Tensor,
                 priority: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        """The acceptances ``z (B, n)`` of a class's proposals (``temperature (B,)``: each lattice's), exactly as
        if made one at a time in the order of ``priority``, and the volumes and surfaces after them.

        Proposals into different sites of a class change no bond twice, so they interact only through
        the volume and surface of the cells they share. Each round takes every undecided proposal that has
        the highest priority among the undecided ones touching its source or its target cell (the medium,
        without volume or surface energy, is shared freely) and decides them with ``dH`` from the volumes
        and surfaces left by the earlier rounds: the outcome of the sequential order. The rounds work on
        the active proposals only (``source != target``, a few in ten), gathered once.
        """
        batch, size = d_contact.shape
        ids = volume.shape[1]
        where = active.view(-1).nonzero()[:, 0]  # one host sync per class; the rounds below need one each anyway
        lattice_of = torch.div(where, size, rounding_mode="floor")
        lattice = lattice_of * ids
        source, target = cells[:, :size].reshape(-1)[where] + lattice, cells[:, size:].reshape(-1)[where] + lattice
        both = torch.cat([source, target])
        d_contact, d_source, d_target = d_contact.view(-1)[where], d_source.view(-1)[where], d_target.view(-1)[where]
        noise, priority = noise.view(-1)[where], priority.view(-1)[where]
        v_target, lam_v, s_target, lam_s = (term.reshape(-1) for term in per_cell)
        volume, surface = volume.reshape(-1), surface.reshape(-1)
        medium = torch.arange(0, batch * ids, ids, device=both.device)
        z = torch.zeros_like(d_contact)
        remaining = torch.ones_like(d_contact, dtype=torch.bool)
        while bool(remaining.any()):
            rank = torch.where(remaining, priority, -1.0)
            top = torch.full_like(volume, -1.0).scatter_reduce_(0, both, rank.repeat(2), "amax")
            top[medium] = -1.0
            ready = remaining & (rank >= top[source]) & (rank >= top[target])
            offset = volume - v_target
            d_h = d_contact + (lam_v * (2 * offset + 1))[source] + (lam_v * (1 - 2 * offset))[target]
            if self.has_surface:
                excess = surface - s_target
                for cell, change in ((source, d_source), (target, d_target)):
                    d_h = d_h + lam_s[cell] * ((excess[cell] + change) ** 2 - excess[cell] ** 2)
            # A cell keeps its last site; the medium (id 0) never runs out.
            alive = (volume.detach() > 1.5).index_fill_(0, medium, True)[target]
            # exp(-50) ~ 2e-22 stands for 0 and keeps the result out of subnormals (slow on CPUs).
            p = torch.exp(-(d_h / temperature[lattice_of]).clamp(0, 50))
            decided = self.estimator.bernoulli(p, noise=noise, mask=ready & alive, sample=(lattice_of, batch))
            z = z + decided
            volume = volume.index_add(0, both, torch.cat([decided, -decided]))
            if self.has_surface:
                surface = surface.index_add(0, both, torch.cat([decided * d_source, decided * d_target]))
            remaining &= ~ready
        full = torch.zeros(batch * size, device=z.device, dtype=z.dtype).index_put((where,), z)
        return full.view(batch, size), volume.view(batch, ids), surface.view(batch, ids)

    def _neighbour_sum(self, window: Tensor, dims: int, equal_to: Tensor | None = None) -> Tensor:
        """Sum (uint8) over the energy neighbourhood of a ``(..., 3, 3[, 3], *half)`` window of a ``dims``-dimensional
        lattice, or the number of neighbours equal to ``equal_to (..., *half)``; view by view, which beats a strided
        reduction."""
        rest = (slice(None),) * dims
        total = torch.zeros(window[(Ellipsis, *(0,) * dims, *rest)].shape, dtype=torch.uint8, device=window.device)
        for offset in moore_offsets(dims)[: self.bonds(dims)]:
            view = window[(Ellipsis, *(o + 1 for o in offset), *rest)]
            total += view if equal_to is None else (view == equal_to).view(torch.uint8)
        return total

    # -- states --------------------------------------------------------------------------------

    def state(self, labels: Tensor, cell_types: Tensor) -> PottsState:
        """The state of lattices ``labels`` (ids ``0..C-1``): ``(B, H, W)`` planes (one ``(H, W)`` plane is taken as
        a batch of one) or ``(B, D, H, W)`` cubes, whose ids have types ``cell_types`` ``(C,)`` or ``(B, C)`` (0 for
        the medium id 0, ``1..K`` for cells); checks both."""
        labels = torch.as_tensor(labels)
        if labels.ndim == 2:
            labels = labels[None]
        if labels.ndim not in (3, 4) or labels.dtype.is_floating_point or labels.dtype == torch.bool:
            raise InputError(f"labels: expected integer cell ids of shape (B, H, W) or (B, D, H, W), got "
                             f"{tuple(labels.shape)} {labels.dtype}")
        labels = labels.long()
        batch, *spatial = labels.shape
        if any(side % 2 or side < 4 for side in spatial):
            raise InputError(f"labels: expected even lattice sides >= 4 (the sweep's site classes), got "
                             f"{'x'.join(map(str, spatial))}")
        cell_types = torch.as_tensor(cell_types, device=labels.device).long()
        if cell_types.ndim == 1:
            cell_types = cell_types.expand(batch, -1)
        if cell_types.shape[0] != batch or cell_types.ndim != 2:
            raise InputError(f"cell_types: expected shape (C,) or ({batch}, C), got {tuple(cell_types.shape)}")
        if int(labels.min()) < 0 or int(labels.max()) >= cell_types.shape[1]:
            raise InputError(f"labels: ids must lie in 0..{cell_types.shape[1] - 1} (the cell_types table), got "
                             f"{int(labels.min())}..{int(labels.max())}")
        if (cell_types[:, 0] != 0).any() or (cell_types[:, 1:] < 1).any() or int(cell_types.max()) > self.n_types:
            raise InputError(f"cell_types: expected 0 for the medium (id 0) and a type in 1..{self.n_types} for "
                             f"every cell id")
        volume = count_ids(labels, cell_types.shape[1]).float()
        surface = self._surfaces(labels, cell_types.shape[1])
        path = torch.zeros(batch, (self.n_types + 1) ** 2, device=labels.device)
        return PottsState(labels, cell_types, volume, surface, path)

    def _surfaces(self, labels: Tensor, ids: int) -> Tensor:
        """``S_c``, bonds of each id to other ids, ``(B, C)`` (the medium's counted too, never used)."""
        unlike = torch.zeros(labels.shape, device=labels.device)
        dims = labels.dim() - 1
        for offset in moore_offsets(dims)[: self.bonds(dims)]:
            unlike += labels != torch.roll(labels, offset, roll_axes(dims))
        return torch.zeros(labels.shape[0], ids, device=labels.device).scatter_add_(1, labels.flatten(1),
                                                                                    unlike.flatten(1))

    def initial_state(self, batch: int, size: int | tuple[int, ...], device: torch.device | None = None,
                      generator: torch.Generator | None = None) -> PottsState:
        """``batch`` lattices of ``size`` (a side: a square; ``(H, W)`` or ``(D, H, W)``) with :attr:`cells` cells
        placed by :func:`random_mixture`."""
        v_target = self.prepared()[1].detach()[1:]
        volume = int(round(float((v_target * self.fractions).sum())))
        device = device if device is not None else generator.device if generator is not None else v_target.device
        labels, cell_types = random_mixture(batch, size, self.cells, volume, self.fractions, generator, device,
                                            self.placement == "scattered")
        return self.state(labels, cell_types)

    # -- statistics ----------------------------------------------------------------------------

    def bond_counts(self, state: PottsState) -> Tensor:
        """``O (B, K+1, K+1)``: bonds between unlike ids counted from both ends, by the types of the ends
        (``O[a, b]`` = bonds between types ``a != b``, ``O[a, a]`` = twice the bonds between different cells
        of type ``a``), with the gradient path."""
        labels, cell_types, path = state.labels, state.cell_types, state.path
        batch, k, dims = labels.shape[0], self.n_types + 1, labels.dim() - 1
        types = cell_types.gather(1, labels.flatten(1)).view_as(labels)
        counts = torch.zeros(batch, k * k, device=labels.device)
        for offset in moore_offsets(dims)[: self.bonds(dims)]:
            unlike = (labels != torch.roll(labels, offset, roll_axes(dims))).float()
            pair = types * k + torch.roll(types, offset, roll_axes(dims))
            counts.scatter_add_(1, pair.flatten(1), unlike.flatten(1))
        path = path.view(batch, k, k)
        return counts.view(batch, k, k) + path + path.transpose(1, 2)

    def summary(self, state: PottsState) -> Tensor:
        """Per lattice ``(B, len(summary_names))``: :data:`SUMMARY` = heterotypic fraction (bonds between cells
        of different types over all bonds between cells), mean and standard deviation of the cell volumes,
        the number of same-type clusters (face-connected, on the torus; no gradient), and with several types
        each type's share of the bonds between cells and the medium (which type lines the aggregate)."""
        labels, cell_types, volume = state.labels, state.cell_types, state.volume
        counts = self.bond_counts(state)
        bonds = counts[:, 1:, 1:]
        same = torch.diagonal(bonds, dim1=1, dim2=2).sum(1) / 2
        between = (bonds.sum((1, 2)) - 2 * same) / 2
        heterotypic = between / (between + same).clamp_min(1)
        medium = counts[:, 0, 1:] if self.n_types > 1 else counts[:, 0, :0]
        shares = medium / medium.sum(1, keepdim=True).clamp_min(1)
        present = (volume[:, 1:].detach() > 0).float()
        n = present.sum(1).clamp_min(1)
        mean = (volume[:, 1:] * present).sum(1) / n
        sd = ((((volume[:, 1:] - mean[:, None]) ** 2) * present).sum(1) / n + 1e-6).sqrt()
        types = cell_types.gather(1, labels.flatten(1)).view_as(labels)
        clusters = count_clusters(types).to(mean.dtype)
        return torch.cat([torch.stack([heterotypic, mean, sd, clusters], 1), shares], 1)

    def observe(self, state: PottsState) -> Tensor:
        """``(B, *spatial)`` in [0, 1]: type ``k`` of a cell at ``k / K``, the medium at 0 and cell boundaries at 0."""
        labels, cell_types = state.labels, state.cell_types
        types = cell_types.gather(1, labels.flatten(1)).view_as(labels).float() / self.n_types
        return torch.where(cell_edges(labels) & (labels > 0), 0.0, types)


def cell_edges(labels: Tensor) -> Tensor:
    """``(B, *spatial)`` bool: sites whose id differs from the one before them along some axis (cell outlines)."""
    edge = torch.zeros_like(labels, dtype=torch.bool)
    for axis in roll_axes(labels.dim() - 1):
        edge |= labels != torch.roll(labels, 1, axis)
    return edge


def per_lattice(value: Tensor, dims: int, index: Tensor | None, batch: int) -> Tensor:
    """A parameter ``value`` of ``dims`` dimensions (or with a leading class dimension) for each of ``batch``
    lattices, ``(B, ...)``: the class ``index (B,)`` of each lattice picks its row."""
    if value.dim() > dims:
        if index is None:
            raise ValueError(f"a parameter of shape {tuple(value.shape)} per class needs the lattices' classes")
        return value[index]
    return value.expand(batch, *value.shape)


def _window(padded: Tensor, site_class: tuple[int, ...]) -> Tensor:
    """``(..., 3, 3[, 3], *half)`` view of the Moore neighbourhood of every site of class ``site_class`` of a lattice
    padded by one site on each side, ``(..., *(side + 2))``; no copy."""
    dims = len(site_class)
    lead, sides = padded.shape[:-dims], padded.shape[-dims:]
    strides = padded.stride()
    lattice = strides[-dims:]
    return padded.as_strided((*lead, *(3,) * dims, *((side - 2) // 2 for side in sides)),
                             (*strides[:-dims], *lattice, *(2 * stride for stride in lattice)),
                             padded.storage_offset() + sum(c * st for c, st in zip(site_class, lattice, strict=True)))


def _number(key: str, value: object) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        raise InputError(f"{key}: expected a finite number, got {value!r}")
    return float(value)


def _contact_matrix(contact: Sequence[Sequence[float]]) -> list[list[float]]:
    try:
        matrix = [[_number("model.contact", v) for v in row] for row in contact]
    except TypeError:
        raise InputError(f"model.contact: expected a square matrix over the medium and the cell types, got "
                         f"{contact!r}") from None
    k = len(matrix)
    if k < 2 or any(len(row) != k for row in matrix):
        raise InputError(f"model.contact: expected a square matrix over the medium and >= 1 cell type, got {contact!r}")
    if any(matrix[a][b] != matrix[b][a] for a in range(k) for b in range(k)):
        raise InputError(f"model.contact: expected a symmetric matrix (J(a, b) = J(b, a)), got {contact!r}")
    return matrix


def count_ids(labels: Tensor, ids: int) -> Tensor:
    """Sites per id, ``(B, ids)`` long."""
    return torch.zeros(labels.shape[0], ids, dtype=torch.long, device=labels.device).scatter_add_(
        1, labels.flatten(1), torch.ones_like(labels.flatten(1)))


def count_clusters(types: Tensor, compiled: bool = True) -> Tensor:
    """Number of face-connected clusters (4 neighbours in a plane, 6 in 3D) of equal non-zero values on the torus,
    per lattice ``(B,)``, of ``types (B, *spatial)``.

    On the CPU by the compiled kernel's union-find (:func:`slm.models.potts_engine.compiled_clusters`); elsewhere,
    or with ``compiled=False``, minimum-label propagation with pointer jumping (a few dozen sweeps at 100x100),
    all in torch.
    """
    counted = potts_engine.compiled_clusters(types) if compiled else None
    if counted is not None:
        return counted
    batch = types.shape[0]
    size = types[0].numel()
    index = torch.arange(size, device=types.device).expand(batch, -1).reshape_as(types)
    inside = types > 0
    label = torch.where(inside, index, size)
    axes = roll_axes(types.dim() - 1)
    while True:
        new = label
        for dim in axes:
            for shift in (1, -1):
                same = inside & (types == torch.roll(types, shift, dim))
                new = torch.minimum(new, torch.where(same, torch.roll(label, shift, dim), size))
        flat = new.flatten(1)
        new = torch.where(inside, flat.gather(1, flat.clamp_max(size - 1)).view_as(new), size)
        if torch.equal(new, label):
            return (inside & (label == index)).flatten(1).sum(1)
        label = new


def random_mixture(batch: int, size: int | tuple[int, ...], cells: int, volume: int,
                   fractions: Sequence[float] | Tensor, generator: torch.Generator | None = None,
                   device: torch.device | str | None = None, scattered: bool = False) -> tuple[Tensor, Tensor]:
    """``cells`` square (in 3D cubic) cells of side ``round(volume^(1/dims))`` on a grid of slots of that side:
    packed in a compact blob at the lattice centre (the slots nearest to it), or ``scattered`` (slots drawn at
    random, other ones in each lattice); types drawn independently with probabilities ``fractions``; ``size``: a
    side (a square), ``(H, W)`` or ``(D, H, W)``.

    Returns ``labels (batch, *size)`` long (ids ``1..cells``, medium 0) and ``cell_types (batch, cells + 1)``.
    """
    sides = (size, size) if isinstance(size, int) else tuple(size)
    dims = len(sides)
    side = max(1, round(volume ** (1 / dims)))
    slots_per_axis = [s // side for s in sides]
    shape = "x".join(map(str, sides))
    if cells * side**dims > math.prod(sides) or cells > math.prod(slots_per_axis):
        raise InputError(f"model.cells: {cells} cells of {'x'.join([str(side)] * dims)} sites need "
                         f"{cells * side ** dims} sites, more than the {shape} lattice holds")
    weights = torch.as_tensor(fractions, dtype=torch.float, device=device)
    device = weights.device
    n_slots = math.prod(slots_per_axis)
    if scattered:
        order = torch.rand(batch, n_slots, generator=generator, device=device).argsort(1)
    else:
        grid = torch.stack(torch.meshgrid(*(torch.arange(n) for n in slots_per_axis), indexing="ij"), -1)
        centre = (torch.tensor(slots_per_axis) - 1) / 2
        order = ((grid.view(-1, dims) - centre) ** 2).sum(1).argsort(stable=True).to(device).expand(batch, -1)
    block = torch.zeros(batch, n_slots, dtype=torch.long, device=device)
    block.scatter_(1, order[:, :cells], torch.arange(1, cells + 1, device=device).expand(batch, -1))
    block = block.view(batch, *slots_per_axis)
    for axis in range(dims):
        block = block.repeat_interleave(side, axis + 1)
    labels = torch.zeros(batch, *sides, dtype=torch.long, device=device)
    labels[(slice(None), *(slice((s - n * side) // 2, (s - n * side) // 2 + n * side)
                           for s, n in zip(sides, slots_per_axis, strict=True)))] = block
    draws = torch.multinomial(weights.expand(batch, -1), cells, replacement=True, generator=generator) + 1
    cell_types = torch.cat([torch.zeros(batch, 1, dtype=torch.long, device=device), draws], 1)
    return labels, cell_types


def single_cell(size: int | tuple[int, ...], volume: int, cell_type: int = 1) -> tuple[Tensor, Tensor]:
    """One square (cubic) cell of about ``volume`` sites and type ``cell_type`` at the centre: ``labels (1, *size)``,
    ``cell_types (1, 2)``."""
    return random_mixture(1, size, 1, volume, [0.0] * (cell_type - 1) + [1.0])
