import json
import os

import numpy as np
import pytest
import torch
from hydra.utils import instantiate

from slm.baselines.abc_smc import abc_smc
from slm.baselines.cma_es import cma_es
from slm.baselines.problems import PRWProblem, SIProblem, parameter_error
from slm.errors import InputError
from slm.models.persistent_walk import PersistentRandomWalk
from slm.models.si import simulate_si
from slm.studies import calibrators, scaling


@pytest.fixture(scope="module")
def si_problem():
    frames = simulate_si(0.4, 8, 12, generator=torch.Generator().manual_seed(0)).float()
    return SIProblem(frames[:, :-1].flatten(0, 1), frames[:, 1:].flatten(0, 1), 0.4)


def test_si_summary_separates_the_truth_from_a_wrong_beta(si_problem):
    gen = torch.Generator().manual_seed(1)
    near = [si_problem.distance(si_problem.summary({"beta": 0.4}, gen), si_problem.observed) for _ in range(5)]
    far = [si_problem.distance(si_problem.summary({"beta": 0.25}, gen), si_problem.observed) for _ in range(5)]
    assert max(near) < min(far)
    assert si_problem.simulations == 10


def test_abc_smc_concentrates_on_the_truth(si_problem):
    trace = abc_smc(si_problem, population_size=40, max_generations=4, n_procs=2)
    assert len(trace.estimates) == 4 and trace.simulations == sorted(trace.simulations)
    assert trace.simulations[-1] >= 4 * 40
    low, high = trace.intervals[-1]["beta"]
    assert low < trace.estimates[-1]["beta"] < high and high - low < 0.2
    assert parameter_error(trace.estimates[-1], si_problem.truth) < 0.05


def test_cma_es_finds_the_prw_parameters_from_the_ad_start():
    target = PersistentRandomWalk(0.2, 0.1).expected_msd(10).detach()
    problem = PRWProblem(target, {"p_center": 0.2, "p_resample": 0.1}, walkers=1000)
    start = {"p_center": 0.7, "p_resample": 0.6}
    trace = cma_es(problem, start, max_evaluations=300)
    assert trace.simulations[-1] == problem.simulations <= 300 + 10
    assert parameter_error(trace.estimates[-1], problem.truth) < 0.5 * parameter_error(start, problem.truth)


def test_comparison_rows_and_plot(tmp_path):
    settings = {"overrides": ["data.n_sequences=8", "data.n_frames=12", "data.batch_size=32", "trainer.max_epochs=3",
                              "+trainer.enable_model_summary=false"],
                "abc": {"population_size": 30, "max_generations": 2}, "cma": {"max_evaluations": 30}}
    rows, traces, errors = calibrators.compare("si", settings, 2, tmp_path)
    assert [r["method"][:3] for r in rows] == ["AD ", "ABC", "CMA"]
    for row in rows:
        assert {"task", "method", "seconds", "simulations", "param_error"} <= set(row)
        assert row["seconds"] > 0 and row["simulations"] > 0
        json.dumps(row)
    assert "interval_90" in rows[1] and rows[1]["ratio_to_AD_at_equal_error"] > 0
    calibrators.plot({"si": (rows, traces, errors)}, tmp_path / "plot.png")
    assert (tmp_path / "plot.png").stat().st_size > 0



def test_seconds_to_counts_from_the_first_estimate_after_which_the_error_stays_below():
    errors = [abs(beta - 0.4) for beta in (0.1, 0.39, 0.2, 0.41, 0.395)]
    assert calibrators.seconds_to([1, 2, 3, 4, 5], errors, 0.011) == 4
    assert calibrators.seconds_to([1, 2, 3, 4, 5], errors, 0.001) == float("inf")


def test_prw_problem_takes_the_truth_from_the_truth_node(tmp_path):
    cfg = calibrators.compose("prw", ["data.n_walkers=2000"], tmp_path)
    datamodule = instantiate(cfg.data)
    datamodule.setup("fit")
    problem = calibrators.make_problem(cfg, datamodule)
    assert problem.truth == {"p_center": 0.2, "p_resample": 0.1} and problem.names == ("p_center", "p_resample")
    assert problem.target.shape == (cfg.data.lags,)


def test_potts_problem_runs_the_fit_simulator_within_bounds(tmp_path):
    from slm.baselines.cma_es import cma_es

    small = ["data.size=24", "model.cells=8", "model.volume_target=16", "data.lattices=2", "data.frames=2",
             "data.mcs_per_frame=3", "data.batch_size=2"]
    cfg = calibrators.compose("potts", small, tmp_path)
    datamodule = instantiate(cfg.data)
    datamodule.setup("fit")
    problem = calibrators.make_problem(cfg, datamodule)
    assert problem.truth == {"J_dark_light": 11.0, "J_light_light": 14.0, "lambda_volume": 2.0}
    assert set(problem.bounds) == set(problem.names)
    summary = problem.summary(problem.truth, torch.Generator().manual_seed(0))
    assert summary.shape == problem.observed.shape == (2, 6) and problem.distance(summary, problem.observed) >= 0
    trace = cma_es(problem, {"J_dark_light": 16.5, "J_light_light": 7.0, "lambda_volume": 3.0}, max_evaluations=8)
    for estimate in trace.estimates:
        assert all(low <= estimate[name] <= high for name, (low, high) in problem.bounds.items())
    weighted = calibrators.make_problem(calibrators.compose("potts", [*small, "+task.weights={clusters: 0}"],
                                                            tmp_path), datamodule)
    other = summary.copy()
    other[:, 3] += 5.0  # the clusters alone differ: weight 0 in the fit's loss, so in the baselines' too
    assert weighted.distance(other, problem.observed) == pytest.approx(weighted.distance(summary, problem.observed))
    assert problem.distance(other, problem.observed) > problem.distance(summary, problem.observed)


def test_track_problem_scores_estimates_by_the_fit_loss(tmp_path):
    small = ["data.size=24", "model.volume_target=16", "model.surface_target=50", "data.burn_in=4", "data.frames=4",
             "data.lags=2", "data.batch_size=2", "task.eval_lattices=2", "data.min_points=2"]
    cfg = calibrators.compose("tcells", small, tmp_path)
    datamodule = instantiate(cfg.data)
    datamodule.setup("fit")
    problem = calibrators.make_problem(cfg, datamodule)
    assert problem.truth is None and problem.names == ("lambda_act", "max_act")
    summary = problem.summary({"lambda_act": 200.0, "max_act": 20.0}, torch.Generator().manual_seed(0))
    assert summary.shape == problem.observed.shape == (4,) and problem.simulations == 1
    still = problem.evaluate({"lambda_act": 10.0, "max_act": 20.0})
    assert still == problem.evaluate({"lambda_act": 10.0, "max_act": 20.0}), "the same noise for every estimate"
    assert problem.evaluate({"lambda_act": 300.0, "max_act": 20.0}) < still, "moving cells fit T cells better"
    assert problem.simulations == 1



def test_track_problem_of_a_population_weights_its_classes_as_the_fit(tmp_path):
    small = ["data.size=24", "model.volume_target=16", "model.surface_target=50", "data.burn_in=4", "data.frames=4",
             "data.lags=2", "data.batch_size=4", "task.eval_lattices=4", "data.min_points=2"]
    cfg = calibrators.compose("tcells_mixture", [*calibrators.TWO_CLASSES, *small], tmp_path)
    datamodule = instantiate(cfg.data)
    datamodule.setup("fit")
    problem = calibrators.make_problem(cfg, datamodule)
    assert problem.names == ("lambda_act[0]", "lambda_act[1]", "max_act[0]", "max_act[1]", "weights[0]", "weights[1]")
    assert problem.bounds["lambda_act[1]"] == (10.0, 1000.0) and problem.bounds["weights[0]"] == (0.0, 1.0)
    assert problem.observed.shape == (4 + 5,), "MSD at 2 lags, speed, persistence and the speed distribution"
    params = {"lambda_act[0]": 10.0, "lambda_act[1]": 300.0, "max_act[0]": 20.0, "max_act[1]": 20.0}
    half = problem.statistics(params | {"weights[0]": 0.5, "weights[1]": 0.5}, 4, torch.Generator().manual_seed(0))
    fifth = problem.statistics(params | {"weights[0]": 0.2, "weights[1]": 0.2}, 4, torch.Generator().manual_seed(0))
    assert half == pytest.approx(fifth), "weights are normalised"
    still = problem.evaluate(params | {"weights[0]": 0.95, "weights[1]": 0.05})
    assert problem.evaluate(params | {"weights[0]": 0.05, "weights[1]": 0.95}) < still, "the moving class fits better"
    matched = np.concatenate([half[:4], problem.observed[4:]])
    assert problem.distance(half, problem.observed) > problem.distance(matched, problem.observed), "speed term counts"


def test_scaling_rows_carry_time_to_ad_error_and_the_mle(tmp_path):
    small = ["data.n_sequences=6", "data.n_frames=8", "data.size=16", "data.seeds=3", "trainer.max_epochs=2",
             "+trainer.enable_model_summary=false"]
    rows, traces, errors = scaling.scale("si_field", 4, True, 2, tmp_path, small, min_budget=3)
    assert [row["method"] for row in rows] == ["MLE", "AD (ste)", "ABC-SMC", "CMA-ES", "NPE (sbi)"]
    for row in rows:
        assert {"task", "method", "dims", "seconds", "simulations", "param_error"} <= set(row) and row["dims"] == 4
        json.dumps(row)
    ad, *others = rows[1:]
    assert ad["time_to_ad_error"] is not None and ad["times_ad"] == 1.0
    for row in others:
        assert row["budget_seconds"] >= 3 and row["seconds"] > 0
        assert row["time_to_ad_error"] is None or row["time_to_ad_error"] <= row["seconds"]
    assert len(traces["ABC-SMC"].estimates[0]) == 4, "one parameter per block"
    scaling.plot_scaling(rows, tmp_path / "scaling.png")
    assert (tmp_path / "scaling.png").stat().st_size > 0
    with pytest.raises(InputError, match="--dims: 8 is not a square number"):
        scaling.blocks_of(8)


def test_mixture_scaling_scores_by_the_exact_loss(tmp_path):
    small = ["trainer.max_epochs=1", "data.steps_per_epoch=5", "task.batch_size=200", "task.eval_walkers=1000",
             "+trainer.enable_model_summary=false"]
    rows, traces, errors = scaling.scale("prw_mixture", 2, True, 2, tmp_path, small, min_budget=3)
    assert rows[0]["method"] == "exact optimum" and rows[0]["loss"] < 0.01
    assert all(row["dims"] == 5 and row["classes"] == 2 and "loss" in row for row in rows)
    assert all(row["loss"] >= rows[0]["loss"] - 1e-9 for row in rows), "nothing beats the exact optimum"
    assert set(traces["CMA-ES"].estimates[0]) == {"p_center[0]", "p_center[1]", "p_resample[0]", "p_resample[1]",
                                                   "weights[0]", "weights[1]"}


def test_a_baseline_that_fails_gives_a_row_that_says_why(si_problem):
    def broken(problem):
        raise IndexError("list index out of range")

    trace = calibrators.guarded("ABC-SMC", broken, si_problem)
    assert "IndexError" in trace.stopped and trace.estimates == [{"beta": 0.5}]


def test_a_failing_ad_run_is_a_row_and_every_finished_row_is_written(tmp_path, monkeypatch):
    """AD's run fails like a baseline's (a row that says why, no ratios to it); the rows of every finished task are
    on disk before the next task runs."""
    settings = {"overrides": ["data.n_sequences=8", "data.n_frames=12", "data.batch_size=32", "trainer.max_epochs=2",
                              "+trainer.enable_model_summary=false"],
                "abc": {"population_size": 20, "max_generations": 1}, "cma": {"max_evaluations": 10}}

    def broken(cfg, per_step, every=1):
        raise TypeError("only 0-dimensional arrays can be converted to Python scalars")

    monkeypatch.setattr(calibrators, "run_ad", broken)
    rows, _, _ = calibrators.compare("si", settings, 1, tmp_path)
    assert rows[0]["method"] == "AD (ste)" and rows[0]["stopped"].startswith("failed: TypeError: only 0-dim")
    assert [r["method"][:3] for r in rows] == ["AD ", "ABC", "CMA"] and "ratio_to_AD_at_equal_error" not in rows[1]

    def second_fails(task, settings, procs, work):
        if task == "prw":
            raise RuntimeError("the machine went away")
        return [{"task": task, "method": "AD (ste)"}], {}, {}

    monkeypatch.setattr(calibrators, "compare", second_fails)
    monkeypatch.setattr(calibrators, "SETTINGS", {"quick": {"si": {}, "prw": {}}})
    with pytest.raises(RuntimeError):
        calibrators.run_comparison(True, ["si", "prw"], 1, tmp_path / "rows.json")
    assert json.loads((tmp_path / "rows.json").read_text()) == [{"task": "si", "method": "AD (ste)"}]


def test_abc_smc_says_why_when_its_process_dies(si_problem, monkeypatch):
    import pyabc

    def die(self, *args, **kwargs):
        os._exit(3)

    monkeypatch.setattr(pyabc.ABCSMC, "run", die)
    trace = abc_smc(si_problem, population_size=10, max_generations=2, n_procs=1)
    assert "exit code 3" in trace.stopped and trace.estimates == [{"beta": 0.5}]


def test_abc_smc_keeps_what_it_has_when_pyabc_fails(si_problem, monkeypatch):
    import pyabc

    def fail(self, *args, **kwargs):
        raise AssertionError("The population total weight nan is not normalized.")

    monkeypatch.setattr(pyabc.ABCSMC, "run", fail)
    trace = abc_smc(si_problem, population_size=10, max_generations=2, n_procs=1)
    assert "weight nan" in trace.stopped
    assert trace.estimates == [{"beta": 0.5}], "no generation finished: the prior's mean"
