"""The field's Monte Carlo step (model.schedule=random): the compiled engine replays the literal sequential
reference attempt for attempt, its border sampling is the same process as uniform targets in dynamics (plain
CPM, cell sorting, act cells), its noise is reproducible per lattice and step, and its gradients are checked
against finite differences of the expectation."""

import numpy as np
import pytest
import torch
from scipy.stats import ks_2samp

from slm.models import ActPotts, CellularPotts, potts_engine
from slm.models.reference.potts import reference_parameters, sequential_mcs
from slm.parameters import constrained_grads
from tests.test_act import centroids_from_labels

CELLSORT = [[0, 16, 16], [16, 2, 11], [16, 11, 14]]
ALPHA = 1e-3


def gen(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


MODELS = {
    "cellsort": lambda **kw: CellularPotts(CELLSORT, volume_target=25.0, cells=30, learn=[], **kw),
    "surface_von_neumann": lambda **kw: CellularPotts(
        [[0, 3.3, 5.1], [3.3, 1.7, 4.2], [5.1, 4.2, 2.9]], volume_target=[12, 20], lambda_volume=[1.5, 0.7],
        lambda_surface=0.4, surface_target=14.0, temperature=4.1, neighbourhood="von_neumann", cells=20, learn=[],
        **kw),
    "act": lambda **kw: ActPotts(cells=2, learn=[], **kw),
}


def replay(model, size: int | tuple[int, ...], steps: int) -> None:
    """Run ``steps`` MCS of ``model`` (``targets="uniform"``) and the literal reference on lattice 1 with the kernel's
    uniforms; the lattices (and the act model's ages) must agree site for site after every MCS."""
    state = model.initial_state(2, size, generator=gen(1))
    lattice, dims = 1, state.labels.dim() - 1
    labels = state.labels[lattice].numpy().copy()
    age = state.age[lattice].numpy().copy() if isinstance(model, ActPotts) else None
    params, n = reference_parameters(model), labels.size
    changed = 0
    for step in range(steps):
        with torch.no_grad():
            state = model.transition(state, model.prepared(), gen(100 + step))
        seed = potts_engine.mcs_seed(gen(100 + step))
        draws = potts_engine.uniforms(seed, lattice, 3 * n).numpy().reshape(1, n, 3)
        before = labels
        labels = sequential_mcs(labels, state.cell_types[lattice].numpy(), params, model.bonds(dims), 1, None, age,
                                draws=draws)
        changed += int((labels != before).sum())
        assert np.array_equal(state.labels[lattice].numpy(), labels), f"MCS {step}"
        if age is not None:
            assert np.array_equal(state.age[lattice].numpy(), age), f"MCS {step}"
    assert changed > 50, "the cells moved"
    if model.has_surface:  # kept only where some type has a surface energy
        assert torch.equal(state.surface, model._surfaces(state.labels, state.cell_types.shape[1]))


@pytest.mark.parametrize("name", list(MODELS))
def test_the_kernel_replays_the_literal_reference_attempt_for_attempt(name):
    """Given the same uniforms, every attempt's target, source and decision are the reference's."""
    replay(MODELS[name](targets="uniform"), 32, 6)


def dynamics(model, size: int | tuple[int, ...], batch: int, burn_in: int, frames: int, every: int, seed: int
             ) -> dict[str, np.ndarray]:
    """Per lattice: the cells' displacement over one and over all frames, their volume and (sorting) the
    heterotypic fraction, after ``burn_in`` MCS from the same start (``size``: a square's side, or the sides)."""
    start = model.initial_state(batch, size, generator=gen(0))
    ids = start.cell_types.shape[1]
    period = torch.tensor(start.labels.shape[1:], dtype=torch.float)
    with torch.no_grad():
        state = model.rollout(start, burn_in, gen(seed))
        centres = [centroids_from_labels(state.labels, ids)]
        for _ in range(frames):
            state = model.rollout(state, every, gen(seed + 1 + len(centres)))
            centres.append(centroids_from_labels(state.labels, ids))

    def moved(a: torch.Tensor, b: torch.Tensor) -> np.ndarray:
        step = (b - a)[:, 1:] % period
        return (torch.minimum(step, period - step) ** 2).sum(-1).mean(1).numpy()

    out = {"squared step, 1 frame": moved(centres[0], centres[1]),
           f"squared step, {frames} frames": moved(centres[0], centres[-1]),
           "volume": state.volume[:, 1:].mean(1).numpy()}
    if model.n_types > 1:
        out["heterotypic fraction"] = model.summary(state)[:, 0].numpy()
    if isinstance(model, ActPotts):
        out["active sites"] = (((model.max_act - state.age) > 0) & (state.labels > 0)).flatten(1).sum(1).float().numpy()
    return out


CASES = {  # model, lattice, batch, burn-in, frames, MCS per frame
    "one cell": (lambda **kw: CellularPotts([[0, 16], [16, 0]], volume_target=25.0, cells=1, learn=[], **kw),
                 24, 400, 5, 4, 3),
    "cell sorting": (MODELS["cellsort"], 32, 300, 0, 3, 2),
    "act cell": (lambda **kw: ActPotts(cells=1, learn=[], **kw), 40, 300, 20, 4, 4),
}


def p_values(a: dict, b: dict) -> dict[str, float]:
    return {name: float(ks_2samp(a[name], b[name]).pvalue) for name in a}


def border_is_uniform(case: str, make, shape: list, against_sweep: bool = True) -> None:
    """KS tests of :func:`dynamics` between border sampling and literal uniform targets (p > ALPHA each), and (where
    ``against_sweep``) the power check: the same test tells the sweep schedule apart."""
    border = dynamics(make(), *shape, seed=10)
    uniform = dynamics(make(targets="uniform"), *shape, seed=20)
    p = p_values(border, uniform)
    means = {name: (round(float(border[name].mean()), 3), round(float(uniform[name].mean()), 3)) for name in border}
    print(f"{case}: p {p}; (border, uniform) means {means}")
    assert min(p.values()) > ALPHA, f"{case}: p {p}; means {means}"
    if against_sweep:
        sweep = dynamics(make(schedule="sweep"), *shape, seed=30)
        assert min(p_values(sweep, uniform).values()) < ALPHA, "the test tells the schedules apart"


@pytest.mark.parametrize("case", list(CASES))
def test_border_sampling_is_uniform_targets_in_dynamics(case):
    """Displacements over frames, volumes (and sorting, activity) after few MCS: border sampling (the default)
    and literal uniform targets are one process; the sweep schedule is told apart by the same test."""
    make, *shape = CASES[case]
    border_is_uniform(case, make, shape)


def test_noise_depends_on_seed_lattice_and_step_only():
    """A lattice's path does not depend on the batch around it, and a rollout in one kernel call (one tape) is the
    same as one MCS at a time (checkpoint segments of one), in states and gradients."""
    def run(every: int | None, batch: int = 3, grad: bool = True):
        model = CellularPotts(CELLSORT, volume_target=25.0, cells=30, learn=["J_1_2", "lambda_volume"])
        start = model.initial_state(3, 32, generator=gen(2))
        start = model.state(start.labels[:batch], start.cell_types[:batch])
        with torch.set_grad_enabled(grad):
            final = model.rollout(start, 5, gen(3), checkpoint_every=every)
        if grad:
            model.summary(final)[:, :3].sum().backward()
        return final, [p.grad for p in model.parameters()]

    together, grads = run(None)
    alone, _ = run(None, batch=1, grad=False)
    assert torch.equal(together.labels[:1], alone.labels)
    assert not torch.equal(together.labels[0], together.labels[1])
    stepped, stepped_grads = run(1)
    assert torch.equal(stepped.labels, together.labels)
    assert torch.equal(stepped.volume, together.volume)
    for ours, theirs in zip(grads, stepped_grads, strict=True):
        assert ours.abs().sum() > 0
        torch.testing.assert_close(ours, theirs)


def score_against_finite_differences(size: int | tuple[int, ...], contact: float, volume: float, batch: int
                                     ) -> tuple[float, float, float, float]:
    """d E[volume after 3 MCS] / d lambda_volume of one cell: the kernel's score-function gradient (mean and standard
    error over 8 groups of ``batch`` lattices) and central finite differences with common random numbers."""
    def model(lam: float) -> CellularPotts:
        return CellularPotts([[0, contact], [contact, 0]], volume_target=volume, lambda_volume=lam, temperature=6.0,
                             cells=1, learn=["lambda_volume"], estimator="score")

    lam, h, groups = 1.0, 0.15, 8
    grads = []
    for g in range(groups):
        m = model(lam)
        final = m.rollout(m.initial_state(batch, size, generator=gen(0)), 3, gen(40 + g))
        m.surrogate(final.volume[:, 1:2]).mean().backward()
        grads.append(float(constrained_grads(m)["lambda_volume"]))

    def volumes(value: float) -> np.ndarray:
        m = model(value)
        with torch.no_grad():
            final = m.rollout(m.initial_state(groups * batch, size, generator=gen(0)), 3, gen(99))
        return final.volume[:, 1].numpy()

    difference = (volumes(lam + h) - volumes(lam - h)) / (2 * h)
    return (np.mean(grads), np.std(grads, ddof=1) / np.sqrt(groups), difference.mean(),
            difference.std(ddof=1) / np.sqrt(len(difference)))


def check_score(score: float, score_se: float, fd: float, fd_se: float) -> None:
    print(f"score {score:.3f} +- {score_se:.3f}, finite differences {fd:.3f} +- {fd_se:.3f}")
    assert abs(fd) > 5 * fd_se, "a derivative to check"
    assert abs(score - fd) < 4 * np.hypot(score_se, fd_se)


def test_score_gradient_is_the_derivative_of_the_expectation():
    """The kernel's score-function gradient on the field's schedule against central finite differences with common
    random numbers, each with its standard error."""
    check_score(*score_against_finite_differences(12, 8.0, 30.0, 1000))


def pathwise_grads(make, size: int | tuple[int, ...]) -> list[torch.Tensor]:
    """Per-parameter gradient sums of the squared track steps of act cells, with the tape in one piece and
    recomputed in checkpoint segments of 2 MCS."""
    grads = []
    for every in (None, 2):
        model = make()
        start = model.rollout(model.initial_state(2, size, generator=gen(5)), 5, gen(6))
        recording = model.rollout(start, 4, gen(7), checkpoint_every=every, record_every=2)
        ((recording.frames[:, 1:] - recording.frames[:, :-1]) ** 2).sum().backward()
        grads.append(torch.stack([p.grad.sum() for p in model.parameters()]))
    assert torch.isfinite(grads[0]).all() and (grads[0] != 0).all()
    torch.testing.assert_close(grads[0], grads[1])
    return grads


@pytest.mark.parametrize("estimator", ["ste", "gumbel"])
def test_pathwise_gradients_on_the_field_schedule_are_finite_and_checkpoint_alike(estimator):
    pathwise_grads(lambda: ActPotts(cells=2, max_act=20.4, learn=["lambda_act", "max_act", "J_medium_cell"],
                                    estimator=estimator), 32)
