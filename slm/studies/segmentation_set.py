"""The segmentation evaluation set, and the calibration of ``seg_image``'s level rule on images outside it.

The evaluation set (:func:`write_evaluation_set`) is a folder pair ``images/`` and ``masks/`` with the same file
names, so that ``experiment=seg_image data.path=<set>/images data.mask_path=<set>/masks`` fits it end to end:

* ``bbbc005_example.png``: the official BBBC005 example (CC0; Ljosa et al., Nature Methods 2012) and its
  antialiased RGB ground truth;
* ``synthetic_F<F>.tif``: a SIMCEP-style image (16-bit) at each of the 16 BBBC005 blur levels F, seed F, with its
  exact mask written as an instance label image (uint16, one id per connected cell).

:func:`calibrate_level` fits the level rule of :mod:`slm.tasks.segmentation_rule` on synthetic images of seeds
``100 + F``, which the evaluation set never uses.
"""

from __future__ import annotations

import shutil
import tempfile
from collections.abc import Sequence
from pathlib import Path

import numpy as np
from rich.progress import Progress
from skimage import io, measure

from datamodules.images import BBBC005_BLUR, BBBC005_NAME, image_files, synthetic_cells
from slm.io import load_image
from slm.tasks.segmentation_rule import read_off

#: Seeds of the calibration images: ``CALIBRATION_SEED + F``, apart from the evaluation set's seeds ``F``.
CALIBRATION_SEED = 100


def write_evaluation_set(out: str | Path, example_dir: str | Path, blurs: Sequence[int] = BBBC005_BLUR) -> Path:
    """Write the evaluation set (module docstring) into ``out/images`` and ``out/masks``; ``example_dir`` holds the
    BBBC005 example pair. Returns ``out``."""
    out = Path(out)
    images, masks = out / "images", out / "masks"
    images.mkdir(parents=True, exist_ok=True)
    masks.mkdir(parents=True, exist_ok=True)
    example_dir = Path(example_dir)
    shutil.copyfile(example_dir / "synthetic2_in_focus_image.png", images / "bbbc005_example.png")
    shutil.copyfile(example_dir / "synthetic2_ground_truth_image.png", masks / "bbbc005_example.png")
    for blur in blurs:
        image, mask = synthetic_cells(blur=blur, seed=blur)
        name = f"synthetic_F{blur:02d}.tif"
        io.imsave(images / name, np.round(image * 65535).astype(np.uint16), check_contrast=False)
        io.imsave(masks / name, measure.label(mask).astype(np.uint16), check_contrast=False)
    return out


def calibrate_level(levels: Sequence[float] = tuple(np.round(np.arange(0.475, 0.701, 0.025), 3)),
                    blurs: Sequence[int] = BBBC005_BLUR) -> tuple[list[dict], tuple[float, float]]:
    """Fit ``experiment=seg_synthetic`` (``seg_image``'s settings: the window rule) at every level ``q`` on the
    calibration image of every blur level F.

    Returns ``(rows, (base, slope))``: one row per F (``blur``, measured ``sigma``, the best ``level`` and its
    ``dice``, and ``dice_<q>`` for every q), and the least-squares line ``q = base + slope sigma`` through the
    best levels.
    """
    from slm.config import compose_config
    from slm.fit import fit

    rows = []
    with tempfile.TemporaryDirectory() as tmp, Progress() as bar:
        task = bar.add_task("calibrating the level", total=len(blurs) * len(levels))
        for blur in blurs:
            row: dict = {"blur": blur}
            for level in levels:
                cfg = compose_config("experiment=seg_synthetic", f"data.synthetic_blur={blur}",
                                     f"data.seed={CALIBRATION_SEED + blur}", f"task.level={level}", "~logger",
                                     "callbacks.model_checkpoint=null", "callbacks.lr_monitor=null",
                                     "trainer.enable_progress_bar=false", "+trainer.enable_model_summary=false",
                                     f"paths.output_dir={tmp}")
                metrics = fit(cfg)[2]["metrics"]
                row["sigma"] = metrics["blur_sigma"]  # as the run measured it: the same image at every level
                row[f"dice_{level:g}"] = metrics["dice"]
                bar.advance(task)
            best = max(levels, key=lambda q: row[f"dice_{q:g}"])
            rows.append(row | {"level": best, "dice": row[f"dice_{best:g}"]})
    slope, base = np.polyfit([r["sigma"] for r in rows], [r["level"] for r in rows], 1)
    return rows, (float(base), float(slope))


def image_settings(path: str | Path) -> list[dict]:
    """What ``seg_image`` reads off every image of a file or folder (:func:`read_off`), with BBBC005 names also
    the nominal blur ``0.25 F``."""
    rows = []
    for file in image_files(str(path)):
        match = BBBC005_NAME.search(file.name)
        rows.append({"image": file.name, **({"nominal": 0.25 * int(match["blur"])} if match else {}),
                     **read_off(load_image(file))})
    return rows
