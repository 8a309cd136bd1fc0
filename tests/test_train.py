"""End-to-end runs of the real config, shrunk: results, logs, seeding, resume, bad input."""

import json
import subprocess
import sys

import numpy as np
import pytest
import torch
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

from slm.config import check_arguments
from slm.errors import InputError, NonFiniteError
from slm.train import train
from tests.conftest import ROOT, run_cli


def test_run_writes_results_checkpoint_and_tensorboard(make_cfg, tmp_path):
    results = train(make_cfg())
    assert set(results) == {"params", "metrics", "steps", "seconds", "truth", "uncertainty", "converged", "stop_reason",
                            "gradient_z", "gradient_z_threshold", "root_distance_se", "tolerance_se", "estimate"}
    assert 0 < results["params"]["beta"] < 1 and 0 < results["metrics"]["beta_mle"] < 1
    assert json.loads((tmp_path / "results.json").read_text()) == results
    assert (tmp_path / "checkpoints" / "last.ckpt").is_file()
    events = EventAccumulator(str(tmp_path / "tensorboard"), size_guidance={"images": 0}).Reload()
    scalars = set(events.Tags()["scalars"])
    assert {"train/loss", "val/loss", "param/beta", "grad/beta"} <= scalars
    assert any(tag.startswith("transition/") for tag in events.Tags()["images"])
    assert "uncertainty" in events.Tags()["images"]  # the interval figure
    assert len(events.Scalars("param/beta")) > 1


def test_fit_lands_on_the_mle(make_cfg):
    cfg = make_cfg("truth.beta=0.3", "data.n_sequences=40", "data.n_frames=20", "data.batch_size=32",
                   "trainer.max_epochs=8")
    results = train(cfg)
    assert abs(results["params"]["beta"] - results["metrics"]["beta_mle"]) < 0.01
    assert abs(results["params"]["beta"] - results["metrics"]["beta_lsq"]) < 0.005


def test_seeding(make_cfg, tmp_path):
    first = train(make_cfg("seed=1", output=tmp_path / "a"))["params"]["beta"]
    again = train(make_cfg("seed=1", output=tmp_path / "b"))["params"]["beta"]
    other = train(make_cfg("seed=2", output=tmp_path / "c"))["params"]["beta"]
    assert first == again
    assert first != other


def test_resume_after_crash_ends_where_the_uninterrupted_run_ends(make_cfg, tmp_path):
    overrides = ["trainer.max_epochs=4", "seed=3", "stopping.window=5"]
    full = train(make_cfg(*overrides, output=tmp_path / "full"))
    steps_per_epoch = full["steps"] // 4
    crash = ["+callbacks.crash._target_=tests.helpers.CrashAtStep", f"+callbacks.crash.step={2 * steps_per_epoch + 3}"]
    with pytest.raises(RuntimeError, match="simulated crash"):
        train(make_cfg(*overrides, *crash, output=tmp_path / "part"))
    last = tmp_path / "part" / "checkpoints" / "last.ckpt"
    assert torch.load(last, weights_only=False)["global_step"] == 2 * steps_per_epoch
    resumed = train(make_cfg(*overrides, f"ckpt_path={last}", output=tmp_path / "part"))
    assert resumed["steps"] == full["steps"]
    assert resumed["params"]["beta"] == full["params"]["beta"]
    assert resumed["gradient_z"] == full["gradient_z"] is not None  # the stopping rule's window came back too


def test_a_fit_says_whether_it_converged_and_why_it_stopped(make_cfg, caplog):
    """Every results.json has converged, stop_reason and gradient_z, whatever uq is; a fit that cannot converge
    within the cap says so in a warning with the one-step estimate beside it; a converged fit ends early on its
    averaged estimate, within the tolerance of its root."""
    with caplog.at_level("WARNING", logger="slm.train"):
        stuck = train(make_cfg("task.optimizer.lr=1e-5", "model.beta=0.05", "trainer.max_epochs=4",
                               "stopping.window=10"))
    assert stuck["stop_reason"] == "cap" and stuck["converged"] is False and stuck["estimate"] == "last step"
    assert stuck["gradient_z"] > stuck["gradient_z_threshold"]
    warning = [r.getMessage() for r in caplog.records if r.levelname == "WARNING"][-1]
    assert "without converging" in warning and "one-step estimate beta=" in warning
    with caplog.at_level("INFO", logger="slm.train"):
        early = train(make_cfg("trainer.max_epochs=60", "stopping.window=10"))
    last = [r.getMessage() for r in caplog.records if r.name == "slm.train" and r.levelname == "INFO"][-2]
    capped = train(make_cfg("uq=none", "trainer.max_epochs=60", "stopping.window=10", "stopping.stop=false"))
    assert early["stop_reason"] == "converged" and early["converged"] is True
    assert early["root_distance_se"] <= 1.0 and early["uncertainty"]["fit_to_root_se"] == pytest.approx(
        early["root_distance_se"], abs=1e-3)  # the rule measured the estimate it reports
    assert early["estimate"].startswith("mean of the last")
    assert early["steps"] < capped["steps"] and capped["stop_reason"] == "cap" and capped["root_distance_se"] is None
    assert last.startswith("fitted beta=") and "| converged (gradient z" in last and "se from its root" in last
    with pytest.raises(InputError, match="stopping.window: expected an integer number of steps >= 5, got 2"):
        train(make_cfg("stopping.window=2"))


def test_non_finite_values_stop_the_run_and_keep_the_last_good_checkpoint(make_cfg, tmp_path):
    cfg = make_cfg("trainer.max_epochs=3", "+callbacks.poison._target_=tests.helpers.PoisonAtStep",
                   "+callbacks.poison.step=20")
    with pytest.raises(NonFiniteError, match="non-finite loss, gradient or parameter at step 20"):
        train(cfg)
    state = torch.load(tmp_path / "checkpoints" / "last.ckpt", weights_only=False)["state_dict"]
    assert all(v.isfinite().all() for v in state.values())
    said = json.loads((tmp_path / "results.json").read_text())
    assert said["stop_reason"] == "non-finite" and said["steps"] == 20 and said["converged"] is False


def test_bad_checkpoint_path(make_cfg, tmp_path):
    with pytest.raises(InputError, match="ckpt_path: file not found"):
        train(make_cfg(f"ckpt_path={tmp_path / 'missing.ckpt'}"))
    corrupt = tmp_path / "corrupt.ckpt"
    corrupt.write_bytes(b"not a checkpoint")
    with pytest.raises(InputError, match="ckpt_path: cannot read"):
        train(make_cfg(f"ckpt_path={corrupt}"))


@pytest.mark.parametrize(
    ("override", "message"),
    [
        ("model.beta=1.5", "error: model.beta: expected a probability strictly inside (0, 1), got 1.5"),
        ("truth.beta=0", "error: truth.beta: expected a probability strictly inside (0, 1), got 0"),
        ("estimator=gumbel estimator.temperature=0", "error: estimator.temperature: expected a positive temperature, "
                                                     "got 0"),
        ("task.optimizer.lr=nan", "error: task.optimizer.lr: expected a finite number, got nan"),
        ("task.optimizer.lr=-0.1", "error: task.optimizer.lr: expected a positive learning rate, got -0.1"),
        ("trainer.max_epochs=-3", "error: trainer.max_epochs: expected a positive integer (or -1 for no limit), "
                                  "got -3"),
        ("data.path=/no/such/frames.npz", "error: data.path: file not found: /no/such/frames.npz"),
    ],
)
def test_cli_bad_input_is_one_line_before_any_compute(tmp_path, override, message):
    proc = run_cli("experiment=si_transition", "debug=si", f"hydra.run.dir={tmp_path}", *override.split())
    assert proc.returncode != 0
    assert proc.stderr.strip() == message
    assert not (tmp_path / "checkpoints").exists()


def independent_si(beta: float, n_seq: int, n_frames: int, size: int, seed: int) -> np.ndarray:
    """SI written differently from slm: one Bernoulli trial per aware neighbour, numpy RNG."""
    rng = np.random.default_rng(seed)
    frames = np.zeros((n_seq, n_frames, size, size), dtype=np.uint8)
    frames[:, 0, size // 2, size // 2] = 1
    for t in range(1, n_frames):
        x = frames[:, t - 1]
        new = x.copy()
        for di in (-1, 0, 1):
            for dj in (-1, 0, 1):
                if di or dj:
                    neighbour = np.roll(x, (di, dj), axis=(1, 2))
                    new |= (neighbour & (rng.random(x.shape) < beta)).astype(np.uint8)
        frames[:, t] = new
    return frames


def test_cli_fits_user_data_from_another_simulator(tmp_path):
    path = tmp_path / "observed.npz"
    np.savez_compressed(path, frames=independent_si(0.25, 30, 20, 40, seed=11))
    out = tmp_path / "run"
    proc = run_cli("experiment=si_transition", "debug=si", f"data.path={path}", f"hydra.run.dir={out}",
                   "data.batch_size=32", "trainer.max_epochs=8")
    assert proc.returncode == 0, proc.stderr[-2000:]
    results = json.loads((out / "results.json").read_text())
    assert abs(results["metrics"]["beta_mle"] - 0.25) < 0.01
    assert abs(results["params"]["beta"] - results["metrics"]["beta_mle"]) < 0.01
    assert "fitted beta=" in proc.stderr + proc.stdout


def test_ddp_ranks_draw_different_noise_and_hold_identical_beta(tmp_path):
    report = tmp_path / "ranks"
    proc = run_cli("experiment=si_transition", "debug=si", f"hydra.run.dir={tmp_path / 'run'}",
                   "trainer.strategy=ddp", "trainer.devices=2", "trainer.max_epochs=1",
                   "+callbacks.report._target_=tests.helpers.RankReport", f"+callbacks.report.out_dir={report}")
    assert proc.returncode == 0, proc.stderr[-3000:]
    ranks = [json.loads((report / f"rank{r}.json").read_text()) for r in (0, 1)]
    assert [r["world"] for r in ranks] == [2, 2]
    assert ranks[0]["steps"] == ranks[1]["steps"] > 0
    assert ranks[0]["beta"] == ranks[1]["beta"]
    assert ranks[0]["draws"] != ranks[1]["draws"]
    assert (tmp_path / "run" / "results.json").is_file()


@pytest.mark.parametrize(
    ("arguments", "message"),
    [
        (["model.beta=abc"], "model.beta: expected a number, got 'abc'"),
        (["seed=abc"], "seed: expected an integer, got 'abc'"),
        (["trainer.enable_progress_bar=maybe"], "trainer.enable_progress_bar: expected true or false, got 'maybe'"),
        (["model.bta=0.3"], "model.bta: unknown key; did you mean model.beta? (add a new one with +model.bta=...)"),
        (["experiment=cpm_sorting", "model.lambda_volum=3"], "model.lambda_volum: unknown key; did you mean "
                                                            "model.lambda_volume or model.lambda_surface?"),
        (["experiment=cpm_sorting", "model.learn=J_dark_light"], "model.learn: expected a list like [J_dark_light, "
                                                                 "J_light_light, lambda_volume], got 'J_dark_light'"),
        (["uq=foo"], "uq: unknown option 'foo'; expected one of bootstrap, none, sandwich"),
    ],
)
def test_what_hydra_would_refuse_is_one_line(arguments, message):
    with pytest.raises(InputError) as caught:
        check_arguments(arguments)
    assert str(caught.value).startswith(message) and "\n" not in str(caught.value)


def test_sweeps_and_good_values_pass_the_argument_check():
    check_arguments(["-m", "model.beta=0.1,0.2", "seed=3", "experiment=si_transition", "trainer.max_epochs=2",
                     "+trainer.limit_val_batches=1", "hydra.run.dir=/tmp/x", "seed=null"])


def test_a_part_that_refuses_an_added_key_and_scripts_argparse_are_one_line(make_cfg):
    with pytest.raises(InputError, match=r"^model\.bta: unknown key for SI; did you mean model\.beta\?$"):
        train(make_cfg("+model.bta=0.3"))
    proc = subprocess.run([sys.executable, str(ROOT / "scripts" / "simulate.py"), "nope"], capture_output=True,
                          text=True, timeout=120)
    assert proc.returncode != 0
    assert proc.stderr.strip() == ("error: argument model: invalid choice: 'nope' (choose from 'si', 'mk', 'potts', "
                                   "'potts3d', 'act', 'act3d')")


def test_restarts_fit_every_start_and_keep_the_least_loss(make_cfg, tmp_path):
    """task.restarts=3: three fits in their own folders from spread starts (the first the configured one); the
    least common loss is kept, and every start's loss, estimate and convergence are reported."""
    results = train(make_cfg("task.restarts=3", "task.restart_spread=1.5", "trainer.max_epochs=30", "uq=none"))
    restarts = results["restarts"]
    assert restarts["n"] == 3 and len(restarts["loss"]) == len(restarts["params"]) == 3
    assert restarts["chosen"] == int(np.argmin(restarts["loss"]))
    assert results["params"] == restarts["params"][restarts["chosen"]]
    low, high = restarts["range"]["beta"]
    assert low == min(p["beta"] for p in restarts["params"]) and high == max(p["beta"] for p in restarts["params"])
    assert all((tmp_path / "restarts" / str(i) / "checkpoints" / "last.ckpt").exists() for i in range(3))


def test_restart_starts_spread_about_the_configured_one():
    from slm.models.si import SI
    from slm.restarts import starts

    simulator = SI(beta=0.3)
    values = starts(simulator, 5, 1.0, seed=0)
    assert values[0]["beta"].item() == pytest.approx(0.3)
    moved = torch.logit(torch.stack([v["beta"] for v in values[1:]])) - torch.logit(torch.tensor(0.3))
    assert bool((moved.abs() <= 1.0 + 1e-6).all()) and len(set(moved.tolist())) == 4


@pytest.mark.parametrize(("override", "message"), [
    ("task.restarts=0", "task.restarts: expected a number of starts >= 1, got 0"),
    ("task.restart_spread=-1", "task.restart_spread: expected a positive spread"),
])
def test_bad_restart_settings_are_one_line_errors(make_cfg, override, message):
    with pytest.raises(InputError, match=message):
        train(make_cfg(override))


def test_restarts_of_a_task_that_logs_in_its_loss(make_cfg, tmp_path):
    """The act populations' task logs its statistics inside its loss: comparing the starts outside Lightning's
    loop must not log; the kept start's checkpoint is the run's."""
    results = train(make_cfg("task.restarts=2", "uq=none", "+trainer.max_steps=2", "data.batch_size=3",
                             "task.eval_lattices=3", experiment="cpm_tcells_mixture"))
    assert len(results["restarts"]["loss"]) == 2 and all(np.isfinite(results["restarts"]["loss"]))
    assert (tmp_path / "checkpoints" / "last.ckpt").exists()
