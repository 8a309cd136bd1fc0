"""Track fitting of migrating cells: tracks CSVs as data (gaps allowed), the units, one-line errors, a fit that
moves towards a simulated truth, and the run's files."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from datamodules.tracks import TrackStatisticsDataModule
from slm.errors import InputError
from slm.io import read_tracks
from slm.models import ActPotts, CellularPotts
from slm.stats import track_statistics
from slm.train import train
from tests.conftest import ROOT

TCELLS = str(ROOT / "data" / "celltrackr" / "TCells.csv")


def small_model(**kwargs) -> ActPotts:
    return ActPotts(volume_target=16, surface_target=50, **kwargs)


def write_tracks(path, rows: list[str]) -> str:
    path.write_text("track_id,t,x,y,z\n" + "\n".join(rows) + "\n")
    return str(path)


def test_the_target_is_the_tracks_statistics_in_lattice_units(tmp_path):
    rows = [f"{i},{24 * t},{2.0 * t + i},{0.5 * t * t},{''}" for i in range(3) for t in range(14) if (i, t) != (1, 5)]
    data = TrackStatisticsDataModule(small_model(), path=write_tracks(tmp_path / "t.csv", rows), lags=10,
                                     um_per_site=2.0, seconds_per_mcs=4.0)
    data.setup()
    tracks = read_tracks(tmp_path / "t.csv")
    in_um = track_statistics(torch.from_numpy(tracks.positions), 10)
    assert data.mcs_per_frame == 6 and data.frame_interval == 24
    assert torch.allclose(data.target[:10], (in_um[:10] / 4).float())  # MSD in sites^2
    assert torch.isclose(data.target[10], (in_um[10] / 2).float())  # speed in sites per frame
    expected = in_um.clone()
    expected[10] *= 60 / 24  # um per minute
    target = data.task_target()
    assert torch.allclose(target.physical(target.statistics), expected.float(), rtol=1e-5)


@pytest.mark.parametrize(("kwargs", "message"), [
    ({"seconds_per_mcs": 60.0}, "data.seconds_per_mcs"),  # a frame of 24 s would be 0.4 MCS
    ({"frames": 10}, "data.frames"),
    ({"um_per_site": -1.0}, "data.um_per_site"),
    ({"burn_in": -1}, "data.burn_in"),
    ({"path": "missing.csv"}, "data.path"),
])
def test_bad_track_settings_fail_with_one_line(kwargs, message):
    settings = {"path": TCELLS, "lags": 10, "frames": 16} | kwargs
    with pytest.raises(InputError, match=message) as error:
        data = TrackStatisticsDataModule(small_model(), **settings)
        data.setup()
    assert "\n" not in str(error.value)


def test_short_tracks_and_models_without_positions_are_refused(tmp_path):
    short = write_tracks(tmp_path / "short.csv", [f"1,{24 * t},{t},0," for t in range(5)])
    with pytest.raises(InputError, match="data.path: the tracks in .* span at most 5 frames"):
        TrackStatisticsDataModule(small_model(), path=short, lags=10, frames=12).setup()
    with pytest.raises(InputError, match="model: track fitting needs a model with cell positions"):
        TrackStatisticsDataModule(CellularPotts([[0, 16], [16, 2]]), path=short)


def test_the_t_cell_target_is_the_papers_msd():
    data = TrackStatisticsDataModule(small_model(), path=TCELLS)
    data.setup()
    msd_px = data.target[:10] / 10  # the papers' lattice: dx = sqrt(10) um (SPEC 4.2)
    papers = torch.tensor([1.74, 3.99, 6.81, 10.11, 13.48, 16.82, 20.06, 23.30, 26.46, 29.65])
    assert torch.allclose(msd_px, papers, atol=0.006)
    assert data.mcs_per_frame == 8 and 0.2 < float(data.target[-1]) < 0.5


def test_a_fit_to_a_simulated_truth_moves_lambda_act_towards_it(make_cfg, tmp_path):
    """From lambda_act 40% low, 12 gradient steps on small lattices close most of the gap (simulated target)."""
    cfg = make_cfg("data.path=null", "model.learn=[lambda_act]", "model.lambda_act=150", "truth.lambda_act=250",
                   "truth.max_act=20", "model.max_act=20", "data.size=24", "model.volume_target=24",
                   "model.surface_target=70", "data.burn_in=20", "data.frames=12", "data.lags=4",
                   "data.lattices=24", "data.batch_size=6", "data.steps_per_epoch=12", "data.seconds_per_mcs=6",
                   "trainer.max_epochs=1", "task.eval_lattices=6", "task.image_every=100",
                   "+task.param_lr={lambda_act: 0.15}", experiment="cpm_tcells", shrink=False, output=tmp_path)
    results = train(cfg)
    assert results["steps"] == 12
    error = results["metrics"]["param_rel_error"]
    assert error == pytest.approx(abs(results["params"]["lambda_act"] - 250) / 250)
    assert error < 0.2, f"lambda_act {results['params']['lambda_act']:.1f} (start 150, truth 250)"
    written = json.loads((tmp_path / "tracks.json").read_text())
    assert len(written["fitted"]) == len(written["target"]) == 6
    assert (tmp_path / "tracks.png").stat().st_size > 0
    assert np.isfinite(results["metrics"]["msd_rel_error"]) and "speed_rel_error" in results["metrics"]
