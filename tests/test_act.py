"""The act model (slm.models.act): bookkeeping, tracks across the torus' edge, the relaxed max_act, agreement
in distribution with the literal sequential model, gradients, and input errors."""

import numpy as np
import pytest
import torch
from scipy.stats import ks_2samp

from slm.errors import InputError
from slm.models.act import ActPotts, geometric_activity, unwrapped_moments
from slm.models.reference.potts import reference_parameters, sequential_mcs
from slm.parameters import constrained_grads, set_values
from slm.stats import track_statistics

SMALL = {"volume_target": 24, "surface_target": 70, "lambda_surface": 1.0, "lambda_volume": 10.0}


def centroids_from_labels(labels: torch.Tensor, ids: int) -> torch.Tensor:
    volume = torch.zeros(labels.shape[0], ids).scatter_add_(1, labels.flatten(1), torch.ones(labels.flatten(1).shape))
    return unwrapped_moments(labels, ids) / volume.clamp_min(1)[..., None]


def test_geometric_activity_of_a_small_lattice():
    labels = torch.tensor([[[0, 1, 1, 0], [0, 1, 1, 0], [0, 0, 0, 0], [0, 0, 0, 0]]])
    activity = torch.tensor([[[5.0, 4, 9, 0], [0, 1, 4, 0], [0, 0, 0, 0], [0, 0, 0, 0]]])
    gm = geometric_activity(labels, activity)
    # every site of the 2x2 cell sees all four sites of its cell: (4 * 9 * 1 * 4)^(1/4)
    assert torch.allclose(gm[0, :2, 1:3], torch.full((2, 2), 144.0 ** 0.25))
    assert (gm[labels == 0] == 0).all()
    activity[0, 1, 1] = 0  # one inactive site makes the geometric mean 0
    assert (geometric_activity(labels, activity)[0, :2, 1:3] == 0).all()


def test_ages_grow_and_copied_sites_restart():
    model = ActPotts(**SMALL, cells=2)
    state = model.initial_state(4, 24, generator=torch.Generator().manual_seed(0))
    state = model.rollout(state, 3, torch.Generator().manual_seed(1))
    before = state
    after = model.step(state, torch.Generator().manual_seed(2))
    changed = after.labels != before.labels
    assert changed.any()
    assert (after.age[changed] == 1).all(), "a site copied into during the MCS ends it with age 1"
    untouched = after.age != 1
    assert torch.equal(after.age[untouched], before.age[untouched] + 1)


def test_positions_follow_a_cell_across_the_edges():
    model = ActPotts(**SMALL, lambda_act=300, max_act=15, learn=[])
    corner = torch.zeros(6, 32, 32, dtype=torch.long)
    corner[:, -2:, -2:] = corner[:, -2:, :3] = corner[:, :3, -2:] = corner[:, :3, :3] = 1  # 5x5 across the corner
    state = model.state(corner, torch.tensor([0, 1]))
    assert torch.allclose(model.positions(state), torch.zeros(6, 1, 2), atol=1e-5), "the cell starts at (0, 0)"
    state, frames = model.tracks(state, 30, 3, torch.Generator().manual_seed(3))
    tracks = frames.transpose(1, 2)
    steps = (tracks[:, :, 1:] - tracks[:, :, :-1]).norm(dim=-1)
    assert steps.max() < 5, "no jump of a lattice length in an unwrapped track"
    assert (tracks[:, :, -1] - tracks[:, :, 0]).norm(dim=-1).max() > 10, "cells travelled far from the corner"
    from_labels = centroids_from_labels(state.labels, 2)[:, 1:]
    offset = (model.positions(state) - from_labels) % 32
    assert torch.allclose(torch.minimum(offset, 32 - offset), torch.zeros_like(offset), atol=1e-3)


def test_relaxed_max_act_is_linear_between_integers():
    model = ActPotts(**SMALL, learn=[], schedule="sweep")  # _copy_energy: the sweep's act term
    state = model.rollout(model.initial_state(2, 24, generator=torch.Generator().manual_seed(0)), 8,
                          torch.Generator().manual_seed(1))
    where = torch.randint(0, 26 * 26, (2, 144), generator=torch.Generator().manual_seed(2))

    def energy(max_act: float) -> torch.Tensor:
        prepared = (*model.prepare()[:7], torch.tensor(max_act))
        return model._copy_energy(state, prepared, (0, 0), where)

    low, high, middle = energy(7.0), energy(8.0), energy(7.25)
    assert torch.allclose(middle, 0.75 * low + 0.25 * high, atol=1e-4)
    assert not torch.allclose(low, high)


def act_samples(order: str, replicas: int = 48, mcs: int = 25, size: int = 20) -> tuple[dict, dict]:
    """Statistics of one migrating cell after ``mcs`` MCS from the same start: the vectorised sweep, and the literal
    sequential model with the attempt ``order`` (``classes``: the sweep's schedule; ``random``: uniform targets)."""
    model = ActPotts(**SMALL, lambda_act=300, max_act=10, learn=[], schedule="sweep")
    start = model.initial_state(replicas, size, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        final = model.rollout(start, mcs, torch.Generator().manual_seed(1))
    params = reference_parameters(model)
    rng = np.random.default_rng(2)
    labels, ages = [], []
    for r in range(replicas):
        age = start.age[r].numpy().copy()
        labels.append(sequential_mcs(start.labels[r].numpy(), start.cell_types[r].numpy(), params, 8, mcs, rng, age,
                                     order))
        ages.append(age)
    sequential = model.state(torch.from_numpy(np.stack(labels)), start.cell_types, torch.from_numpy(np.stack(ages)))

    def statistics(state):
        moved = (centroids_from_labels(state.labels, 2)[:, 1] - centroids_from_labels(start.labels, 2)[:, 1]) % size
        moved = torch.minimum(moved, size - moved).norm(dim=-1)
        active = ((model.max_act - state.age) > 0) & (state.labels > 0)
        return {"displacement": moved, "volume": state.volume[:, 1], "surface": state.surface[:, 1],
                "active sites": active.sum((1, 2)).float()}

    return statistics(final), statistics(sequential)


def test_act_agrees_with_the_sequential_model_in_distribution():
    """KS tests per statistic over 48 replicas of 25 MCS, vectorised against literal with the same schedule:
    the act energy read at the start of each class changes nothing measurable."""
    ours, theirs = act_samples("classes")
    for name in ours:
        p = ks_2samp(ours[name].numpy(), theirs[name].numpy()).pvalue
        assert p > 0.001, (f"{name}: vectorised {ours[name].mean():.3g} vs sequential {theirs[name].mean():.3g}, "
                           f"p={p:.2g}")
    assert theirs["displacement"].mean() > 2, "the cells migrate"


def test_the_attempt_schedule_matters_for_the_act_model():
    """With uniform random targets (CompuCell3D's and Artistoo's schedule) the act cell renews fewer sites
    per MCS than with every site once per MCS: the same test tells the schedules apart."""
    ours, theirs = act_samples("random")
    p = ks_2samp(ours["active sites"].numpy(), theirs["active sites"].numpy()).pvalue
    print(f"active sites: every site once per MCS {ours['active sites'].mean():.1f}, random targets "
          f"{theirs['active sites'].mean():.1f} (KS p = {p:.2g})")
    assert p < 0.001 and ours["active sites"].mean() > theirs["active sites"].mean()


@pytest.mark.parametrize("estimator", ["ste", "score"])
def test_track_statistics_have_gradients_in_lambda_act_and_max_act(estimator):
    model = ActPotts(**SMALL, estimator=estimator)
    state = model.initial_state(4, 24, generator=torch.Generator().manual_seed(0))
    tracks = model.tracks(state, 4, 3, torch.Generator().manual_seed(1), burn_in=5).frames.transpose(1, 2)
    statistics = model.surrogate(track_statistics(tracks, 2)).mean(0)
    statistics[:2].sum().backward()
    grads = constrained_grads(model)
    assert set(grads) == {"lambda_act", "max_act"}
    assert all(torch.isfinite(g) and g != 0 for g in grads.values())


def test_track_statistics_of_known_tracks():
    line = torch.stack([torch.arange(6.0), torch.zeros(6)], -1)[None]  # one straight track, 1 per frame
    stats = track_statistics(line, 3)
    assert torch.allclose(stats, torch.tensor([1.0, 4.0, 9.0, 1.0, 1.0]))
    zigzag = torch.tensor([[[0.0, 0], [1, 0], [1, 1], [0, 1], [0, 0]]])
    assert torch.isclose(track_statistics(zigzag, 1)[-1], torch.tensor(0.0), atol=1e-6)
    gappy = torch.cat([line, torch.full((1, 2, 2), float("nan"))], 1)
    assert torch.allclose(track_statistics(gappy, 3), stats)


@pytest.mark.parametrize(("kwargs", "message"), [
    ({"max_act": 0.5}, "model.max_act"),
    ({"lambda_act": -1.0}, "model.lambda_act"),
    ({"max_act": float("nan")}, "model.max_act"),
    ({"learn": ["lambda_akt"]}, "model.learn"),
    ({"classes": 0}, "model.classes"),
    ({"weights": [0.5, 0.5]}, "model.weights"),
    ({"classes": 2, "weights": [1.0, 0.0]}, "model.weights"),
    ({"classes": 2, "lambda_act": [100.0, 200.0, 300.0]}, "model.lambda_act"),
])
def test_bad_act_settings_fail_with_one_line(kwargs, message):
    with pytest.raises(InputError, match=message):
        ActPotts(**kwargs)


def test_several_cells_per_lattice_give_one_track_each():
    model = ActPotts(**SMALL, cells=3, learn=[])
    state = model.initial_state(2, 32, generator=torch.Generator().manual_seed(0))
    state, frames = model.tracks(state, 4, 2, torch.Generator().manual_seed(1), burn_in=3)
    tracks = frames.transpose(1, 2)
    assert tracks.shape == (2, 3, 5, 2) and torch.isfinite(tracks).all()
    assert (state.volume[:, 1:] > 0).all(), "every cell is still there"


# -- populations of act cells ---------------------------------------------------------------------------------


#: per-class values of CPM parameters for :func:`mixture`
OWN = {"temperature": [14.0, 26.0], "J_medium_cell": [17.5, 22.0]}


def mixture(engine: str = "auto", estimator: str = "ste", own: tuple[str, ...] = (), schedule: str = "random"
            ) -> ActPotts:
    model = ActPotts(classes=2, lambda_act=[120.0, 300.0], max_act=[30.0, 20.5], learn=["lambda_act", "max_act",
                     "weights", *own], weights=[0.3, 0.7], estimator=estimator, engine=engine, schedule=schedule)
    set_values(model, {name: OWN[name] for name in own}, key="params")
    return model


def test_a_mixtures_classes_have_their_own_cpm_parameters():
    model = mixture(own=("temperature", "J_medium_cell"))
    contact, _, _, _, _, temperature = model.lattice_params(model.prepared(), 3)
    torch.testing.assert_close(temperature, torch.tensor([14.0, 26.0, 14.0]))
    torch.testing.assert_close(contact[:, 1], torch.tensor([17.5, 22.0, 17.5]))
    assert torch.equal(contact[:, 1], contact[:, 2]), "J(medium, cell) = J(cell, medium)"
    assert contact[:, 3].tolist() == [40.0] * 3, "J(cell, cell) stays shared"
    shared = ActPotts(classes=3, learn=["lambda_act", "max_act", "temperature"]).temperature
    torch.testing.assert_close(shared, torch.full((3,), 20.0))


def test_each_lattice_holds_its_class_and_the_classes_are_summed_out_with_their_weights():
    model = mixture()
    lambda_act, max_act = model.lattice_act(model.prepared(), 5)
    torch.testing.assert_close(lambda_act.detach(), torch.tensor([120.0, 300, 120, 300, 120]))
    kind, weight = model.unit_classes(5)
    assert kind.tolist() == [0, 1, 0, 1, 0]
    values = torch.tensor([1.0, 10.0, 3.0, 20.0, 5.0])
    population = (values * weight).mean()  # 0.3 * mean(1, 3, 5) + 0.7 * mean(10, 20)
    torch.testing.assert_close(population, torch.tensor(0.3 * 3 + 0.7 * 15), rtol=1e-5, atol=0)
    population.backward()
    logits = model.parametrizations["weights"].original
    assert logits.grad is not None and logits.grad.abs().sum() > 0
    assert ActPotts().unit_classes(4) is None
    with pytest.raises(InputError, match="data.batch_size: 1 lattices cannot hold 2 classes"):
        model.unit_classes(1)


@pytest.mark.parametrize(("estimator", "own"), [("ste", ()), ("score", ()), ("ste", ("temperature", "J_medium_cell"))])
def test_a_mixtures_engines_agree_in_decisions_and_gradients(estimator, own):
    results = {}
    for engine in ("torch", "kernel"):
        model = mixture(engine, estimator, own, schedule="sweep")
        with torch.no_grad():
            start = model.initial_state(4, 40, generator=torch.Generator().manual_seed(20))
            start = model.rollout(start, 8, torch.Generator().manual_seed(21))
        recording = model.rollout(start, 6, torch.Generator().manual_seed(22), record_every=3)
        statistics = track_statistics(recording.frames.transpose(1, 2), 1)
        kind, weight = model.unit_classes(4)
        model.surrogate(statistics * weight[:, None]).mean(0).sum().backward()
        results[engine] = recording.state.labels, {name: p.grad for name, p in model.named_parameters()}
    assert torch.equal(results["torch"][0], results["kernel"][0])
    for name, expected in results["torch"][1].items():
        assert expected.abs().sum() > 0, name
        # float32 sums of ~1e5 terms of both signs in different orders: errors scale with the largest entry
        torch.testing.assert_close(results["kernel"][1][name], expected, rtol=1e-4,
                                   atol=1e-4 * float(expected.abs().max()), msg=name)


def test_per_track_speeds_and_their_distribution_function_weighted_by_steps():
    from slm.stats import speed_distribution, track_speeds, weighted_quantiles

    nan = float("nan")
    positions = torch.tensor([[[0.0, 0], [1, 0], [1, 2], [nan, nan]], [[0, 0], [0, 0.5], [0, 1], [0, 1.5]]])
    speeds, steps = track_speeds(positions)
    torch.testing.assert_close(speeds, torch.tensor([1.5, 0.5]))
    assert steps.tolist() == [2, 3]
    function = speed_distribution(speeds, steps, torch.tensor([1.0, 2.0]), 0.1)
    torch.testing.assert_close(function, torch.tensor([0.5987, 0.9973]), atol=1e-4, rtol=0)
    speeds, steps = track_speeds(torch.full((1, 3, 2), nan))
    assert torch.isnan(speeds)[0] and steps[0] == 0
    quantiles = weighted_quantiles(torch.tensor([3.0, 1, 2]), torch.tensor([2.0, 1, 1]), torch.tensor([0.25, 0.5, 0.9]))
    assert quantiles.tolist() == [1.0, 2.0, 3.0]
