"""``scripts/simulate.py`` as a user runs it (every model), and the cell images of :mod:`slm.plots`."""

from __future__ import annotations

import inspect
import os
import subprocess
import sys
from pathlib import Path

import hydra
import numpy as np
import pytest
import torch

from slm.io import load_frames, load_pattern
from slm.plots import BOUNDARY, MEDIUM, PALETTE, cells_rgb

ROOT = Path(__file__).resolve().parents[1]
TINY = ("--size", "24", "model.cells=6", "model.volume_target=9", "--steps", "5")


def simulate(*args: str, cwd: Path, capsys: pytest.CaptureFixture) -> str:
    """``scripts/simulate.py ARGS`` run in this process from ``cwd``; its printout."""
    from scripts.simulate import main

    here = Path.cwd()
    os.chdir(cwd)
    try:
        main(list(args))
    finally:
        os.chdir(here)
    return capsys.readouterr().out


def fails(*args: str, cwd: Path) -> str:
    """The one-line error with which ``scripts/simulate.py ARGS`` stops."""
    from scripts.simulate import main

    with pytest.raises(SystemExit) as stop:
        main([*args, "--png", str(cwd / "bad.png")])
    return str(stop.value)


def test_potts_as_a_user_runs_it(tmp_path: Path):
    env = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1"}
    run = subprocess.run([sys.executable, str(ROOT / "scripts" / "simulate.py"), "potts", *TINY, "--lattices", "2",
                          "--png", "out.png", "--gif", "run.gif", "--gif-every", "2", "--npz", "out.npz"],
                         cwd=tmp_path, env=env, capture_output=True, text=True, timeout=120)
    assert run.returncode == 0, run.stderr
    assert "copy attempts/s" in run.stdout and "heterotypic_fraction" in run.stdout
    assert (tmp_path / "out.png").stat().st_size > 0 and (tmp_path / "run.gif").stat().st_size > 0
    with np.load(tmp_path / "out.npz") as data:
        assert set(data.files) == {"labels", "cell_types", "dims"} and int(data["dims"]) == 2
        labels, cell_types = data["labels"], data["cell_types"]
    assert labels.shape == (2, 24, 24) and labels.dtype == np.int32
    assert cell_types.dtype == np.int32 and cell_types.shape in {(7,), (2, 7)}
    types = cell_types if cell_types.ndim == 1 else cell_types[0]
    assert types[0] == 0 and set(types[1:]) <= {1, 2} and labels.min() >= 0 and labels.max() < 7


def test_potts_restarts_from_its_npz_and_refuses_bad_input_in_one_line(tmp_path: Path, capsys):
    simulate("potts", *TINY, "--lattices", "2", "--npz", "out.npz", cwd=tmp_path, capsys=capsys)
    with np.load(tmp_path / "out.npz") as data:
        labels, cell_types = data["labels"], data["cell_types"]
    out = simulate("potts", *TINY, "--init", "out.npz", "--npz", "again.npz", cwd=tmp_path, capsys=capsys)
    assert "copy attempts/s" in out and not (tmp_path / "again.png").exists(), "numbers without a picture"
    with np.load(tmp_path / "again.npz") as data:
        assert data["labels"].shape == (1, 24, 24), "one lattice, from the last of out.npz"
        assert np.array_equal(data["cell_types"], cell_types if cell_types.ndim == 1 else cell_types[-1])
    np.savez(tmp_path / "no_types.npz", labels=labels[0])
    for args, key in ((("model.contact=[[0,16],[16",), "model.contact"),
                      (("model.contact=[[0,16],[15,2]]",), "model.contact"),
                      (("model.temprature=3",), "model.temprature"),
                      (("--init", str(tmp_path / "no_types.npz")), "cell_types"),
                      (("--size", "7"), "--size")):
        message = fails("potts", *TINY, *args, cwd=tmp_path)
        assert message.startswith("error:") and key in message and "\n" not in message, message
    assert not (tmp_path / "bad.png").exists()


def test_cells_rgb_colours_types_medium_and_boundaries():
    labels = torch.zeros(1, 4, 4, dtype=torch.long)
    labels[0, 1:3, 1:3] = 1
    image = cells_rgb(labels, torch.tensor([[0, 2]]))
    assert image.shape == (1, 4, 4, 3) and image.dtype == np.uint8
    assert tuple(image[0, 0, 0]) == MEDIUM  # medium with medium to its right and below
    assert tuple(image[0, 1, 1]) == tuple(PALETTE[1])  # inside the cell of type 2
    assert tuple(image[0, 2, 2]) == BOUNDARY  # the cell's last site on its row and column
    assert tuple(image[0, 0, 1]) == BOUNDARY  # medium above the cell
    assert tuple(image[0, 3, 3]) == MEDIUM  # medium wrapping round the torus to medium


def test_cells_rgb_takes_one_type_table_for_all_lattices():
    labels = torch.zeros(2, 6, 8, dtype=torch.long)
    labels[1, 2:4, 2:4] = 1
    image = cells_rgb(labels, torch.tensor([0, 1]))
    assert image.shape == (2, 6, 8, 3)
    assert (image[0] == 255).all() and tuple(image[1, 2, 2]) == tuple(PALETTE[0])


ACT = ("--size", "24", "model.volume_target=16", "model.surface_target=50", "--lattices", "2", "data.burn_in=4",
       "data.frames=5", "data.frame_interval=6", "data.lags=3")


def test_act_prints_the_track_statistics_and_saves_what_is_asked(tmp_path: Path, capsys):
    out = simulate("act", *ACT, cwd=tmp_path, capsys=capsys)
    assert "2 tracks of 6 frames (6 s apart, 1 um per site): speed" in out and "persistence" in out
    assert not list(tmp_path.iterdir()), "no file asked for"
    simulate("act", *ACT, "--png", "cells.png", "--gif", "cell.gif", "--npz", "cells.npz", cwd=tmp_path, capsys=capsys)
    assert (tmp_path / "cells.png").stat().st_size > 0 and (tmp_path / "cell.gif").stat().st_size > 0
    with np.load(tmp_path / "cells.npz") as data:
        assert data["tracks_um"].shape == (2, 6, 2) and data["labels"].shape == (2, 24, 24)
    assert fails("act", *ACT, "model.max_act=0.5", cwd=tmp_path) == \
        "error: model.max_act: expected a memory of at least 1 MCS, got 0.5"
    assert fails("act", *ACT, "data.frames=3", cwd=tmp_path) == \
        "error: data.frames: expected more recorded frames than data.lags (3), got 3"


def test_si_and_mk_write_what_training_reads(tmp_path: Path, capsys):
    simulate("si", "truth.beta=0.3", "data.n_sequences=3", "data.n_frames=5", "data.size=16", "--npz", "f.npz",
             cwd=tmp_path, capsys=capsys)
    assert load_frames(tmp_path / "f.npz").shape == (3, 5, 16, 16)
    out = simulate("mk", "--size", "16", "--steps", "20", "--npz", "p.npz", "--png", "p.png", cwd=tmp_path,
                   capsys=capsys)
    assert "pattern score after 20 steps" in out and (tmp_path / "p.png").stat().st_size > 0
    assert load_pattern(tmp_path / "p.npz", 50).shape == (1, 2, 16, 16)


@pytest.mark.parametrize("name", ["potts", "act", "cpm", "si"])
def test_the_model_defaults_are_the_configs(name):
    """A model's Python defaults are its config's, so a script, a notebook and a fit start from the same model."""
    from slm.config import compose_config
    from slm.simulation import GROUPS

    node = compose_config("~experiment", f"model={name}", *GROUPS.get(name, [])).model
    model = hydra.utils.get_class(node._target_)
    numbers = {key: node[key] for key in node if isinstance(node[key], int | float) and not isinstance(node[key], bool)}
    defaults = {key: p.default for key, p in inspect.signature(model).parameters.items() if key in numbers}
    assert defaults == numbers


def test_overrides_reach_the_model():
    from slm.config import build
    from slm.simulation import compose

    act = build(compose("act", ["model.lambda_act=90"]).model)
    assert float(act.lambda_act.detach()) == pytest.approx(90)
