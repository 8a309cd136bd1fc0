r"""The literal sequential Cellular Potts model: one copy attempt at a time, in plain Python.

The algorithm :class:`slm.models.potts.CellularPotts` runs, written out literally so that nothing is
approximated. With ``order="random"`` (the field's schedule, the model's default) and the compiled engine's
uniforms (``draws``) it makes the engine's decisions attempt for attempt (``tests/test_potts_schedule.py``);
with ``order="classes"`` it is the sweep schedule that the vectorised torch path runs (the four site classes
``(i mod 2, j mod 2)`` in turn), checked in distribution (``tests/test_potts.py``, ``tests/test_act.py``). It
is also the baseline row of the speed benchmark.

Rules (CompuCell3D's conventions, as in :mod:`slm.models.potts`). An ``H x W`` or ``D x H x W`` torus of cell ids
(0 = medium), each id with a type (0 for the medium, ``1..K`` for cells). Energy

.. math::

    H = \sum_{(i, j)} J(\tau(\sigma_i), \tau(\sigma_j)) [\sigma_i \ne \sigma_j]
        + \sum_c \lambda_V(\tau_c) (V_c - V_t(\tau_c))^2 + \lambda_S(\tau_c) (S_c - S_t(\tau_c))^2

over the bonds of neighbouring sites (Moore, 8 neighbours, or von Neumann, 4; in 3D 26 or 6), with ``V_c`` the
sites of cell ``c`` and ``S_c`` its bonds to sites of other ids; the medium has no volume or surface energy.
One Monte Carlo step (MCS) is ``N`` copy attempts (``N`` sites), each: pick a uniform random target site ``t``
and a uniform random one ``s`` of its Moore neighbours (8, or 26 in 3D, in :func:`slm.lattice.moore_offsets`'
order); if ``sigma_s != sigma_t`` and the copy would not
remove a cell's last site, copy ``sigma_s`` into ``t`` with probability ``min(1, exp(-dH / T))``.

With the act model (:mod:`slm.models.act`: ``params`` has ``lambda_act`` and an integer ``max_act``) every
site also has an age (MCS since it was copied into; its activity is ``max(max_act - age, 0)``), a copy
adds ``-(lambda_act / max_act) (GM(s) - GM(t))`` to ``dH`` from the current activities, an accepted one
sets the target's age to 0, and every MCS ends by adding 1 to every age.

Volumes and surfaces are kept incrementally, and the contact energy of id ``x`` with id ``y`` is looked
up in a per-id table (zero on the diagonal), so an attempt costs one pass over the target's neighbours.
"""

from __future__ import annotations

import math

import numpy as np
import torch

from slm.errors import InputError
from slm.lattice import NEIGHBOURHOODS, moore_offsets, site_classes
from slm.models.potts import SUMMARY, CellularPotts

#: The terms of :data:`slm.models.potts.TERMS` this reference computes.
REFERENCE_TERMS = ("contact", "volume", "surface", "act")
#: Copy attempts whose random numbers are drawn at once.
BLOCK = 1 << 16


def reference_parameters(model: CellularPotts) -> dict:
    """The model's energy parameters as plain Python, indexed by type (0 = medium):

    ``contact`` ``(K+1) x (K+1)`` nested list, ``volume_target``, ``lambda_volume``, ``surface_target`` and
    ``lambda_surface`` lists of ``K+1`` numbers (the medium's lambdas are 0), and ``temperature``; for the
    act model also ``lambda_act`` and ``max_act``.
    """
    unknown = [term for term in model.terms if term not in REFERENCE_TERMS]
    if unknown:
        raise InputError(f"model: the sequential reference does not compute the term(s) {unknown}")
    with torch.no_grad():
        prepared = [t.detach().cpu().double() for t in model.prepare()]
    contact, v_target, lam_v, s_target, lam_s, temperature = prepared[:6]
    k = model.n_types + 1
    params = {"contact": contact.view(k, k).tolist(), "volume_target": v_target.tolist(),
              "lambda_volume": lam_v.tolist(), "surface_target": s_target.tolist(),
              "lambda_surface": lam_s.tolist(), "temperature": float(temperature)}
    if len(prepared) == 8:
        params |= {"lambda_act": float(prepared[6]), "max_act": float(prepared[7])}
    return params


def neighbour_lists(shape: tuple[int, ...]) -> list[list[int]]:
    """For every flat site index of the torus of ``shape`` (``(H, W)`` or ``(D, H, W)``), its Moore neighbours in
    :func:`slm.lattice.moore_offsets`' order (the first 4 or 6 are the von Neumann neighbours)."""
    sites = np.arange(math.prod(shape)).reshape(shape)
    rolled = [np.roll(sites, tuple(-o for o in offset), tuple(range(len(shape)))).ravel()
              for offset in moore_offsets(len(shape))]
    return np.stack(rolled, 1).tolist()


def sequential_mcs(labels: np.ndarray, cell_types: np.ndarray, params: dict, neighbours: int, mcs: int,
                   rng: np.random.Generator | None, age: np.ndarray | None = None, order: str = "random",
                   draws: np.ndarray | None = None) -> np.ndarray:
    """``mcs`` Monte Carlo steps of the literal sequential CPM (see the module docstring) from ``labels``.

    Args:
        labels: ``(H, W)`` or ``(D, H, W)`` integer cell ids ``0..C-1`` (0 = medium).
        cell_types: ``(C,)`` the type of every id (0 for the medium).
        params: the energy parameters, as :func:`reference_parameters` gives them.
        neighbours: the bonds of the contact and surface energies: 8 (Moore) or 4 (von Neumann) in 2D, 26 or 6
            in 3D.
        mcs: the number of Monte Carlo steps (``N`` copy attempts each, ``N`` sites).
        rng: the source of every random number (unless ``draws``).
        age: float ages of the sites (the labels' shape), the act model's state (needed when ``params`` has
            ``lambda_act``); updated in place.
        order: ``random``: every attempt's target is a uniform random site (CompuCell3D's and Artistoo's
            schedule); ``classes``: every MCS takes each site once, the site classes
            (:func:`slm.lattice.site_classes`) in turn and a random order within each (the vectorised sweep's).
        draws: ``(mcs, N, 3)`` uniforms in [0, 1) to use instead of ``rng`` (``order="random"``): attempt ``i`` of
            MCS ``m`` targets site ``floor(N u)``, takes the source in direction ``floor(M u')`` of the ``M`` Moore
            offsets and accepts if ``u'' < exp(-dH / T)``, with ``(u, u', u'') = draws[m, i]``: the stream the
            compiled engine's literal draws use (:func:`slm.models.potts_engine.uniforms`), to replay it attempt
            for attempt.

    Returns the new labels (the input's shape, int64; ``labels`` is not changed).
    """
    labels = np.asarray(labels)
    if labels.ndim not in (2, 3):
        raise InputError(f"labels: expected one (H, W) or (D, H, W) lattice, got shape {labels.shape}")
    dims = labels.ndim
    allowed = {name: counts[dims] for name, counts in NEIGHBOURHOODS.items()}
    if neighbours not in allowed.values():
        raise InputError(f"neighbours: expected {allowed['moore']} (Moore) or {allowed['von_neumann']} (von Neumann) "
                         f"in {dims}D, got {neighbours}")
    if order not in ("random", "classes"):
        raise InputError(f"order: expected random or classes, got {order!r}")
    n_sites = labels.size
    if draws is not None and (order != "random" or np.shape(draws) != (mcs, n_sites, 3)):
        raise InputError(f"draws: expected ({mcs}, {n_sites}, 3) uniforms with order='random', got "
                         f"{np.shape(draws)} with order={order!r}")
    lab: list[int] = labels.astype(np.int64).ravel().tolist()
    types: list[int] = np.asarray(cell_types).astype(np.int64).ravel().tolist()
    n_ids = len(types)
    if min(lab) < 0 or max(lab) >= n_ids:
        raise InputError(f"labels: ids must lie in 0..{n_ids - 1} (the cell_types table)")
    contact = params["contact"]
    # J between ids, 0 between equal ids: the contact energy of a bond needs one lookup.
    j_ids = [[0.0 if x == y else float(contact[types[x]][types[y]]) for y in range(n_ids)] for x in range(n_ids)]
    lam_v = [float(params["lambda_volume"][t]) if x else 0.0 for x, t in enumerate(types)]
    v_t = [float(params["volume_target"][t]) for t in types]
    lam_s = [float(params["lambda_surface"][t]) if x else 0.0 for x, t in enumerate(types)]
    s_t = [float(params["surface_target"][t]) for t in types]
    temperature = float(params["temperature"])
    surface_on = any(lam_s)
    moore = neighbour_lists(labels.shape)
    n_moore = len(moore[0])
    energy = [row[:neighbours] for row in moore]
    volume = [0] * n_ids
    surface = [0] * n_ids
    for site, x in enumerate(lab):
        volume[x] += 1
        surface[x] += sum(lab[n] != x for n in energy[site])
    exp = math.exp
    acting = "lambda_act" in params
    if acting and (age is None or age.shape != labels.shape):
        raise InputError(f"age: the act model needs the ages of the sites, shaped {labels.shape}")
    ages: list[float] = age.ravel().tolist() if acting else []
    max_act = params.get("max_act", 1.0)
    pull = params.get("lambda_act", 0.0) / max_act
    around = [[site, *row] for site, row in enumerate(moore)]

    def activity(site: int) -> float:
        """The geometric mean of the activities of the sites of ``site``'s cell around it (0 on the medium)."""
        cell = lab[site]
        if cell == 0:
            return 0.0
        logs, count = 0.0, 0
        for n in around[site]:
            if lab[n] == cell:
                a = max_act - ages[n]
                if a <= 0:
                    return 0.0
                logs += math.log(a)
                count += 1
        return exp(logs / count)

    classes = [np.arange(n_sites).reshape(labels.shape)[tuple(slice(c, None, 2) for c in site_class)].ravel()
               for site_class in site_classes(dims)]
    remaining = n_sites * mcs
    done = 0
    while remaining > 0:
        # With the act model or the class order a block is one MCS (the ages grow at its end).
        block = n_sites if acting or order == "classes" or draws is not None else min(remaining, BLOCK)
        remaining -= block
        if draws is not None:
            given = np.asarray(draws[done // n_sites], dtype=np.float64)
            targets = np.minimum((given[:, 0] * n_sites).astype(np.int64), n_sites - 1).tolist()
            directions = np.minimum((given[:, 1] * n_moore).astype(np.int64), n_moore - 1).tolist()
            noise = given[:, 2].tolist()
        else:
            if order == "classes":
                targets = np.concatenate([rng.permutation(sites) for sites in classes]).tolist()
            else:
                targets = rng.integers(0, n_sites, block).tolist()
            directions = rng.integers(0, n_moore, block).tolist()
            noise = rng.random(block).tolist()
        for t, d, u in zip(targets, directions, noise, strict=True):
            y = lab[moore[t][d]]
            x = lab[t]
            if x == y or (x and volume[x] == 1):
                continue
            row_x, row_y = j_ids[x], j_ids[y]
            d_h = 0.0
            same_x = same_y = 0
            for n in energy[t]:
                other = lab[n]
                d_h += row_y[other] - row_x[other]
                if other == y:
                    same_y += 1
                elif other == x:
                    same_x += 1
            d_h += lam_v[y] * (2 * (volume[y] - v_t[y]) + 1) + lam_v[x] * (1 - 2 * (volume[x] - v_t[x]))
            d_y = neighbours - 2 * same_y  # bonds gained minus bonds lost by the source's cell
            d_x = 2 * same_x - neighbours
            if surface_on:
                s_y, s_x = surface[y] - s_t[y], surface[x] - s_t[x]
                d_h += lam_s[y] * ((s_y + d_y) ** 2 - s_y * s_y) + lam_s[x] * ((s_x + d_x) ** 2 - s_x * s_x)
            if acting:
                d_h -= pull * (activity(moore[t][d]) - activity(t))
            if d_h <= 0 or u < exp(-d_h / temperature):
                lab[t] = y
                volume[y] += 1
                volume[x] -= 1
                surface[y] += d_y
                surface[x] += d_x
                if acting:
                    ages[t] = 0.0
        done += block
        if acting and done % n_sites == 0:
            ages = [a + 1 for a in ages]
    if acting:
        age.ravel()[:] = ages
    return np.array(lab, dtype=np.int64).reshape(labels.shape)


def summary_numpy(labels: np.ndarray, cell_types: np.ndarray, neighbours: int) -> np.ndarray:
    """:meth:`CellularPotts.summary` of a batch ``labels`` ``(B, H, W)`` or ``(B, D, H, W)`` (or one plane
    ``(H, W)``) with types ``cell_types`` ``(C,)`` or ``(B, C)``: ``(B, 4)`` (``(4,)`` for one plane)
    [heterotypic fraction, volume mean, volume sd, clusters].

    Computed by the model itself (its summary depends only on the number of types and the neighbourhood).
    """
    labels = np.asarray(labels)
    dims = 2 if labels.ndim <= 3 else 3
    names = {counts[dims]: name for name, counts in NEIGHBOURHOODS.items()}
    if neighbours not in names:
        raise InputError(f"neighbours: expected one of {sorted(names)} in {dims}D, got {neighbours}")
    cell_types = np.asarray(cell_types)
    n_types = max(1, int(cell_types.max()))
    model = CellularPotts([[0.0] * (n_types + 1)] * (n_types + 1), learn=[],
                          neighbourhood=names[neighbours])
    with torch.no_grad():
        values = model.summary(model.state(torch.from_numpy(labels).long(), torch.from_numpy(cell_types).long()))
    values = values[:, : len(SUMMARY)].double().numpy()
    return values[0] if labels.ndim == 2 else values
