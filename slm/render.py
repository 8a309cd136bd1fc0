"""Pictures of Cellular Potts lattices, and the ``.npz`` files of their cells.

:func:`cells_rgb` colours every site by the type of its cell (:data:`PALETTE`; the medium white) and
draws cell boundaries dark grey; :func:`save_png` puts lattices side by side and :func:`save_gif`
animates frames, both scaled up without smoothing. :func:`load_cells` reads and checks the
``labels (H, W)`` and ``cell_types (C,)`` arrays of a ``.npz`` file.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from torch import Tensor

from slm.errors import InputError

#: Colours of cell types ``1, 2, ...`` (cycled): matplotlib's ``tab10`` without its grey.
PALETTE = np.array([(31, 119, 180), (255, 127, 14), (44, 160, 44), (214, 39, 40), (148, 103, 189),
                    (140, 86, 75), (227, 119, 194), (188, 189, 34), (23, 190, 207)], dtype=np.uint8)
MEDIUM = (255, 255, 255)
BOUNDARY = (64, 64, 64)
#: Colour of the gap between lattices shown side by side.
GAP = (160, 160, 160)


def cells_rgb(labels: Tensor, cell_types: Tensor) -> np.ndarray:
    """``(B, H, W, 3)`` uint8 images of lattices ``labels (B, H, W)`` whose ids have types ``cell_types
    (B, C)`` (or ``(C,)``): type ``k >= 1`` in ``PALETTE[(k - 1) % 9]``, the medium (type 0) white, and
    :data:`BOUNDARY` at every site whose right or lower neighbour (on the torus) has another id."""
    labels = torch.as_tensor(labels).long().cpu()
    if labels.ndim == 2:
        labels = labels[None]
    cell_types = torch.as_tensor(cell_types).long().cpu().expand(labels.shape[0], -1)
    types = cell_types.gather(1, labels.flatten(1)).view_as(labels).numpy()
    colours = np.concatenate([np.array([MEDIUM], dtype=np.uint8),
                              PALETTE[np.arange(max(int(types.max()), 1)) % len(PALETTE)]])
    image = colours[types]
    edge = (labels != torch.roll(labels, -1, 2)) | (labels != torch.roll(labels, -1, 1))
    image[edge.numpy()] = BOUNDARY
    return image


def _scaled(image: np.ndarray, scale: int) -> np.ndarray:
    return image.repeat(scale, 0).repeat(scale, 1)


def save_png(images: np.ndarray, path: str | Path, scale: int = 4, gap: int = 4) -> None:
    """Save ``images (B, H, W, 3)`` uint8 side by side, each pixel ``scale x scale``, with ``gap`` pixels
    of :data:`GAP` between them."""
    parts = []
    for i, image in enumerate(images):
        if i:
            parts.append(np.full((image.shape[0] * scale, gap, 3), GAP, dtype=np.uint8))
        parts.append(_scaled(image, scale))
    Image.fromarray(np.concatenate(parts, 1)).save(path)


def save_gif(frames: Sequence[np.ndarray], path: str | Path, scale: int = 4, duration: int = 100) -> None:
    """Save ``frames``, each ``(H, W, 3)`` uint8, as a looping GIF showing each for ``duration`` ms."""
    images = [Image.fromarray(_scaled(frame, scale)) for frame in frames]
    images[0].save(path, save_all=True, append_images=images[1:], duration=duration, loop=0)


def load_cells(path: str | Path) -> tuple[Tensor, Tensor]:
    """``labels (H, W)`` and ``cell_types (C,)`` (long) from the ``.npz`` file ``path``: integer arrays,
    ids ``0..C-1``, ``cell_types[0] = 0`` (the medium) and ``>= 1`` for cells. Errors name the file and key."""
    try:
        with np.load(path, allow_pickle=False) as data:
            arrays = {key: data[key] for key in ("labels", "cell_types") if key in data.files}
    except (OSError, ValueError) as err:
        raise InputError(f"{path}: cannot read it as .npz ({err})") from None
    for key, ndim, shape in (("labels", 2, "(H, W)"), ("cell_types", 1, "(C,)")):
        if key not in arrays:
            raise InputError(f"{path}: no '{key}' array (expected labels (H, W) and cell_types (C,))")
        array = arrays[key]
        if array.ndim != ndim or not np.issubdtype(array.dtype, np.integer):
            raise InputError(f"{path}: {key}: expected integers of shape {shape}, got {array.shape} {array.dtype}")
    labels, cell_types = arrays["labels"], arrays["cell_types"]
    if labels.size == 0 or cell_types.size == 0 or labels.min() < 0 or labels.max() >= len(cell_types):
        raise InputError(f"{path}: labels: expected ids in 0..{len(cell_types) - 1} (the cell_types table)")
    if cell_types[0] != 0 or (cell_types[1:] < 1).any():
        raise InputError(f"{path}: cell_types: expected 0 for the medium (id 0) and a type >= 1 for every cell id")
    return torch.from_numpy(labels.astype(np.int64)), torch.from_numpy(cell_types.astype(np.int64))
