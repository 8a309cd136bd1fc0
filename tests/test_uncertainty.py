"""Uncertainty of fits (slm/uncertainty.py, the uq config group) and the coverage study's collector."""

from __future__ import annotations

import json
import math
from types import SimpleNamespace

import numpy as np
import pytest
import torch
from scipy import stats

from slm.errors import InputError
from slm.models import SI, PersistentRandomWalk
from slm.models.si import transition_counts
from slm.parameters import Positive, Probability, Real, Simplex, UnitInterval
from slm.si_likelihood import si_beta_least_squares
from slm.studies.coverage import coverage, read_jobs
from slm.targets import Target
from slm.train import train
from slm.uncertainty import Bootstrap, Coordinates, EstimatingEquation, Moments, Sandwich, ridges, summary_line
from tests.conftest import ROOT, run_cli


def test_coordinates_round_trip_and_links_of_a_mixture():
    walk = PersistentRandomWalk([0.2, 0.6], [0.1, 0.5], classes=2, weights=[0.3, 0.7])
    coords = Coordinates(walk)
    phi = coords.get()
    assert len(phi) == 5  # two logits each, and one log-ratio for the two weights
    assert coords.names == ["p_center[0]", "p_center[1]", "p_resample[0]", "p_resample[1]", "weights[0]",
                            "weights[1]"]
    values = coords.unlink(coords.link(phi).numpy())
    np.testing.assert_allclose(values, [0.2, 0.6, 0.1, 0.5, 0.3, 0.7], rtol=1e-6)
    coords.set(phi + 0.5)
    weights = walk.weights.detach().double()
    assert math.isclose(float(torch.log(weights[0] / weights[1])), math.log(0.3 / 0.7) + 0.5, rel_tol=1e-5)
    coords.set(phi)
    assert torch.allclose(coords.get(), phi)


def prw_sandwich(walk: PersistentRandomWalk, data_walkers: int) -> tuple:
    target = walk.expected_msd(10).detach()
    problem = Moments(target, target ** -2, lambda n, g: walk.msd_per_walker(n, 10, g), units=40_000,
                      fit_units=1500, unit="walkers")
    coords = Coordinates(walk)
    cov, _, extra = Sandwich().moments(coords, problem, target=Target(units=data_walkers))
    return cov, extra


def test_finite_differences_agree_with_the_exact_jacobian_and_the_sandwich_with_the_exact_one():
    walk = PersistentRandomWalk(0.2, 0.1, estimator="gumbel")
    cov, extra = prw_sandwich(walk, 15_000)
    coords = Coordinates(walk)
    originals = [coords.original(name) for name, _, _ in coords.parts]
    expected = walk.expected_msd(10)
    G = torch.stack([torch.cat([g.flatten() for g in torch.autograd.grad(v, originals, retain_graph=True)])
                     for v in expected]).double()
    with torch.no_grad():
        units = walk.msd_per_walker(40_000, 10, torch.Generator().manual_seed(0)).double()
    W = torch.diag(expected.detach().double() ** -2)
    bread = torch.linalg.inv(G.T @ W @ G)
    sigma = torch.cov(units.T)  # the data's 15,000 walkers and the one-step estimate's 40,000 simulated ones
    exact = bread @ G.T @ W @ (sigma / 15_000 + sigma / 40_000) @ W @ G @ bread
    np.testing.assert_allclose(cov.diagonal().sqrt(), exact.diagonal().sqrt(), rtol=0.05)
    assert extra["j_test"]["dof"] == 8
    assert extra["autograd_jacobian_rel_error"] > 0.2  # Gumbel-softmax at tau 1 is biased: why G is not autograd


def test_more_data_gives_narrower_intervals_as_the_formula_says():
    walk = PersistentRandomWalk(0.3, 0.2, estimator="gumbel")
    small, _ = prw_sandwich(walk, 4_000)
    large, _ = prw_sandwich(walk, 16_000)
    expected = math.sqrt((1 / 4_000 + 1 / 40_000) / (1 / 16_000 + 1 / 40_000))  # data plus the 40,000 simulated
    np.testing.assert_allclose((small.diagonal() / large.diagonal()).sqrt(), expected, rtol=0.05)


def test_si_estimating_equation_matches_the_closed_form():
    """A^-1 B A^-T in logit(beta) against the least-squares score written out by hand per neighbour count."""
    model = SI(0.3)
    gen = torch.Generator().manual_seed(0)
    x = (torch.rand(40, 16, 16, generator=gen) < 0.3).float()
    with torch.no_grad():
        y = model(x, gen)
    problem = EstimatingEquation(lambda a, b: 0.5 * ((model.expected_transition(a) - b) ** 2).sum((-2, -1)),
                                 lambda: [(x[:25], y[:25]), (x[25:], y[25:])])
    cov, _, extra = Sandwich().estimating_equation(model, Coordinates(model), problem)
    beta = 0.3
    n = torch.arange(9, dtype=torch.float64)
    p = 1 - (1 - beta) ** n
    dp = n * (1 - beta) ** (n - 1) * beta * (1 - beta)  # dp / dlogit(beta)
    d2p = (n * (1 - beta) ** (n - 1) * beta * (1 - beta) * (1 - 2 * beta)
           - n * (n - 1) * (1 - beta) ** (n - 2) * (beta * (1 - beta)) ** 2)
    psi, A = torch.zeros(len(x), dtype=torch.float64), 0.0
    counts = transition_counts(x, y, per_lattice=True).double()  # (B, 9, 2): unaware sites and those that turned
    unaware, turned = counts[..., 0], counts[..., 1]
    psi = (dp * (p * unaware - turned)).sum(-1)
    A = float((unaware * (dp ** 2 + p * d2p) - turned * d2p).sum())
    assert math.isclose(float(cov[0, 0]), float((psi ** 2).sum()) / A ** 2, rel_tol=1e-4)
    assert extra["units"] == 40


def test_a_fit_away_from_the_root_of_its_equation_is_reported_as_not_converged():
    gen = torch.Generator().manual_seed(1)
    x = (torch.rand(60, 16, 16, generator=gen) < 0.3).float()
    with torch.no_grad():
        y = SI(0.3)(x, gen)
    root = si_beta_least_squares(transition_counts(x, y))
    for beta, converged in ((root, True), (0.36, False)):
        model = SI(beta)
        problem = EstimatingEquation(lambda a, b, m=model: 0.5 * ((m.expected_transition(a) - b) ** 2).sum((-2, -1)),
                                     lambda: [(x, y)])
        result = Sandwich()(SimpleNamespace(simulator=model, uncertainty_problem=lambda p=problem: p), steps=100)
        assert result["converged"] is converged
        assert (result["fit_to_root_se"] < 0.01) is converged
        assert any("has not converged" in w for w in result["warnings"]) is not converged


def test_ridge_is_named_as_a_ratio():
    walk = PersistentRandomWalk(0.2, 0.1)
    cov = torch.tensor([[1.0, 0.995], [0.995, 1.0]], dtype=torch.float64)
    [line] = ridges(Coordinates(walk), cov)
    assert "logit(p_center)" in line and "logit(p_resample)" in line and "ratio" in line
    assert ridges(Coordinates(walk), torch.eye(2, dtype=torch.float64)) == []


@pytest.mark.parametrize(("make", "message"), [
    (lambda: Sandwich(level=1.5), "uq.level: expected a level strictly inside (0, 1), got 1.5"),
    (lambda: Sandwich(level=0), "uq.level: expected a level strictly inside (0, 1), got 0"),
    (lambda: Bootstrap(replicates=1), "uq.replicates: expected an integer >= 2, got 1"),
    (lambda: Sandwich(units=1), "uq.units: expected an integer >= 2 (or null), got 1"),
])
def test_bad_settings_are_refused(make, message):
    with pytest.raises(InputError) as err:
        make()
    assert str(err.value) == message


@pytest.mark.parametrize(("overrides", "message"), [
    (["uq=foo"], "error: uq: unknown option 'foo'; expected one of bootstrap, none, sandwich"),
    (["experiment=si_field", "uq=bootstrap"], "error: uq=bootstrap: not for a field of parameters; use uq=sandwich "
                                             "(block form)"),
])
def test_cli_bad_uq_is_one_line_before_any_compute(tmp_path, overrides, message):
    experiment = [] if any(o.startswith("experiment=") for o in overrides) else ["experiment=si_transition"]
    proc = run_cli(*experiment, "debug=si", f"hydra.run.dir={tmp_path}", *overrides)
    assert proc.returncode != 0
    assert proc.stderr.strip() == message
    assert not (tmp_path / "checkpoints").exists()


def test_bootstrap_of_data_without_units_is_refused(make_cfg, tmp_path):
    frames = np.zeros((3, 4, 16, 16), dtype=np.uint8)
    frames[:, :, 8, 8] = 1
    path = tmp_path / "frames.npz"
    np.savez(path, frames=frames)
    with pytest.raises(InputError, match="no independent units to resample and no truth"):
        train(make_cfg(f"data.path={path}", "uq=bootstrap"))


def test_sandwich_is_in_results_log_and_figure(make_cfg, tmp_path, caplog):
    caplog.set_level("INFO")
    results = train(make_cfg("trainer.max_epochs=10"))
    uncertainty = results["uncertainty"]
    lo, hi = uncertainty["interval"]["beta"]
    assert lo < results["params"]["beta"] < hi and lo > 0 and hi < 1
    assert uncertainty["method"] == "sandwich" and uncertainty["level"] == 0.9 and uncertainty["space"] == {
        "beta": "logit"}
    assert json.loads((tmp_path / "results.json").read_text())["uncertainty"]["interval"]["beta"] == [lo, hi]
    assert (tmp_path / "uncertainty.png").is_file()
    assert f"beta={results['params']['beta']:.4f} [{lo:.4f}, {hi:.4f}]" in caplog.text


def test_bootstrap_refits_simulated_data_again(make_cfg):
    results = train(make_cfg("uq=bootstrap", "uq.replicates=3", "uq.steps=20", "trainer.max_epochs=4",
                             experiment="prw_synthetic"))
    uncertainty = results["uncertainty"]
    assert uncertainty["kind"] == "parametric" and len(uncertainty["estimates"]) == 3
    estimates = np.array(uncertainty["estimates"])
    assert np.unique(estimates[:, 0]).size == 3  # each refit had its own data
    lo, hi = uncertainty["interval"]["p_center"]
    assert lo <= np.median(estimates[:, 0]) <= hi


def test_bootstrap_resamples_real_tracks(make_cfg):
    results = train(make_cfg("uq=bootstrap", "uq.replicates=2", "uq.steps=20", "trainer.max_epochs=1",
                             experiment="prw_tcells"))
    assert results["uncertainty"]["kind"] == "data"


def write_job(folder, truth: float, fit: float, se_link: float) -> None:
    (folder / ".hydra").mkdir(parents=True)
    link = math.log(fit / (1 - fit))
    cov = [[se_link ** 2]]
    result = {"params": {"beta": fit}, "truth": {"beta": truth}, "metrics": {}, "seconds": 1.0,
              "uncertainty": {"space": {"beta": "logit"}, "se_link": {"beta": se_link}, "se": {"beta": 0.0},
                              "cov": cov, "seconds": 0.1, "interval": {"beta": [link, link]}}}
    (folder / "results.json").write_text(json.dumps(result))


def test_coverage_counts_hits_misses_and_failed_jobs(tmp_path):
    write_job(tmp_path / "0", truth=0.5, fit=0.5, se_link=0.1)        # covered at every level
    write_job(tmp_path / "1", truth=0.5, fit=0.52, se_link=0.1)       # logit distance 0.08 = 0.8 se
    (tmp_path / "2" / ".hydra").mkdir(parents=True)                   # failed: a miss
    result = coverage(read_jobs(tmp_path))
    assert result["jobs"] == 3 and result["failed"] == 1
    inside_at = {level: stats.norm.ppf(0.5 + level / 2) >= 0.8 for level in result["levels"]}
    for level, value in result["parameters"]["beta"]["coverage"].items():
        assert value["coverage"] == pytest.approx((1 + inside_at[float(level)]) / 3)
        assert value["band"][0] < value["coverage"] < value["band"][1]
    assert result["joint"]["0.9"]["coverage"] == result["parameters"]["beta"]["coverage"]["0.9"]["coverage"]


def test_coverage_sweep_runs_through_submitit(tmp_path):
    """Two jobs of the SI coverage study through Hydra's submitit launcher (local processes), then collected."""
    pytest.importorskip("hydra_plugins.hydra_submitit_launcher")
    proc = run_cli("-m", "experiment=si_transition", "coverage=si_transition", "debug=si",
                   "hydra/launcher=submitit_local", "coverage.index=0,1", f"hydra.sweep.dir={tmp_path}",
                   "hydra.launcher.timeout_min=10", cwd=ROOT)
    assert proc.returncode == 0, proc.stderr[-2000:]
    jobs = read_jobs(tmp_path)
    assert len(jobs) == 2 and all(job is not None for job in jobs)
    assert jobs[0]["truth"]["beta"] != jobs[1]["truth"]["beta"]
    assert coverage(jobs)["failed"] == 0


@pytest.mark.parametrize("constraint, value, link, labels", [
    (Probability(), [0.2, 0.7], "logit", ["logit(x[0])", "logit(x[1])"]),
    (Positive(), [0.5, 3.0], "log", ["log(x[0])", "log(x[1])"]),
    (Real(), [-1.5, 2.0], "identity", ["x[0]", "x[1]"]),
    (UnitInterval(), [0.1, 0.9], "identity", ["x[0]", "x[1]"]),
    (Simplex(), [0.2, 0.3, 0.5], "logit", ["log(x[0]/x[2])", "log(x[1]/x[2])"]),
])
def test_each_constraint_owns_its_link_coordinates_and_labels(constraint, value, link, labels):
    value = torch.tensor(value, dtype=torch.float64)
    theta = constraint.right_inverse(value)
    assert constraint.link.name == link
    linked = constraint.linked(theta).numpy()
    np.testing.assert_allclose(linked, constraint.link.forward(value.numpy()), rtol=1e-9)
    np.testing.assert_allclose(constraint.link.inverse(linked), value.numpy(), rtol=1e-9)
    slope = (constraint.link.inverse(linked + 1e-6) - constraint.link.inverse(linked - 1e-6)) / 2e-6
    np.testing.assert_allclose(constraint.link.slope(value.numpy()), slope, rtol=1e-5)
    stored = constraint.stored(constraint.coordinates(theta))
    torch.testing.assert_close(constraint(stored), value)
    assert constraint.labels([f"x[{i}]" for i in range(len(value))]) == labels


@pytest.mark.parametrize("value", [0.3, [0.2, 0.5], [0.2, 0.3, 0.5], [[0.3]], [[0.1, 0.2], [0.3, 0.4]],
                                   np.full((8, 8), 0.2).tolist(), [[0.1, None], [0.3, 0.4]]],
                         ids=["scalar", "two classes", "three classes", "1x1 field", "2x2 field", "8x8 field",
                              "undetermined"])
def test_the_report_takes_every_parameter_shape(value):
    """The interval line, the figure and the fitted line on a number, per-class values, a field of any size
    (1x1 included) and intervals that are not determined (null)."""
    from slm.plots import uncertainty_figure
    from slm.train import _fmt

    array = np.asarray(value, dtype=float)
    fitted = np.nan_to_num(array, nan=0.25).tolist()
    lower = value if array.ndim == 0 else (np.where(np.isnan(array), np.nan, array - 0.05)).tolist()
    upper = value if array.ndim == 0 else (array + 0.05).tolist()
    uncertainty = {"level": 0.9, "method": "sandwich", "interval": {"beta": [lower, upper]}}
    line = summary_line(uncertainty, {"beta": fitted})
    assert line.startswith("90% intervals (sandwich): beta") and "\n" not in line
    uncertainty_figure({"beta": fitted}, uncertainty, {"beta": fitted})
    assert "\n" not in _fmt(fitted) and (_fmt(fitted).startswith("[") or array.ndim == 0)


def test_an_interval_that_excludes_its_estimate_says_why():
    """An unconverged fit's intervals are centred on its one-step estimate: the line prints it beside the fit."""
    uncertainty = {"level": 0.9, "method": "sandwich", "interval": {"beta": [0.839, 0.850]}, "center": {"beta": 0.8447},
                   "fit_to_root_se": 15.9}
    line = summary_line(uncertainty, {"beta": 0.7827})
    assert "beta=0.7827 (one-step 0.8447) [0.8390, 0.8500]" in line
    assert "1 interval(s) exclude the fit" in line and "15.9 standard errors" in line
    inside = summary_line(uncertainty | {"interval": {"beta": [0.7, 0.9]}}, {"beta": 0.7827})
    assert "one-step" not in inside and "exclude" not in inside


def test_a_parameter_that_moves_no_statistic_gets_no_interval_rather_than_a_crash(caplog):
    walk = PersistentRandomWalk([0.2, 0.6], 0.1, classes=2, weights=[0.5, 0.5])
    target = walk.expected_msd(10).detach()
    # only the first class is ever simulated: p_center[1] and the weights move nothing
    problem = Moments(target, target ** -2, lambda n, g: walk.msd_per_walker(n, 10, g)[::2], units=2000,
                      fit_units=200, unit="walkers")
    result = Sandwich().__call__(SimpleNamespace(uncertainty_problem=lambda: problem, simulator=walk,
                                                 target=Target(units=1000)), steps=1)
    assert all(bound is None for pairs in result["interval"].values() for pair in pairs for bound in pair)
    assert any("not determined" in line for line in result["warnings"])
