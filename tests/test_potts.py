"""CellularPotts: against the literal sequential CPM (slm.models.reference.potts) in distribution, its
bookkeeping, its input checks and its gradients."""

import functools
import math
import re

import numpy as np
import pytest
import torch
from scipy import stats

from slm.errors import InputError
from slm.lattice import moore_offsets
from slm.models.potts import SUMMARY, CellularPotts, count_ids, random_mixture
from slm.models.reference.potts import neighbour_lists, reference_parameters, sequential_mcs, summary_numpy

CELLSORT = [[0, 16, 16], [16, 2, 11], [16, 11, 14]]


def gen(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


# -- the vectorised model against the literal sequential CPM, in distribution ----------------------

#: Parameter settings of the distribution test: contact energies and T, surface energy off and on, both
#: neighbourhoods. All have volume_target 16 and lambda_volume 2.
SETTINGS = {
    "moore": dict(contact=[[0, 8, 8], [8, 2, 6], [8, 6, 4]], temperature=8.0),
    "moore_sorting": dict(contact=[[0, 6, 6], [6, 2, 8], [6, 8, 3]], temperature=6.0),
    "moore_surface": dict(contact=[[0, 8, 8], [8, 2, 6], [8, 6, 4]], temperature=8.0, lambda_surface=0.5,
                          surface_target=36.0),
    "von_neumann_surface": dict(contact=[[0, 4, 4], [4, 2, 6], [4, 6, 3]], temperature=5.0, lambda_surface=0.5,
                                surface_target=10.0, neighbourhood="von_neumann"),
}
#: Independent replicas per sampler (enough to see the vectorised sweep's volume fluctuations 20% too wide),
#: MCS per replica (burn-in: in the sequential CPM every statistic is stationary after ~200 MCS at these
#: settings, the volumes after ~50), lattice side and cells (of 4x4 sites, half the lattice).
REPLICAS, MCS, SIZE, CELLS = 192, 250, 16, 8
STATISTICS = ("volume_mean", "volume_sd", "surface_mean", "heterotypic_fraction")
#: Four statistics at each setting: p > 0.001 each keeps the chance of a false alarm per setting below 0.4%.
ALPHA = 1e-3


def make_model(setting: str, **changes: float) -> CellularPotts:
    return CellularPotts(**{"volume_target": 16.0, "lambda_volume": 2.0, "learn": [], **SETTINGS[setting], **changes})


def start() -> tuple[torch.Tensor, torch.Tensor]:
    """The common initial lattice: ``CELLS`` 4x4 cells in a blob, types alternating 1, 2."""
    labels, _ = random_mixture(1, SIZE, CELLS, 16, [1.0, 1.0])
    return labels[0], torch.tensor([0] + [1 + i % 2 for i in range(CELLS)])


def statistics(model: CellularPotts, labels: torch.Tensor, cell_types: torch.Tensor) -> np.ndarray:
    """``(n, 4)``: :data:`STATISTICS` of each lattice, all computed afresh from the labels."""
    with torch.no_grad():
        state = model.state(labels, cell_types)
        summary = model.summary(state)
    names = list(SUMMARY)
    surface = state.surface[:, 1:].mean(1)
    return torch.stack([summary[:, names.index("volume_mean")], summary[:, names.index("volume_sd")], surface,
                        summary[:, names.index("heterotypic_fraction")]], 1).double().numpy()


def vectorised_statistics(model: CellularPotts, seed: int) -> np.ndarray:
    labels, cell_types = start()
    with torch.no_grad():
        state = model.rollout(model.state(labels.expand(REPLICAS, -1, -1).clone(), cell_types), MCS, gen(seed))
    return statistics(model, state.labels, cell_types)


@functools.cache
def reference_statistics(setting: str) -> np.ndarray:
    """:data:`STATISTICS` of ``REPLICAS`` independent runs of the sequential CPM at ``setting`` (cached: the
    power check reuses them)."""
    model = make_model(setting)
    labels, cell_types = start()
    params = reference_parameters(model)
    rng = np.random.default_rng(sorted(SETTINGS).index(setting))
    final = [sequential_mcs(labels.numpy(), cell_types.numpy(), params, model.bonds(2), MCS, rng)
             for _ in range(REPLICAS)]
    return statistics(model, torch.from_numpy(np.stack(final)), cell_types)


def p_values(a: np.ndarray, b: np.ndarray) -> dict[str, float]:
    """Two-sample KS p-value of every statistic."""
    return {name: float(stats.ks_2samp(a[:, i], b[:, i]).pvalue) for i, name in enumerate(STATISTICS)}


@pytest.mark.parametrize("setting", list(SETTINGS))
def test_vectorised_model_matches_the_sequential_cpm(setting):
    model = make_model(setting)
    vectorised = vectorised_statistics(model, 100 + sorted(SETTINGS).index(setting))
    reference = reference_statistics(setting)
    p = p_values(vectorised, reference)
    means = {name: (round(float(vectorised[:, i].mean()), 3), round(float(reference[:, i].mean()), 3))
             for i, name in enumerate(STATISTICS)}
    print(f"{setting}: p {p}; (vectorised, sequential) means {means}")
    assert min(p.values()) > ALPHA, f"{setting}: p {p}; (vectorised, sequential) means {means}"


def test_the_distribution_test_detects_a_different_temperature():
    """Power: the same comparison with T doubled in the vectorised model fails for some statistic."""
    setting = "moore"
    model = make_model(setting, temperature=2 * SETTINGS[setting]["temperature"])
    p = p_values(vectorised_statistics(model, 200), reference_statistics(setting))
    print(f"T doubled: p {p}")
    assert min(p.values()) < ALPHA, p


def brute_force_energy(labels: np.ndarray, cell_types: np.ndarray, params: dict, neighbours: int) -> float:
    """The CPM energy of one lattice, every term counted from scratch."""
    types = cell_types[labels]
    contact = np.asarray(params["contact"])
    n_ids = len(cell_types)
    energy, surface = 0.0, np.zeros(n_ids)
    for di, dj in moore_offsets(2)[:neighbours]:
        other = np.roll(labels, (di, dj), (0, 1))
        unlike = labels != other
        energy += (contact[types, cell_types[other]] * unlike).sum() / 2  # every bond seen from both ends
        np.add.at(surface, labels.ravel(), unlike.ravel())
    volume = np.bincount(labels.ravel(), minlength=n_ids)
    per_id = {key: np.asarray(params[key])[cell_types] for key in
              ("volume_target", "lambda_volume", "surface_target", "lambda_surface")}
    cells = np.arange(n_ids) > 0
    energy += (per_id["lambda_volume"] * (volume - per_id["volume_target"]) ** 2)[cells].sum()
    energy += (per_id["lambda_surface"] * (surface - per_id["surface_target"]) ** 2)[cells].sum()
    return float(energy)


@pytest.mark.parametrize("neighbourhood", ["moore", "von_neumann"])
def test_the_reference_is_the_literal_algorithm(neighbourhood):
    """:func:`sequential_mcs` makes the same moves as copy attempts whose dH is two full energies apart."""
    model = CellularPotts([[0, 3, 5], [3, 1, 4], [5, 4, 2]], volume_target=[6, 9], lambda_volume=[1.0, 0.5],
                          surface_target=[12, 10], lambda_surface=[0.3, 0.2], temperature=3.0,
                          neighbourhood=neighbourhood, learn=[])
    params = reference_parameters(model)
    labels = np.zeros((8, 8), dtype=np.int64)
    labels[1:4, 1:4], labels[1:4, 4:6], labels[4:7, 2:5], labels[5:7, 5:7] = 1, 2, 3, 4
    cell_types = np.array([0, 1, 2, 2, 1])
    mcs = 3
    result = sequential_mcs(labels, cell_types, params, model.bonds(2), mcs, np.random.default_rng(7))
    # The same random numbers, in the same order (one block of targets, directions and noise).
    rng = np.random.default_rng(7)
    n = labels.size * mcs
    targets, directions, noise = rng.integers(0, labels.size, n), rng.integers(0, 8, n), rng.random(n)
    moore = neighbour_lists(labels.shape)
    lab = labels.ravel().copy()
    accepted = 0
    for t, d, u in zip(targets, directions, noise, strict=True):
        x, y = lab[t], lab[moore[t][d]]
        if x == y or (x and (lab == x).sum() == 1):
            continue
        new = lab.copy()
        new[t] = y
        d_h = (brute_force_energy(new.reshape(labels.shape), cell_types, params, model.bonds(2))
               - brute_force_energy(lab.reshape(labels.shape), cell_types, params, model.bonds(2)))
        if d_h <= 0 or u < math.exp(-d_h / params["temperature"]):
            lab, accepted = new, accepted + 1
    assert accepted > 10
    np.testing.assert_array_equal(result, lab.reshape(labels.shape))


def test_reference_helpers():
    model = CellularPotts(CELLSORT, volume_target=[25, 16], lambda_surface=0.5, temperature=7.0, cells=8, learn=[])
    params = reference_parameters(model)
    assert params["contact"] == CELLSORT
    assert params["volume_target"] == [1.0, 25.0, 16.0] and params["lambda_volume"] == [0.0, 2.0, 2.0]
    assert params["lambda_surface"] == [0.0, 0.5, 0.5] and params["temperature"] == 7.0
    state = model.initial_state(3, 20, generator=gen(0))
    state = model.rollout(state, 3, gen(1))
    labels, cell_types = state.labels.numpy(), state.cell_types.numpy()
    with torch.no_grad():
        expected = model.summary(state)[:, : len(SUMMARY)].numpy()
    np.testing.assert_allclose(summary_numpy(labels, cell_types, 8), expected, rtol=1e-5)
    np.testing.assert_allclose(summary_numpy(labels[1], cell_types[1], 8), expected[1], rtol=1e-5)
    with pytest.raises(InputError, match="neighbours"):
        sequential_mcs(labels[0], cell_types[0], params, 6, 1, np.random.default_rng(0))


# -- unit tests -----------------------------------------------------------------------------------


def recount(model: CellularPotts, state) -> tuple[torch.Tensor, torch.Tensor]:
    """Volumes and surfaces counted afresh from the labels."""
    fresh = model.state(state.labels, state.cell_types)
    return fresh[2], fresh[3]


@pytest.mark.parametrize("neighbourhood", ["moore", "von_neumann"])
def test_tracked_volume_and_surface_match_the_labels(neighbourhood):
    model = CellularPotts(CELLSORT, volume_target=16, lambda_surface=0.5, surface_target=16, temperature=12.0,
                          neighbourhood=neighbourhood, cells=12)
    state = model.initial_state(4, 20, generator=gen(0))
    start_labels = state.labels.clone()
    with torch.no_grad():
        state = model.rollout(state, 30, gen(1))
    assert not torch.equal(state.labels, start_labels)
    volume, surface = recount(model, state)
    torch.testing.assert_close(state.volume, volume, rtol=0, atol=1e-4)
    torch.testing.assert_close(state.surface[:, 1:], surface[:, 1:], rtol=0, atol=1e-4)  # the medium's is never used
    # Without surface energy only the volumes are tracked.
    plain = CellularPotts(CELLSORT, volume_target=16, temperature=12.0, neighbourhood=neighbourhood, cells=12,
                          learn=[])
    state = plain.rollout(plain.initial_state(4, 20, generator=gen(0)), 30, gen(1))
    torch.testing.assert_close(state.volume, recount(plain, state)[0], rtol=0, atol=1e-4)


def test_ids_are_conserved_and_cells_keep_their_last_site():
    model = CellularPotts(CELLSORT, volume_target=16, lambda_volume=0.5, temperature=30.0, cells=12, learn=[])
    state = model.initial_state(4, 20, generator=gen(2))
    before = count_ids(state.labels, state.cell_types.shape[1])
    with torch.no_grad():
        state = model.rollout(state, 40, gen(3))
    after = count_ids(state.labels, state.cell_types.shape[1])
    assert ((after > 0) == (before > 0)).all()  # no new id, no cell lost
    assert after.sum(1).eq(20 * 20).all()


def test_a_fragmented_cell_keeps_its_last_site():
    """A cell of two sites of the same site class, surrounded by medium that it gains by shedding: every
    copy of the medium into it is favourable, but one site must stay."""
    model = CellularPotts([[0, 5], [5, 0]], volume_target=2, lambda_volume=0.0, temperature=1.0, learn=[])
    labels = torch.zeros(8, 8, 8, dtype=torch.long)
    labels[:, 2, 2] = labels[:, 2, 4] = 1
    state = model.rollout(model.state(labels, torch.tensor([0, 1])), 3, gen(0))
    assert (count_ids(state.labels, 2)[:, 1] >= 1).all()
    torch.testing.assert_close(state.volume, count_ids(state.labels, 2).float())


def test_bond_counts_are_symmetric_and_add_up_to_the_surfaces():
    model = CellularPotts(CELLSORT, volume_target=16, temperature=10.0, cells=12, learn=[])
    state = model.rollout(model.initial_state(3, 20, generator=gen(4)), 10, gen(5))
    bonds = model.bond_counts(state)
    torch.testing.assert_close(bonds, bonds.transpose(1, 2))
    torch.testing.assert_close(bonds.sum((1, 2)), recount(model, state)[1].sum(1))


def test_checkpointed_rollout_is_the_same():
    model = CellularPotts(CELLSORT, volume_target=16, lambda_surface=0.2, cells=12,
                          learn=["J_1_2", "temperature"])
    start_state = model.initial_state(2, 16, generator=gen(6))
    plain = model.rollout(start_state, 6, gen(7))
    checkpointed = model.rollout(start_state, 6, gen(7), checkpoint_every=2)
    assert torch.equal(plain[0], checkpointed[0])
    for a, b in zip(plain[1:], checkpointed[1:], strict=True):
        torch.testing.assert_close(a, b)
    parameter = model.parametrizations["J_1_2"].original
    grads = []
    for final in (plain, checkpointed):  # .backward(): reentrant checkpoints do not support autograd.grad
        parameter.grad = None
        model.summary(final)[:, 0].sum().backward(retain_graph=True)
        grads.append(parameter.grad.clone())
    torch.testing.assert_close(grads[0], grads[1])


def test_lattices_of_a_batch_evolve_independently():
    model = CellularPotts(CELLSORT, volume_target=16, temperature=10.0, cells=12, learn=[])
    labels, _ = random_mixture(1, 20, 12, 16, [1.0, 1.0])
    cell_types = torch.tensor([0] + [1 + i % 2 for i in range(12)])
    state = model.rollout(model.state(labels.expand(4, -1, -1).clone(), cell_types), 5, gen(8))
    for i in range(4):
        for j in range(i):
            assert not torch.equal(state.labels[i], state.labels[j])


BAD_INPUTS = {
    "model.contact": [lambda: CellularPotts([[0, 1], [1, 0, 2]]), lambda: CellularPotts([[0, 1], [2, 0]])],
    "model.lambda_volume": [lambda: CellularPotts(CELLSORT, lambda_volume=-1.0),
                            lambda: CellularPotts(CELLSORT, lambda_volume=[1.0, -0.5])],
    "model.temperature": [lambda: CellularPotts(CELLSORT, temperature=0.0),
                          lambda: CellularPotts(CELLSORT, temperature=-2.0)],
    "model.learn": [lambda: CellularPotts(CELLSORT, learn=["J_1_3"])],
    "model.cells": [lambda: CellularPotts(CELLSORT, volume_target=16, cells=20).initial_state(1, 16)],
    "labels": [lambda: CellularPotts(CELLSORT).state(torch.full((1, 8, 8), 3), torch.tensor([0, 1, 2]))],
    "cell_types": [lambda: CellularPotts(CELLSORT).state(torch.ones(1, 8, 8, dtype=torch.long),
                                                         torch.tensor([1, 1]))],
}


@pytest.mark.parametrize("key", list(BAD_INPUTS))
def test_bad_input_names_the_key(key):
    for make in BAD_INPUTS[key]:
        with pytest.raises(InputError, match=re.escape(key)):
            make()


# -- gradients ------------------------------------------------------------------------------------


def learned_model(estimator: str) -> CellularPotts:
    return CellularPotts(CELLSORT, volume_target=16, cells=16, learn=["J_1_2", "temperature"], estimator=estimator)


@pytest.mark.parametrize("estimator", ["ste", "gumbel", "score"])
def test_gradients_are_finite(estimator):
    model = learned_model(estimator)
    model.reset_estimators()
    state = model.rollout(model.initial_state(2, 24, generator=gen(9)), 5, gen(10))
    model.surrogate(model.summary(state)[:, :3]).mean(0).sum().backward()
    for name in ("J_1_2", "temperature"):
        grad = model.parametrizations[name].original.grad
        assert grad is not None and torch.isfinite(grad).all(), (name, grad)


def test_ste_gradient_of_the_heterotypic_fraction_in_the_heterotypic_energy_is_negative():
    """Raising J(1, 2) makes heterotypic contacts costlier, so the heterotypic fraction falls."""
    model = learned_model("ste")
    parameter = model.parametrizations["J_1_2"].original
    column = list(SUMMARY).index("heterotypic_fraction")
    grads = []
    for seed in range(4):
        state = model.rollout(model.initial_state(2, 24, generator=gen(20 + seed)), 5, gen(30 + seed))
        grads.append(float(torch.autograd.grad(model.summary(state)[:, column].mean(), parameter)[0]))
    assert sum(grads) < 0 and sum(g < 0 for g in grads) >= 3, grads
