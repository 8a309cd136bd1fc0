"""Cells in 3D: the Cellular Potts and act models on a D x H x W torus. The compiled kernel replays the literal
sequential reference attempt for attempt (plain CPM with Moore and von Neumann bonds, surface energy, act cells);
border sampling is uniform targets in dynamics; the torch sweep (eight site classes) matches the literal classes
order in distribution; gradients through the 3D tape; tracks across all three edges; clusters; files, pictures
and the command line."""

import subprocess
import sys

import numpy as np
import pytest
import torch
from scipy.stats import ks_2samp

from slm.errors import InputError
from slm.io import load_label_stack, load_labels
from slm.lattice import moore_offsets, site_classes
from slm.models import ActPotts, CellularPotts, potts_engine
from slm.models.potts import count_clusters, random_mixture
from slm.models.reference.potts import reference_parameters, sequential_mcs
from slm.plots import cells_rgb, lattice_image
from tests.conftest import ROOT
from tests.test_act import centroids_from_labels
from tests.test_potts_schedule import (
    ALPHA,
    border_is_uniform,
    check_score,
    pathwise_grads,
    replay,
    score_against_finite_differences,
)

#: CompuCell3D's cellsort_3D energies (configs/model/potts3d.yaml).
CELLSORT_3D = [[0, 16, 16], [16, 2, 11], [16, 11, 16]]
#: A 3D act cell that migrates: Artistoo's 3D example (examples/3D/cpm3d.html: T 7, J(cell, medium) 5,
#: lambda_V 25, lambda_P 0.01, lambda_act 38, max_act 40, V 1800, P 8600) scaled to a 250-voxel cell
#: (P / V^(2/3) kept), so that distribution tests run on 24^3 lattices.
ACT_3D = dict(contact=[[0, 5], [5, 15]], volume_target=250, lambda_volume=25, surface_target=2300,
              lambda_surface=0.01, temperature=7, lambda_act=38, max_act=40)


def gen(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def test_the_3d_neighbourhoods_are_the_fields():
    moore = moore_offsets(3)
    assert len(moore) == 26 and len(set(moore)) == 26
    assert sorted(moore[:6]) == sorted(o for o in moore if sum(map(abs, o)) == 1), "faces (von Neumann) first"
    assert len(site_classes(3)) == 8
    model = CellularPotts(CELLSORT_3D, learn=[])
    assert (model.bonds(2), model.bonds(3)) == (8, 26)
    assert CellularPotts(CELLSORT_3D, learn=[], neighbourhood="von_neumann").bonds(3) == 6


MODELS = {
    # lambda_V 8: at 2 (cellsort_3D's) cells of 27 voxels shrink to one, their contact energy over 26 bonds winning
    "cellsort": lambda **kw: CellularPotts(CELLSORT_3D, volume_target=27.0, lambda_volume=8.0, cells=12, learn=[],
                                           **kw),
    "surface_von_neumann": lambda **kw: CellularPotts(
        [[0, 3.3, 5.1], [3.3, 1.7, 4.2], [5.1, 4.2, 2.9]], volume_target=[12, 20], lambda_volume=[1.5, 0.7],
        lambda_surface=0.4, surface_target=30.0, temperature=4.1, neighbourhood="von_neumann", cells=10, learn=[],
        **kw),
    "act": lambda **kw: ActPotts(cells=2, learn=[], **{**ACT_3D, "volume_target": 100, "surface_target": 1200},
                                 **kw),
}


@pytest.mark.parametrize("name", list(MODELS))
def test_the_kernel_replays_the_literal_reference_in_3d(name):
    """The same uniforms give the same target, source (one of 26 Moore neighbours) and decision at every attempt:
    the volumes agree voxel for voxel after every MCS (and the act model's ages with them)."""
    replay(MODELS[name](targets="uniform"), (12, 12, 12), 4)


CASES = {  # model, lattice, batch, burn-in, frames, MCS per frame
    "one cell": (lambda **kw: CellularPotts([[0, 2], [2, 0]], volume_target=27.0, cells=1, learn=[], **kw),
                 (12, 12, 12), 300, 5, 4, 3),
    "cell sorting": (MODELS["cellsort"], (12, 12, 12), 200, 0, 3, 2),
    "act cell": (lambda **kw: ActPotts(cells=1, learn=[], **ACT_3D, **kw), (24, 24, 24), 120, 20, 4, 5),
}


@pytest.mark.parametrize("case", list(CASES))
def test_border_sampling_is_uniform_targets_in_3d_dynamics(case):
    """Displacements, volumes (sorting, activity) after few MCS: border sampling (the default) and literal uniform
    targets are one process in 3D; the sweep (torch, eight classes) is told apart by the same test."""
    make, *shape = CASES[case]
    border_is_uniform(case, make, shape, against_sweep=case != "act cell")  # a 24^3 act batch's torch sweep: minutes


def test_an_act_cell_migrates_in_3d():
    """At the documented 3D act settings a cell travels several times farther than without the act term."""
    travelled = {}
    for lambda_act in (38.0, 0.0):
        model = ActPotts(cells=1, learn=[], **{**ACT_3D, "lambda_act": lambda_act})
        with torch.no_grad():
            state = model.rollout(model.initial_state(8, (24, 24, 24), generator=gen(1)), 30, gen(2))
            start = model.positions(state)
            state = model.rollout(state, 100, gen(3))
        travelled[lambda_act] = float((model.positions(state) - start).norm(dim=-1).mean())
    print(f"mean distance in 100 MCS: {travelled}")
    assert travelled[38.0] > 3 * travelled[0.0]


SWEEP_SETTING = dict(contact=[[0, 1, 1], [1, 0.5, 1.5], [1, 1.5, 0.75]], volume_target=8.0, lambda_volume=4.0,
                     temperature=3.0, cells=8, learn=[], schedule="sweep", engine="auto")
TYPES = torch.tensor([0] + [1 + i % 2 for i in range(8)])


def sweep_statistics(model: CellularPotts, labels: torch.Tensor) -> np.ndarray:
    """Per lattice: volume mean and sd, mean surface and heterotypic fraction, computed afresh from the labels."""
    with torch.no_grad():
        state = model.state(labels, TYPES)
        summary = model.summary(state)
    return torch.stack([summary[:, 1], summary[:, 2], state.surface[:, 1:].mean(1), summary[:, 0]], 1).numpy()


def test_the_3d_torch_sweep_matches_the_literal_classes_order_in_distribution():
    """The torch sweep in 3D (the reference for CUDA; the eight site classes in turn, each class decided in rounds)
    against the literal sequential CPM visiting the classes in a random order within each: volume mean and sd,
    surface and heterotypic fraction after 40 MCS of 96 replicas; a 50% hotter model is told apart."""
    replicas, mcs = 96, 40
    labels, _ = random_mixture(1, (8, 8, 8), 8, 8, [1.0, 1.0])
    model = CellularPotts(**SWEEP_SETTING)
    assert potts_engine.choose(model, model.state(labels, TYPES)) == "torch", "a 3D sweep runs on torch"

    def run(m: CellularPotts, seed: int) -> np.ndarray:
        with torch.no_grad():
            state = m.rollout(m.state(labels.expand(replicas, -1, -1, -1).clone(), TYPES), mcs, gen(seed))
        return sweep_statistics(m, state.labels)

    torch_path = run(model, 1)
    rng = np.random.default_rng(0)
    params = reference_parameters(model)
    literal = np.stack([sequential_mcs(labels[0].numpy(), TYPES.numpy(), params, 26, mcs, rng, order="classes")
                        for _ in range(replicas)])
    reference = sweep_statistics(model, torch.from_numpy(literal))
    p = [float(ks_2samp(torch_path[:, i], reference[:, i]).pvalue) for i in range(4)]
    print(f"p {p}; means {torch_path.mean(0)} {reference.mean(0)}")
    assert min(p) > ALPHA
    hotter = run(CellularPotts(**{**SWEEP_SETTING, "temperature": 4.5}), 2)
    assert min(float(ks_2samp(hotter[:, i], reference[:, i]).pvalue) for i in range(4)) < ALPHA


def test_the_3d_score_gradient_is_the_derivative_of_the_expectation():
    """d E[volume after 3 MCS] / d lambda_volume of a 3D cell: the kernel's score-function gradient through the 3D
    tape against central finite differences with common random numbers."""
    check_score(*score_against_finite_differences((8, 8, 8), 4.0, 27.0, 500))


@pytest.mark.parametrize("estimator", ["ste", "gumbel"])
def test_pathwise_gradients_through_3d_tapes_are_finite_and_checkpoint_alike(estimator):
    """Tracks of 3D act cells give every parameter a finite gradient, the same with the tape recomputed in
    checkpoint segments (memory bounded) as in one piece."""
    pathwise_grads(lambda: ActPotts(cells=2, **{**ACT_3D, "volume_target": 100, "surface_target": 1200,
                                                "max_act": 20.4},
                                    learn=["lambda_act", "max_act", "J_medium_cell"], estimator=estimator),
                   (16, 16, 16))


def test_positions_follow_a_cell_across_all_three_edges():
    model = ActPotts(**{**ACT_3D, "volume_target": 125, "surface_target": 1450}, learn=[])
    corner = torch.zeros(4, 16, 16, 16, dtype=torch.long)
    for z in (slice(0, 3), slice(-2, None)):
        for y in (slice(0, 3), slice(-2, None)):
            for x in (slice(0, 3), slice(-2, None)):
                corner[:, z, y, x] = 1  # a 5x5x5 cube centred on the corner
    state = model.state(corner, torch.tensor([0, 1]))
    assert torch.allclose(model.positions(state), torch.zeros(4, 1, 3), atol=1e-5), "the cell starts at (0, 0, 0)"
    state, frames = model.tracks(state, 40, 4, gen(3))
    tracks = frames.transpose(1, 2)
    assert tracks.shape[-1] == 3
    assert (tracks[:, :, 1:] - tracks[:, :, :-1]).norm(dim=-1).max() < 4, "no jump of a lattice length"
    offset = (model.positions(state) - centroids_from_labels(state.labels, 2)[:, 1:]) % 16
    assert torch.allclose(torch.minimum(offset, 16 - offset), torch.zeros_like(offset), atol=1e-3)


def test_clusters_are_face_connected_in_3d():
    types = torch.randint(0, 3, (3, 8, 6, 10), generator=gen(4))
    compiled = count_clusters(types)
    assert torch.equal(compiled, count_clusters(types, compiled=False))
    two = torch.zeros(1, 6, 6, 6, dtype=torch.long)
    two[0, 1, 1, 1] = two[0, 2, 2, 2] = 1  # corner neighbours only: two clusters
    two[0, 0, 3, 3] = two[0, 5, 3, 3] = 2  # face neighbours across the depth edge: one
    assert count_clusters(two).tolist() == [3] and count_clusters(two, compiled=False).tolist() == [3]


def test_3d_label_stacks_are_read_and_ambiguous_ones_refused(tmp_path):
    stack = np.zeros((3, 4, 6, 8), np.int32)
    stack[:, 1:3, 2:4, 2:5] = 1
    np.savez(tmp_path / "volumes.npz", labels=stack, cell_types=np.array([0, 1]), dims=3)
    labels, table = load_label_stack(tmp_path / "volumes.npz")
    assert labels.shape == (1, 3, 4, 6, 8) and table.tolist() == [0, 1]
    np.savez(tmp_path / "unsaid.npz", labels=stack, cell_types=np.array([0, 1]))
    with pytest.raises(InputError, match="could be planes or volumes; add dims=2 or dims=3"):
        load_labels(tmp_path / "unsaid.npz")
    assert load_label_stack(tmp_path / "unsaid.npz", dims=3)[0].shape == (1, 3, 4, 6, 8)
    assert load_label_stack(tmp_path / "unsaid.npz", dims=2)[0].shape == (3, 4, 6, 8)
    with pytest.raises(InputError, match="holds 3D lattices"):
        load_labels(tmp_path / "volumes.npz", dims=2)


def test_3d_pictures_show_slices_and_projections():
    model = CellularPotts(CELLSORT_3D, volume_target=27.0, cells=8, learn=[])
    state = model.initial_state(2, (12, 10, 8), generator=gen(0))
    image = cells_rgb(state.labels, state.cell_types)
    assert image.shape[0] == 2 and image.shape[-1] == 3 and image.dtype == np.uint8
    assert image.shape[1] == 3 * 12 + 2 * 2, "slices, then one row of projections per type"
    picture = lattice_image(model.observe(state)[0])
    assert picture.dim() == 2 and picture.shape[0] == 2 * 12 + 1


def test_simulate_runs_3d_from_the_command_line(tmp_path):
    out = subprocess.run([sys.executable, "scripts/simulate.py", "potts", "--size", "16x12x12", "model.cells=8",
                          "model.volume_target=27", "--steps", "20", "--png", str(tmp_path / "p.png"), "--gif",
                          str(tmp_path / "p.gif"), "--npz", str(tmp_path / "p.npz")],
                         cwd=ROOT, capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
    assert "labels (1, 16, 12, 12) int32, their cell_types and dims=3" in out.stdout
    labels, _, dims = load_labels(tmp_path / "p.npz")
    assert dims == 3 and labels.shape == (1, 16, 12, 12)
    assert (tmp_path / "p.png").stat().st_size > 0 and (tmp_path / "p.gif").stat().st_size > 0
    bad = subprocess.run([sys.executable, "scripts/simulate.py", "potts", "--size", "16x12x11"], cwd=ROOT,
                         capture_output=True, text=True)
    assert bad.returncode != 0 and "--size: expected S, HxW or DxHxW with even sides >= 4" in bad.stderr
