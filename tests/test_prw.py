import json

import numpy as np
import pytest
import torch
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

from slm.errors import InputError
from slm.io import read_tracks
from slm.models.persistent_walk import PersistentRandomWalk
from slm.stats import track_msd, walker_msd
from slm.train import train
from tests.conftest import ROOT, run_cli

HEADER = "track_id,t,x,y,z\n"


def write_csv(path, text):
    path.write_text(text)
    return path


def test_track_msd_by_hand_with_a_gap(tmp_path):
    # track a: frames 0,1,2 at (0,0),(1,0),(1,2); track b: frames 0,2,3 (frame 1 missing) at (0,0),(2,2),(3,2)
    csv = write_csv(tmp_path / "t.csv", HEADER + "a,0,0,0,\na,24,1,0,\na,48,1,2,\nb,100,0,0,\nb,148,2,2,\nb,172,3,2,\n")
    tracks = read_tracks(csv)
    assert tracks.frame_interval == 24 and tracks.positions.shape == (2, 4, 2) and tracks.n_frames == 4
    # lag 1: a 1, 4; b 1 -> 2. lag 2: a 5; b 8 -> 6.5. lag 3: b 13.
    np.testing.assert_allclose(track_msd(tracks, 3), [2.0, 6.5, 13.0])


def test_z_is_used_when_every_row_has_it(tmp_path):
    csv = write_csv(tmp_path / "t.csv", HEADER + "1,0,0,0,0\n1,10,0,0,2\n1,20,0,0,4\n")
    tracks = read_tracks(csv)
    assert tracks.positions.shape[-1] == 3
    np.testing.assert_allclose(track_msd(tracks, 2), [4.0, 16.0])


def test_rows_in_any_order_and_real_data_frame_interval():
    tracks = read_tracks(ROOT / "data" / "celltrackr" / "TCells.csv")
    assert tracks.frame_interval == 24.0 and len(tracks.ids) == 199
    # SPEC 4.2: T cells, lags 1..3 in px^2 with dx = sqrt(10) um
    np.testing.assert_allclose(track_msd(tracks, 3) / 10, [1.74, 3.99, 6.81], atol=0.005)


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("track_id,t,x\n1,0,0\n1,1,1\n", "is missing column\\(s\\) y; expected a header track_id,t,x,y"),
        (HEADER + "1,0,0,0,\n1,24,abc,0,\n", "line 3, column x: 'abc' is not a number"),
        (HEADER + "1,0,0,0,\n1,24,1,0,\n2,0,5,5,\n", "track 2 has a single point"),
        (HEADER + "1,0,0,0,\n1,24,1,0,\n1,48,1,0,\n1,85,1,1,\n", "irregular frame interval: a step of 37 where steps "
                                                                 "are multiples of 24"),
        (HEADER + "1,0,0,0,\n1,24,1,0,\n1,24,1,1,\n", "two points at the same time"),
    ],
)
def test_bad_tracks_give_one_line_errors(tmp_path, text, message):
    path = write_csv(tmp_path / "bad.csv", text)
    with pytest.raises(InputError, match=message) as err:
        read_tracks(path)
    assert "\n" not in str(err.value) and str(path) in str(err.value)


def test_too_few_frames_for_the_lags_and_missing_file(tmp_path):
    tracks = read_tracks(write_csv(tmp_path / "t.csv", HEADER + "1,0,0,0,\n1,24,1,0,\n1,48,1,1,\n"))
    with pytest.raises(InputError, match="data.lags: the tracks span at most 3 frames, too few for 10 lags"):
        track_msd(tracks, 10)
    with pytest.raises(InputError, match="data.path: file not found"):
        read_tracks(tmp_path / "none.csv")


def test_walker_msd_matches_definition():
    positions = torch.randn(5, 7, 2, generator=torch.Generator().manual_seed(0))
    msd = walker_msd(positions, 3)
    assert msd.shape == (5, 3)
    for k in (1, 2, 3):
        pairs = [((positions[b, t + k] - positions[b, t]) ** 2).sum() for b in range(5) for t in range(7 - k)]
        assert msd[:, k - 1].mean().item() == pytest.approx(np.mean(pairs), rel=1e-5)
        assert msd[2, k - 1].item() == pytest.approx(np.mean(pairs[2 * (7 - k):3 * (7 - k)]), rel=1e-5)


@pytest.mark.parametrize(("p_center", "p_resample", "mcs", "dx"), [(0.2, 0.1, 1, 1.0), (0.6, 0.5, 2, 3.0)])
def test_simulated_msd_matches_closed_form(p_center, p_resample, mcs, dx):
    walk = PersistentRandomWalk(p_center, p_resample, mcs_per_frame=mcs, dx=dx)
    with torch.no_grad():
        simulated = walk.msd(100_000, 10, torch.Generator().manual_seed(0))
        expected = walk.expected_msd(10)
    torch.testing.assert_close(simulated, expected, rtol=0.02, atol=0)


def test_positions_move_at_most_one_site_per_axis_per_mcs():
    walk = PersistentRandomWalk(0.3, 0.4, mcs_per_frame=2, dx=2.5)
    with torch.no_grad():
        positions = walk.walk(1000, 6, torch.Generator().manual_seed(0)) / 2.5
    steps = positions.diff(dim=1)
    assert positions.shape == (1000, 7, 2) and (positions[:, 0] == 0).all()
    assert steps.abs().max() <= 2 and torch.equal(steps, steps.round())


def test_gumbel_gives_both_parameters_a_gradient_and_ste_cannot_see_p_center():
    target = torch.linspace(1, 20, 10)
    for name, center_has_grad in (("gumbel", True), ("ste", False)):
        walk = PersistentRandomWalk(0.5, 0.5, estimator=name)
        ((walk.msd(500, 10, torch.Generator().manual_seed(0)) - target) ** 2).sum().backward()
        grads = {n: walk.parametrizations[n].original.grad for n in ("p_center", "p_resample")}
        assert grads["p_resample"].abs() > 0
        assert (grads["p_center"].abs() > 0) == center_has_grad


@pytest.mark.parametrize(("kwargs", "key"), [({"mcs_per_frame": 0}, "model.mcs_per_frame"), ({"dx": -1.0}, "model.dx"),
                                             ({"p_center": 1.0}, "model.p_center")])
def test_bad_model_settings(kwargs, key):
    with pytest.raises(InputError, match=key):
        PersistentRandomWalk(**kwargs)


def test_prw_synthetic_run_writes_results_curves_and_figures(make_cfg, tmp_path):
    results = train(make_cfg("trainer.max_epochs=6", "task.optimizer.lr=0.1", experiment="prw_synthetic"))
    assert set(results["params"]) == {"p_center", "p_resample"}
    assert abs(results["params"]["p_center"] - 0.2) < 0.1 and abs(results["params"]["p_resample"] - 0.1) < 0.1
    assert 0 <= results["metrics"]["msd_rel_error"] < 0.15
    curves = json.loads((tmp_path / "msd.json").read_text())
    assert len(curves["target"]) == len(curves["fitted"]) == 10
    assert (tmp_path / "msd.png").is_file()
    events = EventAccumulator(str(tmp_path / "tensorboard"), size_guidance={"images": 0}).Reload()
    assert {"param/p_center", "param/p_resample", "grad/p_center", "grad/p_resample"} <= set(events.Tags()["scalars"])
    assert "msd" in events.Tags()["images"]


def test_cli_fits_tracks_with_gaps(tmp_path):
    rng = np.random.default_rng(0)
    walk = PersistentRandomWalk(0.3, 0.3, dx=2.0)
    with torch.no_grad():
        positions = walk.walk(300, 30, torch.Generator().manual_seed(1)).numpy()
    rows = []
    for track in range(300):
        keep = np.sort(rng.choice(31, size=24, replace=False))  # drop frames: gaps inside tracks
        rows += [f"c{track},{30.0 * k + 7},{positions[track, k, 0]},{positions[track, k, 1]}" for k in keep]
    rng.shuffle(rows)
    csv = write_csv(tmp_path / "tracks.csv", "track_id,t,x,y\n" + "\n".join(rows) + "\n")
    out = tmp_path / "run"
    proc = run_cli("experiment=prw_tcells", f"data.path={csv}", "model.dx=2.0", f"hydra.run.dir={out}",
                   "debug=msd", "trainer.max_epochs=4")
    assert proc.returncode == 0, proc.stderr[-2000:]
    results = json.loads((out / "results.json").read_text())
    assert results["metrics"]["msd_rel_error"] < 0.1
    assert json.loads((out / "msd.json").read_text())["frame_interval"] == 30.0


def test_cli_bad_tracks_is_one_line(tmp_path):
    csv = write_csv(tmp_path / "bad.csv", "track,t,x,y\n1,0,0,0\n")
    proc = run_cli("experiment=prw_tcells", f"data.path={csv}", f"hydra.run.dir={tmp_path / 'run'}")
    assert proc.returncode != 0
    assert proc.stderr.strip() == f"error: data.path: {csv} is missing column(s) track_id; expected a header " \
                                  "track_id,t,x,y[,z]"
