"""The studies of ``slm.studies`` on small settings, and their command lines."""

import json

import pytest
import torch

from slm.errors import InputError
from slm.models.malevanets_kapral import MalevanetsKapral
from slm.models.reference.mk import NaiveMK
from slm.studies import cpm_gradients, estimator_study, potts_gradients
from slm.studies.benchmark import CASES, markdown, mk_case, potts_case, run_cases, si_step
from slm.studies.stability import stability_loss


def test_score_estimator_is_unbiased_for_the_expected_mse_and_the_ste_for_least_squares(tmp_path):
    summary = estimator_study.study(0.4, [0.3], repeats=60, batch=16, seed=0)
    rows = {r["estimator"]: r for r in summary["rows"]}
    assert set(rows) == set(estimator_study.ESTIMATORS)
    score, ste = rows["score"], rows["ste"]
    assert abs(score["bias"]) < 4 * score["se"]
    assert abs(ste["bias_vs_least_squares"]) < 4 * ste["se"]
    assert abs(ste["bias"]) > 10 * ste["se"]  # the STE does not follow the expected MSE
    assert abs(summary["least_squares_minimiser"] - 0.4) < 0.02 < abs(summary["expected_mse_minimiser"] - 0.4)
    estimator_study.plot(summary, tmp_path / "study.png")
    assert (tmp_path / "study.png").stat().st_size > 0


def test_estimator_study_script_writes_its_files(tmp_path, capsys):
    from scripts import estimator_study as script

    out, png = tmp_path / "study.json", tmp_path / "study.png"
    script.main(["--betas", "0.3", "--repeats", "3", "--batch", "4", "--out", str(out), "--plot", str(png)])
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].startswith("truth 0.4: MLE") and len(lines) == 2 + len(estimator_study.ESTIMATORS)
    assert len(json.loads(out.read_text())["rows"]) == len(estimator_study.ESTIMATORS)
    assert png.stat().st_size > 0


def test_cpm_score_gradient_matches_the_exact_one_and_the_pathwise_ones_shrink_it(tmp_path):
    lines = []
    rows = cpm_gradients.study(cells=400, repeats=2, step=0.05, temperatures=(0.5, 1.0), progress=lines.append)
    assert [r["temperature"] for r in rows] == [0.5, 1.0] and len(lines) == 2
    for row in rows:
        assert {"temperature", "acceptance", "msd", "exact", "finite difference", *cpm_gradients.ESTIMATORS} <= set(row)
        mean, se = row["score"]
        assert abs(mean - row["exact"]) < 4 * se
        for label in ("ste", "gumbel tau=1", "gumbel tau=0.5"):  # biased low (docs/cpm.md)
            assert 0 < row[label][0] < 0.7 * row["exact"]
    cpm_gradients.plot(rows, tmp_path / "cpm.png")
    assert (tmp_path / "cpm.png").stat().st_size > 0


def test_potts_gradient_study_compares_every_estimator_with_finite_differences(tmp_path):
    lines = []
    setting = potts_gradients.sorting(lattices=4, size=32, cells=16, mcs=10)
    rows = potts_gradients.study(setting, repeats=2, step=0.1, progress=lines.append)
    assert len(rows) == len(lines) == len(setting.points) * len(setting.parameters) * 6
    for row in rows:
        assert {"finite difference", *potts_gradients.ESTIMATORS} <= set(row)
        if row["statistic"] == "heterotypic_fraction" and row["parameter"] == "J_dark_light":
            # a costlier heterotypic contact lowers the heterotypic fraction, and the pathwise estimators see it
            assert row["finite difference"][0] < 0 and row["ste"][0] < 0 and row["gumbel tau=1"][0] < 0
    assert set(potts_gradients.verdicts(rows)) == set(potts_gradients.ESTIMATORS)
    potts_gradients.plot(rows, tmp_path / "potts.png")
    assert (tmp_path / "potts.png").stat().st_size > 0


def test_stability_loss_script_measures_the_expected_loss(make_cfg):
    frozen = make_cfg("task.loss=mse", "model.D_A=0", "model.D_B=0", "model.k1=0", "model.k2=0", "model.k3=0",
                      experiment="mk_e1")
    assert stability_loss(frozen, 3) == {"mean": 0.0, "min": 0.0, "max": 0.0}  # nothing moves, nothing reacts
    moving = stability_loss(make_cfg("task.loss=mse", experiment="mk_e1"), 3)
    assert 0 < moving["min"] <= moving["mean"] <= moving["max"]
    with pytest.raises(InputError, match="rollouts: expected a positive integer, got 0"):
        stability_loss(frozen, 0)


def _per_lattice_changes(x: torch.Tensor, x0: torch.Tensor) -> torch.Tensor:
    """``(B, 4)``: mean change of A and B over the sites of each lattice, and their mean squares."""
    d = x - x0
    return torch.cat([d.mean((-2, -1)), (d**2).mean((-2, -1))], dim=1)


def test_naive_mk_and_ours_agree_in_distribution():
    """A few steps from A = 35, B = 10 (where the reaction drifts and both species diffuse): the mean
    changes of the counts and their mean squares agree within 4 standard errors of the difference."""
    batch, steps = 256, 5
    x0 = torch.zeros(batch, 2, 16, 16)
    x0[:, 0], x0[:, 1] = 35.0, 10.0
    torch.manual_seed(0)
    naive, x = NaiveMK(), x0
    with torch.no_grad():
        for _ in range(steps):
            x = naive(x)
        ours = MalevanetsKapral().rollout(x0, steps, torch.Generator().manual_seed(0))
    a, b = _per_lattice_changes(x, x0), _per_lattice_changes(ours, x0)
    difference = a.mean(0) - b.mean(0)
    se = ((a.var(0) + b.var(0)) / batch).sqrt()
    assert (difference.abs() < 4 * se).all(), (a.mean(0), b.mean(0), se)
    assert b.mean(0)[0] > 4 * b[:, 0].std() / batch**0.5  # A's count drifts up: the reaction is tested
    assert (b.mean(0)[2:] > 0.1).all()  # both species moved: the diffusion is tested


def test_benchmark_case_row_and_table():
    assert {"si_step", "cpm_step", "mk_ours_grad_64_b1", "mk_step_per_call", "mk_step_rollout",
            "potts_random_256_b1", "potts_kernel_256_b1", "potts_glazier_256_b1", "potts_torch_64_b1",
            "potts_sequential_64_b1", "potts_grad_128_b8"} <= set(CASES)
    row = si_step(torch.device("cpu"), 1)
    assert set(row) == {"model", "lattice", "batch", "forward steps/s", "gradient step"}
    assert row["model"] == "SI" and row["gradient step"].endswith(" ms")
    table = markdown([row, {"model": "x", "epoch": "1.00 s"}]).splitlines()
    assert table[0] == ("| model | lattice | batch | forward steps/s | copy attempts/s | gradient step | epoch "
                        "| peak memory |")
    assert table[1] == "|---|---|---|---|---|---|---|---|" and table[3] == "| x |  |  |  |  |  | 1.00 s |  |"
    for engine, ending in (("random", "random schedule (default)"), ("kernel", "sweep schedule, compiled"),
                           ("torch", "sweep schedule, torch")):
        potts = potts_case(engine, 16, 4, 9, 2, torch.device("cpu"), 1)
        assert potts["batch"] == 2 and potts["copy attempts/s"] and potts["forward steps/s"].endswith("MCS")
        assert potts["engine"] == engine and potts["model"].endswith(ending)
    with pytest.raises(InputError, match="unknown CPM benchmark mode 'forward'"):
        potts_case("forward", 16, 4, 9, 2, torch.device("cpu"), 1)
    per_call = mk_case("per_call", 16, 1, "grad", torch.device("cpu"), 1, label="MK, called once per step")
    assert per_call["model"] == "MK, called once per step" and per_call["gradient step"].endswith(" s")
    with pytest.raises(InputError, match=r"--only: unknown case\(s\) \['nope'\]"):
        run_cases(["si_step", "nope"], "cpu", 1)


def test_benchmark_script_rejects_an_unknown_case():
    from scripts import benchmark as script

    with pytest.raises(SystemExit, match=r"error: --only: unknown case\(s\) \['nope'\]"):
        script.main(["--only", "nope"])


def test_act_gradient_setting_differentiates_the_track_statistics():
    setting = potts_gradients.act(lattices=4, size=24, burn_in=5, frames=11, mcs_per_frame=2)
    rows = potts_gradients.study(setting, repeats=1, step=0.1)
    assert len(rows) == len(setting.points) * 3 * 4
    assert {row["statistic"] for row in rows} == {"msd_1", "msd_10", "speed", "persistence"}
    assert all(row["ste"][0] != 0 for row in rows if row["parameter"] in ("lambda_act", "max_act"))


def test_run_lengths_runs_an_experiment_as_a_user_would(tmp_path):
    """One row per experiment from its own scripts/train.py process; a failing run is a row that says why."""
    from slm.studies.run_lengths import experiments, markdown, run

    assert "si_transition" in experiments() and "cpm_sorting" in experiments()
    row = run("si_transition", tmp_path / "si", ["debug=si"], timeout=300)
    assert row["steps"] > 0 and row["converged"] in (True, False) and row["metric"].startswith("param_rel_error")
    failed = run("si_transition", tmp_path / "bad", ["model.beta=2"], timeout=300)
    assert "model.beta" in failed["error"]
    table = markdown([row, failed])
    assert table.count("\n") == 3 and "| si_transition |" in table
