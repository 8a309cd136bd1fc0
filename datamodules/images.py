"""Images (and ground-truth masks) for segmentation as state fitting.

Sources, chosen by ``data.path``:

* an image file (TIF, PNG, JPG; 8 or 16 bit; gray, RGB or RGBA), with an optional ``data.mask_path``;
* a folder of images, with an optional folder of masks of the same file names. BBBC005 names
  (``SIMCEPImages_<well>_C<cells>_F<blur>_s<site>_w<stain>.TIF``) fall back to the data set's rule: masks
  exist for F1 only, and the F1 mask of a well column, site and stain holds for every blur level;
* a DIS5K split: ``data.path=<split>`` with ``<split>/im/*.jpg`` and masks in ``<split>/gt/*.png``;
* nothing: a SIMCEP-style synthetic image with its exact mask (:func:`synthetic_cells`).

A folder is fitted one image at a time (:meth:`ImageDataModule.items`, used by :func:`slm.train.train`);
``data.name`` picks one image. Masks: :func:`slm.io.load_mask`.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Iterator
from pathlib import Path

import lightning as L
import numpy as np
import torch
from scipy import ndimage
from skimage.draw import ellipse
from torch import Tensor
from torch.utils.data import DataLoader, IterableDataset

from slm.errors import InputError
from slm.io import load_image, load_mask
from slm.targets import ImageTarget

log = logging.getLogger(__name__)

IMAGE_SUFFIXES = (".tif", ".tiff", ".png", ".jpg", ".jpeg", ".bmp")
BBBC005_NAME = re.compile(
    r"SIMCEPImages_(?P<row>[A-P])(?P<col>\d+)_C(?P<cells>\d+)_F(?P<blur>\d+)_s(?P<site>\d+)_w(?P<stain>\d)"
)


#: The 16 blur levels F of BBBC005 (plate rows A to P; Gaussian sigma 0.25 F px).
BBBC005_BLUR = (1, 4, 7, 10, 14, 17, 20, 23, 26, 29, 32, 35, 39, 42, 45, 48)
#: Sigma (px at 696x520) of the optics of an in-focus BBBC005 image: with it the synthetic F1 image has the blur
#: that :func:`slm.tasks.segmentation_rule.blur_sigma` measures on the real F1 images (docs/segmentation.md).
IN_FOCUS_SIGMA = 1.75


def synthetic_cells(n_cells: int = 30, size: tuple[int, int] = (520, 696), blur: int = 1, noise: float = 0.02,
                    seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """A SIMCEP-style fluorescence image and its exact mask.

    Elliptic cells of random size, orientation and brightness, with a smooth internal texture, on a
    dark background; then a Gaussian blur of sigma ``hypot(IN_FOCUS_SIGMA, 0.25 * blur)`` (the optics and
    BBBC005's F levels) and Gaussian noise. The mask is the cells before blurring, as in BBBC005.

    Returns:
        ``(image, mask)``: float image in [0, 1] and boolean mask, shape ``size``.
    """
    rng = np.random.default_rng(seed)
    height, width = size
    scale = min(height, width) / 260
    image = np.zeros(size)
    mask = np.zeros(size, dtype=bool)
    for _ in range(n_cells):
        radii = rng.uniform(6, 12, size=2) * scale
        centre = rng.uniform([radii.max(), radii.max()], [height - radii.max(), width - radii.max()])
        rows, cols = ellipse(*centre, *radii, shape=size, rotation=rng.uniform(0, np.pi))
        brightness = rng.uniform(0.4, 1.0)
        image[rows, cols] = np.maximum(image[rows, cols], brightness)
        mask[rows, cols] = True
    texture = ndimage.gaussian_filter(rng.normal(size=size), 2 * scale)
    image = image * (1 + 0.5 * texture / texture.std() * 0.3) + 0.03
    sigma = np.hypot(IN_FOCUS_SIGMA, 0.25 * blur) * scale / 2  # scale / 2: the sigmas are for 696x520
    image = ndimage.gaussian_filter(image, sigma) + rng.normal(0, noise, size)
    image = np.clip(image, 0, None)
    return image / image.max(), mask


def _bbbc005_mask(image: Path, mask_dir: Path) -> Path:
    match = BBBC005_NAME.search(image.name)
    if match is None:
        raise InputError(f"data.path: {image.name} is not a BBBC005 name (SIMCEPImages_<well>_C<n>_F<n>_s<n>_w<n>)")
    wanted = f"_C{match['cells']}_F1_s{match['site']}_w{match['stain']}"
    for candidate in sorted(mask_dir.iterdir()):
        found = BBBC005_NAME.search(candidate.name)
        if found and found["col"] == match["col"] and wanted in candidate.name:
            return candidate
    raise InputError(f"data.mask_path: no F1 mask for {image.name} in {mask_dir} "
                     f"(looked for column {match['col']}, {wanted.strip('_')})")


def _folder_mask(image: Path, mask_dir: Path) -> Path:
    """The mask of ``image`` in ``mask_dir``: the same file name, else the same stem with any image suffix, else
    (BBBC005 names) the F1 mask of the same well column, site and stain."""
    if not mask_dir.is_dir():
        raise InputError(f"data.mask_path: {mask_dir} is not a folder; with a folder of images, give the folder "
                         f"of masks (same file names)")
    same = [mask_dir / image.name] + [mask_dir / (image.stem + suffix) for suffix in IMAGE_SUFFIXES]
    found = next((p for p in same if p.is_file()), None)
    if found is not None:
        return found
    if BBBC005_NAME.search(image.name):
        return _bbbc005_mask(image, mask_dir)
    raise InputError(f"data.mask_path: no mask for {image.name} in {mask_dir} (expected the same file name)")


def image_files(path: str, name: str | None = None, layout: str = "auto") -> list[Path]:
    """The images ``data.path`` names (sorted), or the one ``name`` picks from a folder (file name or stem).

    ``layout``: ``auto`` (a file, a DIS5K split if it has ``im/``, else a folder of images) or ``dis5k``
    (a DIS5K split is required).
    """
    root = Path(path)
    if not root.exists():
        raise InputError(f"data.path: not found: {root}")
    is_dis5k = (root / "im").is_dir()
    if layout == "dis5k" and not is_dis5k:
        raise InputError(f"data.path: {root} is not a DIS5K split folder (expected {root}/im/*.jpg and "
                         f"{root}/gt/*.png)")
    if root.is_file():
        return [root]
    folder = root / "im" if is_dis5k else root
    images = sorted(p for p in folder.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES)
    if name is not None:
        images = [p for p in images if p.name == name or p.stem == name][:1]
    if not images:
        raise InputError(f"data.path: no image{f' named {name!r}' if name else ''} in {folder}")
    return images


def resolve(path: str, mask_path: str | None, name: str | None, layout: str = "auto") -> tuple[Path, Path | None]:
    """The image file and its mask file (or None): the first of :func:`image_files` and, for a folder of images,
    its mask in the folder ``mask_path`` (:func:`_folder_mask`), or in a DIS5K split its ``gt/<stem>.png``."""
    image = image_files(path, name, layout)[0]
    root = Path(path)
    if root.is_file():
        if mask_path and Path(mask_path).is_dir():
            raise InputError(f"data.mask_path: {mask_path} is a folder, but data.path is one image; give its mask file")
        return root, Path(mask_path) if mask_path else None
    if (root / "im").is_dir():
        mask = root / "gt" / f"{image.stem}.png"
        if not mask.is_file():
            raise InputError(f"data.path: DIS5K mask not found: {mask}")
        return image, mask
    return image, _folder_mask(image, Path(mask_path)) if mask_path else None


class RepeatImage(IterableDataset):
    """Yields ``(image, mask)`` ``steps`` times: one epoch is ``steps`` gradient steps on the pixel field."""

    def __init__(self, image: Tensor, mask: Tensor, steps: int):
        self.image, self.mask, self.steps = image, mask, steps

    def __iter__(self) -> Iterator[tuple[Tensor, Tensor]]:
        return ((self.image, self.mask) for _ in range(self.steps))


class ImageDataModule(L.LightningDataModule):
    """One image to segment, with its ground-truth mask when there is one.

    Args:
        path: image file, folder of images or DIS5K split folder; ``None`` for a synthetic image.
        mask_path: mask file (with an image file) or folder of masks (with a folder; see :func:`load_mask`).
        mask_threshold: gray value from which a mask pixel is foreground (default: label images nonzero,
            other masks half their maximum).
        name: image file name (or stem) inside a folder; default: every image, one fit each.
        layout: ``auto`` or ``dis5k`` (then ``path`` must be a DIS5K split folder).
        synthetic: with no ``path``, fit a synthetic image (``False``: ``path`` is required).
        synthetic_blur, synthetic_cells, seed: the synthetic image (BBBC005 blur level F).
        steps_per_epoch: gradient steps per epoch (the stopping rule is checked once per epoch).
    """

    def __init__(self, path: str | None = None, mask_path: str | None = None, name: str | None = None,
                 layout: str = "auto", synthetic_blur: int = 1, synthetic_cells: int = 30, seed: int = 0,
                 steps_per_epoch: int = 10, mask_threshold: float | None = None, synthetic: bool = True):
        super().__init__()
        if not path and not synthetic:
            raise InputError("data.path: expected an image file or a folder of images (data.path=...); this "
                             "experiment has no built-in image")
        if layout not in ("auto", "dis5k"):
            raise InputError(f"data.layout: expected auto or dis5k, got {layout!r}")
        if layout == "dis5k" and not path:
            raise InputError("data.path: this experiment needs a DIS5K split folder "
                             "(data.path=<split> with im/ and gt/)")
        self.save_hyperparameters(logger=False)
        self.image: Tensor | None = None
        self.mask: Tensor | None = None
        self.source = "synthetic"

    def items(self) -> list[str]:
        """The image names of a folder, each to be fitted on its own (``data.name=<name>``), after checking that
        each has its mask; empty for one image (a file, ``data.name`` set, or the synthetic image)."""
        hp = self.hparams
        if not hp.path or hp.name is not None or Path(hp.path).is_file():
            return []
        names = [p.name for p in image_files(hp.path, None, hp.layout)]
        for name in names:
            resolve(hp.path, hp.mask_path, name, hp.layout)
        return names

    def setup(self, stage: str | None = None) -> None:
        if self.image is not None:
            return
        hp = self.hparams
        if hp.path:
            image_path, mask_path = resolve(hp.path, hp.mask_path, hp.name, hp.layout)
            image = load_image(image_path)
            mask = load_mask(mask_path, image.shape, threshold=hp.mask_threshold) if mask_path else None
            self.source = str(image_path)
        else:
            image, mask = synthetic_cells(hp.synthetic_cells, blur=hp.synthetic_blur, seed=hp.seed)
        self.image = torch.tensor(image, dtype=torch.float32)
        # An empty mask tensor stands for "no ground truth" so batches keep one type.
        self.mask = torch.tensor(mask) if mask is not None else torch.zeros(0, dtype=torch.bool)
        log.info("image %s: %dx%d%s", self.source, image.shape[1], image.shape[0],
                 "" if mask is None else f", ground truth with {mask.mean():.1%} foreground")

    def task_target(self) -> ImageTarget:
        """The image and its mask (empty without one), for the task."""
        return ImageTarget(image=self.image, mask=self.mask)

    def train_dataloader(self) -> DataLoader:
        return DataLoader(RepeatImage(self.image, self.mask, self.hparams.steps_per_epoch), batch_size=None)
