"""``scripts/simulate.py potts`` and ``act`` as a user runs them, and the images of :mod:`slm.render`."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import torch

from slm.render import BOUNDARY, MEDIUM, PALETTE, cells_rgb

ROOT = Path(__file__).resolve().parents[1]
TINY = ("--size", "24", "24", "--cells", "6", "--volume", "9", "--mcs", "5")


def start(*args: str, cwd: Path) -> subprocess.Popen:
    """Start ``python scripts/simulate.py potts ARGS`` in ``cwd`` (on the tiny lattice)."""
    env = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1"}
    return subprocess.Popen([sys.executable, str(ROOT / "scripts" / "simulate.py"), "potts", *TINY, *args], cwd=cwd,
                            env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def finish(process: subprocess.Popen) -> subprocess.CompletedProcess:
    stdout, stderr = process.communicate(timeout=120)
    return subprocess.CompletedProcess(process.args, process.returncode, stdout, stderr)


def test_potts_writes_png_gif_npz_and_restarts_from_it(tmp_path: Path):
    run = finish(start("--lattices", "2", "--png", "out.png", "--gif", "run.gif", "--gif-every", "2",
                       "--npz", "out.npz", cwd=tmp_path))
    assert run.returncode == 0, run.stderr
    assert "copy attempts/s" in run.stdout and "heterotypic_fraction" in run.stdout
    assert (tmp_path / "out.png").stat().st_size > 0 and (tmp_path / "run.gif").stat().st_size > 0
    with np.load(tmp_path / "out.npz") as data:
        assert set(data.files) == {"labels", "cell_types"}
        labels, cell_types = data["labels"], data["cell_types"]
    assert labels.shape == (2, 24, 24) and labels.dtype == np.int32
    assert cell_types.dtype == np.int32 and cell_types.shape in {(7,), (2, 7)}
    types = cell_types if cell_types.ndim == 1 else cell_types[0]
    assert types[0] == 0 and set(types[1:]) <= {1, 2} and labels.min() >= 0 and labels.max() < 7

    # The restart and the failures run at once (each process spends most of its time importing torch).
    np.savez(tmp_path / "init.npz", labels=labels[0], cell_types=types)
    np.savez(tmp_path / "no_types.npz", labels=labels[0])
    again = start("--init", "init.npz", "--png", "again.png", "--npz", "again.npz", cwd=tmp_path)
    failures = [(key, start(*args, "--png", f"bad{i}.png", cwd=tmp_path)) for i, (args, key) in enumerate((
        (("--contact", "[[0, 16], [16"), "--contact"),
        (("--contact", "[[0, 16], [15, 2]]"), "--contact"),
        (("--init", "no_types.npz"), "cell_types")))]
    again = finish(again)
    assert again.returncode == 0, again.stderr
    with np.load(tmp_path / "again.npz") as data:
        assert data["labels"].shape == (1, 24, 24) and np.array_equal(data["cell_types"], types)
    for key, process in failures:
        failed = finish(process)
        lines = failed.stderr.strip().splitlines()
        assert failed.returncode != 0
        assert len(lines) == 1 and lines[0].startswith("error:") and key in lines[0], failed.stderr
    assert not list(tmp_path.glob("bad*.png"))

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


def run_act(*args: str, cwd: Path) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1"}
    tiny = ("--size", "24", "--volume", "16", "--surface-target", "50", "--lattices", "2", "--burn-in", "4",
            "--frames", "5", "--mcs-per-frame", "2", "--lags", "3")
    return subprocess.run([sys.executable, str(ROOT / "scripts" / "simulate.py"), "act", *tiny, *args], cwd=cwd,
                          env=env, capture_output=True, text=True, timeout=120)


def test_act_prints_the_track_statistics_and_saves_images(tmp_path: Path):
    run = run_act("--png", "cells.png", "--gif", "cell.gif", cwd=tmp_path)
    assert run.returncode == 0, run.stderr
    assert "2 tracks of 6 frames (6 s apart, 1 um per site): speed" in run.stdout and "persistence" in run.stdout
    assert (tmp_path / "cells.png").stat().st_size > 0 and (tmp_path / "cell.gif").stat().st_size > 0


def test_act_refuses_bad_options_with_one_line(tmp_path: Path):
    run = run_act("--png", "cells.png", "--max-act", "0.5", cwd=tmp_path)
    assert run.returncode != 0 and run.stderr.strip().splitlines() == [
        "error: --max-act: expected a memory of at least 1 MCS, got 0.5"]
    run = run_act("--png", "cells.png", "--frames", "3", cwd=tmp_path)
    assert "error: --frames: expected more frames than --lags (3), got 3" in run.stderr
