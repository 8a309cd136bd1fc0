from pathlib import Path

import numpy as np
import pytest
import torch

from datamodules.si import SITransitionDataModule
from slm.errors import InputError
from slm.io import load_frames


def write(path: Path, **arrays) -> Path:
    np.savez(path, **arrays)
    return path


def good_frames(n_seq: int = 2, t: int = 4, h: int = 9, w: int = 7) -> np.ndarray:
    frames = np.zeros((n_seq, t, h, w), dtype=np.uint8)
    frames[:, :, 4, 3] = 1
    frames[:, 2:, 4, 4] = 1
    return frames


def test_load_frames_accepts_any_lattice_size(tmp_path):
    frames = load_frames(write(tmp_path / "f.npz", frames=good_frames()))
    assert frames.shape == (2, 4, 9, 7) and frames.dtype == torch.uint8


@pytest.mark.parametrize(
    ("arrays", "message"),
    [
        ({"frame": good_frames()}, r"has no array 'frames' \(found: frame\)"),
        ({"frames": good_frames()[0]}, r"must have shape \(n_seq, T, H, W\); got shape \(4, 9, 7\) \(wrap"),
        ({"frames": good_frames(t=1)}, "at least 2 frames"),
        ({"frames": good_frames().astype(np.float32)}, "must be uint8 with values 0/1; got dtype float32"),
        ({"frames": good_frames() * 255}, r"must hold only 0 \(unaware\) and 1 \(aware\); found the value 255"),
        ({"frames": good_frames()[:, ::-1]}, r"sites turn from aware \(1\) to unaware \(0\), first in sequence 0 "
                                             r"between frames 1 and 2 at \(4, 4\)"),
    ],
)
def test_bad_frames_give_one_line_errors(tmp_path, arrays, message):
    path = write(tmp_path / "bad.npz", **arrays)
    with pytest.raises(InputError, match=message) as err:
        load_frames(path)
    assert "\n" not in str(err.value) and str(path) in str(err.value)


def test_missing_and_corrupt_files(tmp_path):
    with pytest.raises(InputError, match="data.path: file not found"):
        load_frames(tmp_path / "nope.npz")
    corrupt = tmp_path / "corrupt.npz"
    corrupt.write_bytes(b"PK\x03\x04 not really a zip")
    with pytest.raises(InputError, match="cannot read .* as an .npz archive"):
        load_frames(corrupt)
    npy = tmp_path / "frames.npy"
    np.save(npy, good_frames())
    with pytest.raises(InputError, match="as an .npz archive"):
        load_frames(npy)


def test_sliding_windows_and_split(tmp_path):
    frames = np.random.default_rng(0).random((3, 5, 8, 8)) < 0.1
    frames = np.maximum.accumulate(frames, axis=1).astype(np.uint8)
    dm = SITransitionDataModule(path=str(write(tmp_path / "f.npz", frames=frames)), batch_size=4, val_fraction=0.25)
    dm.setup()
    assert len(dm.train_set) + len(dm.val_set) == 3 * 4 and len(dm.val_set) == 3
    pairs = {tuple(i.tolist()) for i in torch.cat([dm.train_set.index, dm.val_set.index])}
    assert pairs == {(s, t) for s in range(3) for t in range(4)}
    x, y = next(iter(dm.train_dataloader()))
    assert x.shape == (4, 8, 8) and x.dtype == torch.uint8
    s, t = dm.train_set.index[0].tolist()
    x0, y0 = dm.train_set[0]
    assert torch.equal(x0, torch.from_numpy(frames[s, t])) and torch.equal(y0, torch.from_numpy(frames[s, t + 1]))


def test_reference_data_follow_paper_settings_and_own_seed():
    low = SITransitionDataModule(beta=0.2, size=16)
    low.setup()
    assert low.frames.shape == (100, 50, 16, 16)
    high = SITransitionDataModule(beta=0.8, size=16)
    high.setup()
    assert high.frames.shape == (200, 30, 16, 16)
    torch.manual_seed(123)
    again = SITransitionDataModule(beta=0.2, size=16)
    again.setup()
    assert torch.equal(low.frames, again.frames)


@pytest.mark.parametrize(
    ("kwargs", "key"),
    [
        ({"beta": 1.2}, "truth.beta"),
        ({"batch_size": 0}, "data.batch_size"),
        ({"val_fraction": 1.0}, "data.val_fraction"),
    ],
)
def test_bad_settings(kwargs, key):
    with pytest.raises(InputError, match=key):
        SITransitionDataModule(**kwargs)
