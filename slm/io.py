"""Every file slm reads, each with one-line errors naming the key (or file) and what was expected.

* Tracks CSV (``track_id,t,x,y[,z]``): :func:`read_tracks`.
* Images and masks (TIF, PNG, JPG; 8 or 16 bit; gray, RGB or RGBA): :func:`load_image`, :func:`load_mask`.
* SI frames (``.npz`` ``frames``): :func:`load_frames`; MK patterns (``.npz`` ``pattern``): :func:`load_pattern`.
* Cell labels, planes or volumes (``.npz`` ``labels``, ``cell_types`` and for volumes ``dims = 3``, or a ``.npy``):
  :func:`load_labels`, :func:`load_label_stack`.
"""

from __future__ import annotations

import csv
import logging
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import NamedTuple

import numpy as np
import torch
from skimage import color, io
from torch import Tensor

from slm.errors import InputError

log = logging.getLogger(__name__)

REQUIRED_COLUMNS = ("track_id", "t", "x", "y")


@dataclass
class Tracks:
    """Tracks on a regular frame grid.

    Attributes:
        positions: float array ``(n_tracks, n_frames, D)``, NaN where a track has no point (gaps, and
            frames after its end); frame 0 is each track's first point.
        frame_interval: time between frames, in the file's time unit.
        ids: track ids, in the order of ``positions``.
    """

    positions: np.ndarray
    frame_interval: float
    ids: list[str]

    @property
    def n_frames(self) -> int:
        """Longest track span, in frames (first to last point, inclusive)."""
        present = ~np.isnan(self.positions[..., 0])
        last = present.shape[1] - 1 - np.argmax(present[:, ::-1], axis=1)
        return int(last.max()) + 1


def read_tracks(path: str | Path, tolerance: float = 0.1, key: str = "data.path") -> Tracks:
    """Read a tracks CSV with columns ``track_id,t,x,y[,z]`` (more columns are ignored).

    The frame interval is the median time step within tracks. Every step must be a whole number of
    intervals (a gap of missing frames is fine) within ``tolerance`` of an interval; ``z`` is used
    when every row has it.

    Raises:
        InputError: one line naming the file (and line or track) and what was expected.
    """
    path = Path(path)
    if not path.is_file():
        raise InputError(f"{key}: file not found: {path}")
    with path.open(newline="") as handle:
        reader = csv.DictReader(handle)
        header = [c.strip() for c in reader.fieldnames or []]
        missing = [c for c in REQUIRED_COLUMNS if c not in header]
        if missing:
            raise InputError(f"{key}: {path} is missing column(s) {', '.join(missing)}; expected a header "
                             f"track_id,t,x,y[,z]")
        reader.fieldnames = header
        rows = list(reader)
    has_z = "z" in header and rows and all((r.get("z") or "").strip() for r in rows)
    columns = ["t", "x", "y", "z"] if has_z else ["t", "x", "y"]
    ids, values = [], np.empty((len(rows), len(columns)))
    for i, row in enumerate(rows):
        ids.append(row["track_id"].strip())
        for j, column in enumerate(columns):
            text = (row[column] or "").strip()
            try:
                values[i, j] = float(text)
            except ValueError:
                raise InputError(f"{key}: {path} line {i + 2}, column {column}: {text!r} is not a number") from None
    if not np.isfinite(values).all():
        line = int(np.argwhere(~np.isfinite(values))[0, 0]) + 2
        raise InputError(f"{key}: {path} line {line}: values must be finite numbers")
    if not rows:
        raise InputError(f"{key}: {path} has no rows")

    names, track_of_row, counts = np.unique(np.array(ids), return_inverse=True, return_counts=True)
    by_track_then_time = np.lexsort((values[:, 0], track_of_row))
    blocks = np.split(values[by_track_then_time], np.cumsum(counts)[:-1])
    tracks = dict(zip(names.tolist(), blocks, strict=True))
    for track_id, block in tracks.items():
        if len(block) < 2:
            raise InputError(f"{key}: {path} track {track_id} has a single point; every track needs at least 2")
        if (np.diff(block[:, 0]) <= 0).any():
            raise InputError(f"{key}: {path} track {track_id} has two points at the same time")
    steps = np.concatenate([np.diff(block[:, 0]) for block in tracks.values()])
    interval = float(np.median(steps))
    multiples = steps / interval
    off = np.abs(multiples - np.round(multiples))
    if (off > tolerance).any() or (np.round(multiples) < 1).any():
        bad = float(steps[np.argmax(off)])
        raise InputError(f"{key}: {path} has an irregular frame interval: a step of {bad:g} where steps are "
                         f"multiples of {interval:g} (tolerance {tolerance:g} of an interval)")

    frames = [np.round((block[:, 0] - block[0, 0]) / interval).astype(int) for block in tracks.values()]
    positions = np.full((len(tracks), max(int(f[-1]) for f in frames) + 1, len(columns) - 1), np.nan)
    for i, (block, frame) in enumerate(zip(tracks.values(), frames, strict=True)):
        positions[i, frame] = block[:, 1:]
    return Tracks(positions, interval, list(tracks))


def _read(path: Path, key: str) -> np.ndarray:
    if not path.is_file():
        raise InputError(f"{key}: file not found: {path}")
    try:
        array = np.asarray(io.imread(path))
    except Exception as err:  # the image plugins raise many kinds for a corrupt file
        raise InputError(f"{key}: cannot read {path} as an image ({type(err).__name__})") from None
    if array.size == 0 or array.ndim not in (2, 3) or min(array.shape[:2]) < 2:
        raise InputError(f"{key}: {path} is not a 2-D image (array shape {array.shape})")
    return array


def to_gray(array: np.ndarray) -> np.ndarray:
    """Gray float64 in the image's own units: RGB(A) to luminance (alpha dropped), gray unchanged."""
    array = array.astype(np.float64)
    if array.ndim == 3:
        if array.shape[-1] == 4:
            array = array[..., :3]
        array = color.rgb2gray(array) if array.shape[-1] == 3 else array[..., 0]
    return array


def load_image(path: str | Path, key: str = "data.path") -> np.ndarray:
    """Gray image normalised to [0, 1] (min to max), shape ``(H, W)``; refuses constant images."""
    path = Path(path)
    gray = to_gray(_read(path, key))
    low, high = gray.min(), gray.max()
    if not np.isfinite([low, high]).all() or high <= low:
        raise InputError(f"{key}: {path} is constant (every pixel is {low:g}); there is nothing to segment")
    return (gray - low) / (high - low)


def load_mask(path: str | Path, shape: tuple[int, int], key: str = "data.mask_path",
              threshold: float | None = None) -> np.ndarray:
    """Boolean ground-truth mask of an image of ``shape``.

    * An **instance label image** (an integer image with more than two values that is not an 8-bit intensity
      mask reaching 255; ids 1..n as in the Data Science Bowl, stardist and cellpose data): foreground =
      nonzero.
    * Otherwise (binary, or an 8-bit or RGB intensity mask): foreground where the gray value is at least
      half the mask's maximum, or at least ``threshold`` (``data.mask_threshold``) when given.

    Raises :class:`InputError` (naming ``key``) for a mask of another size, and for a mask with no foreground
    or no background, which would make Dice meaningless.
    """
    path = Path(path)
    raw = _read(path, key)
    gray = to_gray(raw)
    if gray.shape != tuple(shape):
        raise InputError(f"{key}: {path} has size {gray.shape[1]}x{gray.shape[0]} but the image is "
                         f"{shape[1]}x{shape[0]}")
    labels = (threshold is None and raw.ndim == 2 and np.issubdtype(raw.dtype, np.integer)
              and len(np.unique(raw)) > 2 and not (raw.dtype == np.uint8 and raw.max() == 255))
    mask = raw != 0 if labels else gray >= (gray.max() / 2 if threshold is None else threshold)
    if threshold is None and gray.max() <= 0:  # an all-zero mask: nothing is at least half of nothing
        mask = np.zeros(gray.shape, dtype=bool)
    kind = "label image, foreground = nonzero" if labels else "threshold " + (
        f"{threshold:g}" if threshold is not None else f"{gray.max() / 2:g} (half the maximum)")
    if not mask.any() or mask.all():
        raise InputError(f"{key}: {path} has {'no' if not mask.any() else 'only'} foreground ({kind}); "
                         f"expected a mask with both foreground and background")
    log.info("mask %s: %s, %.1f%% foreground", path.name, kind, 100 * mask.mean())
    return mask


def load_frames(path: str | Path, monotone: bool = True) -> Tensor:
    """Read and check observed binary lattice sequences (SI by default).

    The file is an ``.npz`` with key ``frames``: uint8 (or bool) 0/1, shape ``(n_seq, T, H, W)``,
    ``T >= 2``; with ``monotone`` (the SI model) no site may turn from aware (1) back to unaware (0).

    Returns:
        uint8 tensor of shape ``(n_seq, T, H, W)``.

    Raises:
        InputError: a one-line message naming the file and what was expected.
    """
    path = Path(path)
    if not path.is_file():
        raise InputError(f"data.path: file not found: {path}")
    try:
        with np.load(path, allow_pickle=False) as archive:
            files = list(archive.files)
            frames = archive["frames"] if "frames" in files else None
    except (OSError, ValueError, TypeError, zipfile.BadZipFile, EOFError) as err:
        raise InputError(f"data.path: cannot read {path} as an .npz archive ({err})") from err
    if frames is None:
        raise InputError(f"data.path: {path} has no array 'frames' (found: {', '.join(files) or 'nothing'})")
    where = f"data.path: {path}['frames']"
    if frames.ndim != 4:
        raise InputError(f"{where} must have shape (n_seq, T, H, W); got shape {frames.shape}"
                         + (" (wrap a single sequence as frames[None])" if frames.ndim == 3 else ""))
    if frames.shape[0] < 1 or frames.shape[1] < 2 or min(frames.shape[2:]) < 1:
        raise InputError(f"{where} needs at least 1 sequence of at least 2 frames; got shape {frames.shape}")
    if frames.dtype not in (np.uint8, np.bool_):
        raise InputError(f"{where} must be uint8 with values 0/1; got dtype {frames.dtype}")
    frames = torch.from_numpy(frames.astype(np.uint8))
    if frames.max() > 1:
        raise InputError(f"{where} must hold only 0 (unaware) and 1 (aware); found the value {int(frames.max())}")
    if monotone:
        check_no_forgetting(frames, where)
    return frames


def check_no_forgetting(frames: Tensor, where: str) -> None:
    """Raise if any site turns from aware to unaware, which the SI model never does."""
    forgets = frames[:, 1:] < frames[:, :-1]
    if forgets.any():
        seq, t, i, j = (int(v) for v in forgets.nonzero()[0])
        raise InputError(
            f"{where}: {int(forgets.sum())} sites turn from aware (1) to unaware (0), first in sequence {seq} "
            f"between frames {t} and {t + 1} at ({i}, {j}); SI sites stay aware"
        )


def load_pattern(path: str | Path, N: int, key: str = "data.path") -> Tensor:
    """A ``.npz`` with array ``pattern``: counts ``0..N`` of shape ``(2, H, W)`` or ``(B, 2, H, W)``."""
    path = Path(path)
    if not path.is_file():
        raise InputError(f"{key}: file not found: {path}")
    try:
        with np.load(path) as archive:
            if "pattern" not in archive:
                raise InputError(f"{key}: {path} has no array 'pattern' (found: {', '.join(archive.files)})")
            array = archive["pattern"]
    except (OSError, ValueError) as error:
        raise InputError(f"{key}: cannot read {path} as .npz: {error}") from None
    pattern = torch.as_tensor(array, dtype=torch.float32)
    pattern = pattern[None] if pattern.ndim == 3 else pattern
    if pattern.ndim != 4 or pattern.shape[1] != 2:
        raise InputError(f"{key}: {path}['pattern'] must have shape (2, H, W) or (B, 2, H, W), "
                         f"got {tuple(array.shape)}")
    if not (torch.isfinite(pattern).all() and pattern.min() >= 0 and pattern.max() <= N):
        raise InputError(f"{key}: {path}['pattern'] must hold counts in [0, {N}]")
    return pattern


class LabelFile(NamedTuple):
    """What :func:`load_labels` read: ``labels (..., *spatial)`` int64, ``cell_types`` int64 (``(C,)`` or one per
    lattice) and ``dims``, the lattice dimension (2: the last two axes are ``H, W``; 3: the last three ``D, H, W``)."""

    labels: np.ndarray
    cell_types: np.ndarray
    dims: int


def load_labels(path: str | Path, cell_types: list[int] | None = None, key: str = "data.path",
                dims: int | None = None) -> LabelFile:
    """Cell labels and ``cell_types`` from a ``.npz`` (keys ``labels``, ``cell_types``, and ``dims``: 3 for volumes)
    or a ``.npy`` of labels with ``cell_types`` given: integer ids ``0..C-1``, a table ``(C,)`` (or one per lattice,
    ``(L, C)`` for labels ``(L, *spatial)``) with 0 for the medium (id 0) and ``>= 1`` for every cell id.

    The lattice dimension is the file's ``dims``, else the caller's ``dims`` (``data.dims``), else 2 for arrays of up
    to 3 axes; a 4-axis array that says neither is refused, as it could be ``(L, F, H, W)`` planes or ``(F, D, H, W)``
    volumes. One-line errors for anything else."""
    path = Path(path)
    if not path.is_file():
        raise InputError(f"{key}: file not found: {path}")
    try:
        data = np.load(path, allow_pickle=False)
    except Exception as err:  # numpy raises several kinds for a corrupt file
        raise InputError(f"{key}: cannot read {path} as .npz/.npy ({type(err).__name__})") from None
    stored = None
    if isinstance(data, np.ndarray):
        labels, table = data, None
    else:
        with data:
            if "labels" not in data:
                raise InputError(f"{key}: {path} has no array 'labels' (keys: {sorted(data.files)})")
            labels, table = data["labels"], data["cell_types"] if "cell_types" in data.files else None
            if "dims" in data.files:
                stored = data["dims"]
                if stored.shape != () or int(stored) not in (2, 3):
                    raise InputError(f"{key}: {path}: 'dims' must be 2 or 3 (the lattice dimension), got {stored}")
                stored = int(stored)
    if dims is not None and dims not in (2, 3):
        raise InputError(f"{key}: the lattice dimension (data.dims) must be 2 or 3, got {dims}")
    if stored is not None and dims is not None and stored != dims:
        raise InputError(f"{key}: {path} holds {stored}D lattices ('dims'), but {dims}D were asked for (data.dims)")
    dims = stored or dims
    if dims is None:
        if labels.ndim >= 4:
            raise InputError(f"{key}: {path}: 'labels' {labels.shape} could be planes or volumes; add dims=2 or "
                             f"dims=3 to the .npz (or set data.dims)")
        dims = 2
    if table is None:
        if cell_types is None:
            raise InputError(f"{key}: {path} has no 'cell_types' table; add one to the .npz or set data.cell_types "
                             f"(the type of each id, 0 for the medium)")
        table = np.asarray(cell_types)
    table = np.asarray(table)
    axes = "H, W" if dims == 2 else "D, H, W"
    if labels.ndim < dims or labels.size == 0 or not np.issubdtype(labels.dtype, np.integer):
        raise InputError(f"{key}: {path}: 'labels' must be integer ids of shape (..., {axes}), got {labels.shape} "
                         f"{labels.dtype}")
    per_lattice = table.ndim == 2 and labels.ndim == dims + 1 and len(table) == len(labels)
    if not (table.ndim == 1 or per_lattice) or table.size == 0 or not np.issubdtype(table.dtype, np.integer):
        raise InputError(f"{key}: {path}: 'cell_types' must be a 1-d integer table (type of each id), got "
                         f"{table.shape} {table.dtype}")
    if labels.min() < 0 or labels.max() >= table.shape[-1]:
        raise InputError(f"{key}: {path}: label ids must lie in 0..{table.shape[-1] - 1} (the cell_types table), got "
                         f"{labels.min()}..{labels.max()}")
    if (table[..., 0] != 0).any() or (table[..., 1:] < 1).any():
        raise InputError(f"{key}: {path}: cell_types: expected 0 for the medium (id 0) and a type >= 1 for every "
                         f"cell id")
    return LabelFile(labels.astype(np.int64), table.astype(np.int64), dims)


def load_label_stack(path: str | Path, cell_types: list[int] | None = None, key: str = "data.path",
                     dims: int | None = None) -> tuple[np.ndarray, np.ndarray]:
    """``labels (L, F + 1, *spatial)`` and ``cell_types (C,)`` (:func:`load_labels`) of one stack of frames
    ``(F + 1, *spatial)`` or several, with at least 2 frames; ``spatial`` is ``(H, W)`` or ``(D, H, W)``."""
    labels, table, dims = load_labels(path, cell_types, key, dims)
    if table.ndim != 1:
        raise InputError(f"{key}: {path}: expected one 'cell_types' table (C,) for every stack, got {table.shape}")
    if labels.ndim == dims + 1:
        labels = labels[None]
    if labels.ndim != dims + 2 or labels.shape[1] < 2:
        axes = "H, W" if dims == 2 else "D, H, W"
        raise InputError(f"{key}: 'labels' must be integer ids shaped (frames, {axes}) or (stacks, frames, {axes}) "
                         f"with >= 2 frames, got {labels.shape}")
    return labels, table
