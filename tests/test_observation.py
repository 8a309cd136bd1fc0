"""The microscope's view of simulated cells (slm.observation): a window that cuts tracks where cells leave it,
gaps, short tracks dropped, projections; 3D tracks files; the frame interval rounded to whole MCS; scattered
cells; gradients through tracks with missing points."""

from __future__ import annotations

import json
import logging

import numpy as np
import pytest
import torch

from datamodules.tracks import TrackStatisticsDataModule
from slm.errors import InputError
from slm.io import read_tracks
from slm.models import ActPotts
from slm.observation import Observation, window_bounds
from slm.stats import track_speeds, track_statistics
from tests.conftest import ROOT

TCELLS_3D = str(ROOT / "data" / "celltrackr3d" / "TCells.csv")
TCELLS_2D = str(ROOT / "data" / "celltrackr" / "TCells.csv")


def walker(speed: float, frames: int = 20, start: float = 0.0) -> torch.Tensor:
    """One straight track ``(1, 1, frames, 2)`` along the columns at ``speed`` sites per frame, row 5."""
    t = torch.arange(frames, dtype=torch.float)
    return torch.stack([torch.full_like(t, 5.0), start + speed * t], -1)[None, None]


def rows(observed: torch.Tensor) -> list[np.ndarray]:
    """The observed tracks that have points, each as its column coordinates."""
    tracks = observed.flatten(0, 1)
    return [track[track[:, 1].isfinite(), 1].numpy() for track in tracks if track[:, 1].isfinite().any()]


def test_without_a_window_every_point_is_seen():
    tracks = torch.randn(2, 3, 10, 2).cumsum(2)
    observed = Observation((20, 20))(tracks)
    assert torch.equal(observed, tracks)


def test_leaving_the_window_ends_a_track_and_coming_back_starts_another():
    observation = Observation((10, 10), window=((0.0, 10.0), (2.0, 8.0)))
    seen = rows(observation(walker(1.0)))
    # columns 0..19 fold to 0..9 twice: inside at 2..7 and at 12..17
    assert [track.tolist() for track in seen] == [list(range(2, 8)), list(range(12, 18))]
    assert track_statistics(observation(walker(1.0)), 6)[0, 5] == 0  # no pair spans the time outside: MSD(6) empty


def test_tracks_shorter_than_the_shortest_are_dropped_and_gaps_go_on():
    short = Observation((10, 10), window=((0.0, 10.0), (2.0, 8.0)), min_points=7)
    assert rows(short(walker(1.0))) == []
    gappy = Observation((10, 10), gap_rate=0.3)
    observed = gappy(torch.randn(64, 8, 50, 2), torch.Generator().manual_seed(0))
    missing = 1 - observed[..., 0].isfinite().float().mean()
    assert abs(float(missing) - 0.3) < 0.02
    assert observed.shape == (64, 8, 50, 2)  # a gap does not cut a track


def test_fast_cells_give_short_tracks_through_a_window():
    observation = Observation((100, 100), window=((0.0, 100.0), (30.0, 70.0)))
    lengths = {speed: np.mean([len(t) for t in rows(observation(walker(speed, 200)))]) for speed in (0.5, 2.0)}
    assert lengths[0.5] == pytest.approx(80, abs=1) and lengths[2.0] == pytest.approx(20, abs=1)


def test_a_3d_lattice_is_seen_in_xy():
    tracks = torch.randn(1, 2, 6, 3)
    assert torch.equal(Observation((4, 8, 8), axes=(1, 2))(tracks), tracks[..., 1:])


def test_the_statistics_of_tracks_with_missing_points_keep_a_finite_gradient():
    tracks = (20 + torch.randn(3, 4, 12, 2).cumsum(2)).requires_grad_()
    observed = Observation((40, 40), window=((10.0, 30.0), (10.0, 30.0)), gap_rate=0.2)(
        tracks, torch.Generator().manual_seed(1))
    assert observed.isnan().any()
    statistics = track_statistics(observed, 4)
    speeds, steps = track_speeds(observed)
    (statistics.sum() + speeds.nan_to_num().sum()).backward()
    assert tracks.grad.isfinite().all() and tracks.grad.abs().sum() > 0


@pytest.mark.parametrize(("window", "bounds"), [
    (None, None),
    ([0.5, 20], ((10.0, 30.0), (20.0, 40.0))),
    (["data", 1], ((15.0, 25.0), (0.0, 60.0))),
])
def test_window_widths_from_fractions_sites_or_the_data(window, bounds):
    assert window_bounds(window, (40, 60), extent=(10.0, 5.0)) == bounds


@pytest.mark.parametrize(("window", "extent", "message"), [
    ([0.5], None, "expected 2 widths"),
    ([0.5, 80], None, "does not fit"),
    ([0.5, -1], None, "axis 1"),
    (["data", 0.5], None, "data.path is not set"),
])
def test_bad_windows_fail_with_one_line(window, extent, message):
    with pytest.raises(InputError, match=message) as error:
        window_bounds(window, (40, 60), extent)
    assert "\n" not in str(error.value)


def act_model(**kwargs) -> ActPotts:
    return ActPotts(volume_target=27, surface_target=80, **kwargs)


def test_a_3d_file_is_fitted_in_3d_with_the_depth_of_its_z_range(caplog):
    data = TrackStatisticsDataModule(act_model(), path=TCELLS_3D, size=[64, 48, 48], frames=16,
                                     window=["data", 0.5, 0.5], seconds_per_mcs=3.0)
    with caplog.at_level(logging.WARNING):
        data.setup()
    tracks = read_tracks(TCELLS_3D)
    assert data.mcs_per_frame == 9 and data.frame_residual == pytest.approx(tracks.frame_interval / 3 - 9)
    assert "residual" in caplog.text
    assert torch.allclose(data.target, track_statistics(torch.from_numpy(tracks.positions), 10).float())
    observation = data.task_target().observation
    depth = np.ptp(tracks.positions[..., 2][np.isfinite(tracks.positions[..., 2])])
    assert observation.window[0] == pytest.approx(((64 - depth) / 2, (64 + depth) / 2))
    shortest = int(np.isfinite(tracks.positions[..., 0]).sum(1).min())
    assert observation.axes is None and observation.min_points == shortest


def test_a_3d_file_on_a_2d_lattice_is_projected_and_a_2d_file_on_a_3d_lattice_sees_the_model_in_xy():
    flat = TrackStatisticsDataModule(act_model(), path=TCELLS_3D, size=40)
    flat.setup()
    tracks = read_tracks(TCELLS_3D).positions[..., :2]
    assert torch.allclose(flat.target, track_statistics(torch.from_numpy(tracks), 10).float())
    deep = TrackStatisticsDataModule(act_model(), path=TCELLS_2D, size=[16, 40, 40])
    deep.setup()
    assert deep.task_target().observation.axes == (1, 2)
    with pytest.raises(InputError, match="depth axis needs 3D tracks"):
        TrackStatisticsDataModule(act_model(), path=TCELLS_2D, size=[16, 40, 40], window=["data", 1, 1]).setup()


def test_scattered_cells_fill_the_lattice_differently_in_each_lattice():
    model = act_model(cells=10, placement="scattered")
    state = model.initial_state(4, 40, generator=torch.Generator().manual_seed(0))
    assert (state.volume[:, 1:] == 25).all()
    assert not torch.equal(state.labels[0], state.labels[1])
    packed = act_model(cells=10).initial_state(2, 40)
    assert torch.equal(packed.labels[0], packed.labels[1])
    with pytest.raises(InputError, match="model.placement"):
        act_model(placement="random")


def test_a_windowed_simulated_target_sees_crowded_cells_leave():
    model = act_model(cells=8, placement="scattered", lambda_act=400, max_act=30)
    data = TrackStatisticsDataModule(model, truth={"lambda_act": 400, "max_act": 30}, size=40, window=[0.5, 0.5],
                                     frames=30, lattices=4, burn_in=20, lags=5)
    data.setup()
    target = data.task_target()
    assert target.observation.window == ((10.0, 30.0), (10.0, 30.0))
    steps = target.track_steps[target.track_speeds.isfinite()]
    assert len(steps) > 4 and int(steps.min()) < 30  # some cells left or came in during the recording


def test_a_localisation_error_adds_twice_its_variance_per_coordinate_to_the_msd():
    tracks = torch.randn(16, 32, 30, 2).cumsum(2)
    clean = track_statistics(Observation((1000, 1000))(tracks), 3).mean(0)
    noisy = track_statistics(Observation((1000, 1000), noise=0.5)(tracks, torch.Generator().manual_seed(0)), 3).mean(0)
    assert torch.allclose(noisy[:3] - clean[:3], torch.full((3,), 2 * 2 * 0.25), atol=0.06)
    assert noisy[-1] < clean[-1] - 0.1  # the error's steps anticorrelate: less persistence


def test_the_seed_table_keeps_the_asked_columns_and_their_largest_values(tmp_path):
    import subprocess
    import sys

    for seed, error in ((0, 0.04), (1, 0.07)):
        run = tmp_path / str(seed)
        (run / ".hydra").mkdir(parents=True)
        (run / ".hydra" / "overrides.yaml").write_text(f"- seed={seed}\n")
        (run / "results.json").write_text(json.dumps({"params": {"a": 1.0}, "metrics": {"msd_rel_error": error},
                                                      "converged": True, "steps": 50, "seconds": 3.0}))
    out = subprocess.run([sys.executable, str(ROOT / "scripts" / "summarize.py"), str(tmp_path), "--columns",
                          "msd_rel_error", "converged"], capture_output=True, text=True, check=True).stdout
    assert out.splitlines()[2:] == ["| seed=0 | 0.0400 | True |", "| seed=1 | 0.0700 | True |",
                                    "| **largest** | 0.0700 |  |"]


@pytest.mark.parametrize(("kwargs", "message"), [
    ({"window": [0.5]}, "data.window: expected 2 widths"),
    ({"window": [0.5, 100]}, "data.window: axis 1"),
    ({"noise": -1.0}, "data.noise"),
    ({"gaps": 1.5}, "data.gaps"),
    ({"min_points": 0}, "data.min_points"),
    ({"size": [10, 20, 30, 40]}, "data.size"),
])
def test_bad_observation_settings_fail_with_one_line_before_any_compute(kwargs, message):
    with pytest.raises(InputError, match=message) as error:
        TrackStatisticsDataModule(act_model(), path=TCELLS_2D, **kwargs)
    assert "\n" not in str(error.value)


def test_simulated_tracks_shorter_than_the_datas_shortest_are_refused_before_fitting():
    with pytest.raises(InputError, match="data.frames: simulated tracks of at most 6 points"):
        TrackStatisticsDataModule(act_model(), path=TCELLS_2D, frames=5, lags=3).setup()
