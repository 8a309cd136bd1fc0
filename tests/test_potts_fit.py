"""Summary fitting of the multi-cell CPM: label stacks as data, one-line errors, results with the truth."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from datamodules.potts import LatticeStatisticsDataModule
from slm.errors import InputError
from slm.io import load_label_stack
from slm.models import CellularPotts
from slm.train import train

CONTACT = [[0, 16, 16], [16, 2, 11], [16, 11, 14]]


def small_model(**kwargs) -> CellularPotts:
    return CellularPotts(CONTACT, type_names=["dark", "light"], volume_target=16, cells=8, **kwargs)


def write_stack(path, frames: int = 3) -> np.ndarray:
    """A (frames, 24, 24) label stack of a simulated lattice and its cell types, as a user would save it."""
    model = small_model()
    state = model.initial_state(1, 24, generator=torch.Generator().manual_seed(0))
    labels = [state.labels[0].numpy()]
    with torch.no_grad():
        for _ in range(frames - 1):
            state = model.rollout(state, 2, torch.Generator().manual_seed(len(labels)))
            labels.append(state.labels[0].numpy())
    np.savez(path, labels=np.stack(labels).astype(np.int32), cell_types=state.cell_types[0].numpy())
    return np.stack(labels)


def test_a_fit_to_simulated_data_reports_the_parameter_error_and_the_schedule(make_cfg, caplog):
    with caplog.at_level("INFO", logger="slm.train"):
        results = train(make_cfg(experiment="cpm_sorting"))
    truth = {"J_dark_light": 11.0, "J_light_light": 14.0, "lambda_volume": 2.0}
    worst = max(abs(results["params"][k] - v) / v for k, v in truth.items())
    assert results["metrics"]["param_rel_error"] == pytest.approx(worst)
    assert results["metrics"]["summary_rel_error"] >= 0
    assert results["schedule"] == "random"
    first = [r.getMessage() for r in caplog.records if r.name == "slm.train"][0]
    assert first.startswith("CellularPotts: Monte Carlo schedule random (uniform random targets")


def test_the_sweep_schedule_is_chosen_on_the_command_line_and_recorded(make_cfg):
    results = train(make_cfg("model.schedule=sweep", "model.engine=torch", "uq=none", experiment="cpm_sorting"))
    assert results["schedule"] == "sweep"
    with pytest.raises(InputError, match="model.schedule: random \\(the field's\\) runs on the compiled engine"):
        train(make_cfg("model.engine=torch", experiment="cpm_sorting"))


def test_a_fit_to_a_users_label_stack(make_cfg, tmp_path):
    write_stack(tmp_path / "cells.npz", frames=3)
    results = train(make_cfg(f"data.path={tmp_path / 'cells.npz'}", "data.mcs_per_frame=2", experiment="cpm_sorting",
                             output=tmp_path / "run"))
    assert "param_rel_error" not in results["metrics"]  # no truth for a user's data
    assert (tmp_path / "run" / "summary.png").is_file()


def test_the_target_comes_from_every_frame_after_the_first(tmp_path):
    labels = write_stack(tmp_path / "cells.npz", frames=4)
    data = LatticeStatisticsDataModule(small_model(), path=str(tmp_path / "cells.npz"), batch_size=2)
    data.setup()
    assert data.frames == 3 and data.target.shape == (3, 6)  # 4 statistics and 2 medium shares
    first, types = data.train_set[0]
    assert torch.equal(first, torch.from_numpy(labels[0]).long())
    assert int(types[0]) == 0


@pytest.mark.parametrize(("content", "message"), [
    ({"labels": np.zeros((3, 8, 8), np.int32)}, "no 'cell_types' table"),
    ({"frames": np.zeros((3, 8, 8), np.int32)}, "no array 'labels'"),
    ({"labels": np.zeros((3, 8, 8), np.float32), "cell_types": np.array([0])}, "integer ids"),
    ({"labels": np.full((3, 8, 8), 5, np.int32), "cell_types": np.array([0, 1])}, "must lie in 0..1"),
    ({"labels": np.zeros((8, 8), np.int32), "cell_types": np.array([0])}, ">= 2 frames"),
])
def test_bad_label_files_get_one_line_errors(tmp_path, content, message):
    np.savez(tmp_path / "bad.npz", **content)
    with pytest.raises(InputError, match=message) as err:
        load_label_stack(tmp_path / "bad.npz")
    assert "\n" not in str(err.value) and "data.path" in str(err.value)


def test_a_npy_stack_takes_its_cell_types_from_the_config(tmp_path):
    np.save(tmp_path / "stack.npy", np.ones((2, 8, 8), np.int64))
    labels, types = load_label_stack(tmp_path / "stack.npy", cell_types=[0, 2])
    assert labels.shape == (1, 2, 8, 8) and types.tolist() == [0, 2]
    with pytest.raises(InputError, match="data.path: .*not found"):
        load_label_stack(tmp_path / "missing.npz")


@pytest.mark.parametrize(("override", "key"), [
    ("model.contact=[[0,16],[15,2]]", "model.contact"),
    ("model.temperature=-1", "model.temperature"),
    ("model.lambda_volume=-2", "model.lambda_volume"),
    ("model.learn=[J_dark_blue]", "model.learn"),
    ("model.cells=1000", "model.cells"),
    ("+task.param_lr={J_dark_dark: 1.0}", "task.param_lr"),
    ("task.weights={speed: 1}", "task.weights"),
    ("data.frames=0", "data.frames"),
])
def test_bad_settings_stop_before_compute_with_one_line(make_cfg, override, key):
    with pytest.raises(InputError, match=key) as err:
        train(make_cfg(override, experiment="cpm_sorting"))
    assert "\n" not in str(err.value)
