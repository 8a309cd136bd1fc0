r"""Segmentation as state fitting: gradient descent on a pixel field whose sign is the mask.

With ``m = H(X_pred)`` (straight-through), ``n`` the number of foreground Moore neighbours, ``N`` the
number of pixels, and ``c_1``, ``c_0`` the mean of ``X_g`` over the current foreground and background:

    l_a = (1/N) sum (1 - m)                               background penalty (area prior)
    l_b = (1/N) sum m (8 - n) / 8                         foreground pixels touching background
    l_c = (1/N) sum (1 - m) n / 8                         background pixels touching foreground
    l_d = (1/N) sum [m (X_g - c_1)^2 + (1 - m)(X_g - c_0)^2 + (2 q - 1) m (c_1 - c_0)^2] / var(X_g)
                                                          reconstruction of X_g from the mask
    L = lambda_a l_a + lambda_b l_b + lambda_c l_c + lambda_d l_d

Flipping pixel i to foreground changes ``l_d`` by ``2 (c_1 - c_0)(c_0 + q (c_1 - c_0) - X_g)`` (over ``N var``): on
its own the reconstruction puts a pixel in the foreground where it is brighter than the level ``q`` of the way
from the background mean to the foreground mean. ``q = 1/2`` is the two-level picture (Chan-Vese); a blurred
image needs ``q > 1/2``, because its blurred halo pulls ``c_1`` down (:mod:`slm.tasks.segmentation_rule`).

With ``window`` set, ``c_1`` and ``c_0`` are local: the means over the foreground and background in
the ``(2 window + 1)^2`` box around each pixel, so dim and bright cells each get their own threshold
(a region-scalable version of the reconstruction; it matters for blurred images).

This is the thesis's loss made consistent: every term is a per-pixel average (so the lambdas do not
depend on the image size), the contact terms count neighbours as fractions, and the reconstruction is
of the image by the two-level picture the mask implies (``c_1`` inside, ``c_0`` outside), scaled by the
image's variance so that it does not depend on contrast. Every term is linear in each ``m_i``, so the
straight-through gradient of a pixel equals the exact change of the loss when that pixel flips; the
thesis's ``sum (X_g - X_pred)^2`` instead anchors the field to the image, and its linearisation lets
the foreground drift away from the image once the contact terms act.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from PIL import Image
from skimage import filters
from torch import Tensor
from torchmetrics.functional.classification import binary_f1_score, binary_jaccard_index

from slm.errors import InputError
from slm.lattice import moore_neighbour_sum
from slm.models.pixel_field import PixelField
from slm.plots import save_strip
from slm.tasks.base import FittingTask
from slm.tasks.segmentation_rule import read_off


def window_sum(x: Tensor, radius: int) -> Tensor:
    """Sum of ``x`` over the ``(2 radius + 1)^2`` box around every pixel (zero outside the image), via
    cumulative sums: O(1) per pixel whatever the radius. ``x``: ``(H, W)``."""
    padded = torch.nn.functional.pad(x, (radius + 1, radius, radius + 1, radius))
    summed = padded.cumsum(0).cumsum(1)
    k = 2 * radius + 1
    return summed[k:, k:] - summed[:-k, k:] - summed[k:, :-k] + summed[:-k, :-k]


def class_means(reference: Tensor, foreground: Tensor, window: int | None) -> tuple[Tensor, Tensor]:
    """Mean of ``reference`` over the foreground and over the background: of the whole image
    (``window=None``), or of the box of radius ``window`` around each pixel."""
    background = 1 - foreground
    inside = (reference * foreground).sum() / foreground.sum().clamp_min(1)
    outside = (reference * background).sum() / background.sum().clamp_min(1)
    if window is None:
        return inside, outside
    # Shrink towards the global means with the weight of a tenth of the box, so that a box with few
    # or no pixels of one class falls back to the image's class mean.
    prior = 0.1 * (2 * window + 1) ** 2
    return ((window_sum(reference * foreground, window) + prior * inside) / (window_sum(foreground, window) + prior),
            (window_sum(reference * background, window) + prior * outside) / (window_sum(background, window) + prior))


def segmentation_loss(mask: Tensor, reference: Tensor, lambdas: tuple[float, float, float, float],
                      window: int | None = None, level: float = 0.5) -> Tensor:
    """``L`` of the module docstring for a straight-through ``mask``, the centred image ``reference`` and the
    level ``q`` (``level``)."""
    lambda_a, lambda_b, lambda_c, lambda_d = lambdas
    n = moore_neighbour_sum(mask)
    inside, outside = class_means(reference, mask.detach(), window)
    l_a = (1 - mask).mean()
    l_b = (mask * (8 - n)).mean() / 8
    l_c = ((1 - mask) * n).mean() / 8
    l_d = (mask * (reference - inside) ** 2 + (1 - mask) * (reference - outside) ** 2
           + (2 * level - 1) * mask * (inside - outside) ** 2).mean() / reference.var()
    return lambda_a * l_a + lambda_b * l_b + lambda_c * l_c + lambda_d * l_d


class SegmentationFitting(FittingTask):
    """Fit a :class:`PixelField` to the data module's image by minimising :func:`segmentation_loss`.

    Logs the loss, the norm of the field's gradient (``grad/field_norm``), the foreground fraction, the
    share of pixels whose mask changed (``train/changed``, which the stopping rule watches: it never
    looks at the ground truth), and with a ground truth Dice and IoU (torchmetrics) every step; every
    ``image_every`` steps, ``image | prediction | ground truth`` to TensorBoard.
    After training, ``blur_sigma`` (the image's measured blur), ``level`` and ``window`` go to
    ``results.json``, and with a ground truth ``dice`` and ``iou``, the Dice of the Otsu and Li
    thresholds (scikit-image; the better polarity of each) as ``dice_otsu`` and ``dice_li``,
    ``dice_gain`` (``dice`` less the better of the two) and ``dice_start`` (the starting mask
    ``X_g > 0``); ``mask.png`` and ``comparison.png`` go to the run folder.

    Args:
        simulator: the :class:`PixelField`, set from the data module's image in ``setup``.
        lambdas: ``(lambda_a, lambda_b, lambda_c, lambda_d)``.
        window: radius in pixels of the local class means, ``None`` for global means, or ``"auto"``: read off
            the image's blur and object size (:mod:`slm.tasks.segmentation_rule`).
        level: the reconstruction level ``q`` in [0, 1], or ``"auto"``: read off the image's blur
            (:mod:`slm.tasks.segmentation_rule`).
    """

    def __init__(self, simulator: PixelField, optimizer,
                 lambdas: tuple[float, float, float, float] = (0.0, 0.05, 0.05, 1.0), window: int | str | None = 20,
                 level: float | str = 0.5, scheduler=None, seed: int = 0, image_every: int = 20, target=None):
        super().__init__(simulator, optimizer, scheduler, seed, target=target)
        if not isinstance(simulator, PixelField):
            raise InputError(f"model: segmentation fits a PixelField (model=pixel_field), got "
                             f"{type(simulator).__name__}")
        lambdas = tuple(float(v) for v in lambdas)
        if len(lambdas) != 4 or min(lambdas) < 0:
            raise InputError(f"task.lambdas: expected four weights >= 0 (a, b, c, d), got {list(lambdas)}")
        if window not in (None, "auto") and not (isinstance(window, int) and window >= 1):
            raise InputError(f"task.window: expected a radius in pixels >= 1, null or auto, got {window!r}")
        if level != "auto" and not (isinstance(level, int | float) and 0 <= level <= 1):
            raise InputError(f"task.level: expected a number in [0, 1] or auto, got {level!r}")
        self.lambdas = lambdas
        self.window = window
        self.level = level
        self.blur: float | None = None
        self.image_every = image_every
        self.previous: Tensor | None = None

    def setup(self, stage: str) -> None:
        image = self.target.image
        if self.simulator.field is None:
            self.simulator.set_image(image)
        read = read_off(image.numpy())
        self.blur = read["blur_sigma"]
        if self.level == "auto":
            self.level = read["level"]
        if self.window == "auto":
            self.window = read["window"]

    def loss(self, batch: tuple[Tensor, Tensor], generator: torch.Generator) -> Tensor:
        image, truth = batch
        mask = self.simulator.mask()
        predicted = mask.detach().bool()
        if self.previous is not None:
            self.log("train/changed", (predicted != self.previous).float().mean(), on_step=False, on_epoch=True)
        self.previous = predicted
        if truth.numel():
            self.log("train/dice", binary_f1_score(predicted, truth), prog_bar=True)
            self.log("train/iou", binary_jaccard_index(predicted, truth))
        if self.tensorboard is not None and self.global_step % self.image_every == 0:
            panels = [image, predicted.float()] + ([truth.float()] if truth.numel() else [])
            self.log_image("segmentation/image | predicted | truth", torch.cat(panels, dim=1))
        return segmentation_loss(mask, self.simulator.reference, self.lambdas, self.window, self.level)

    def on_before_optimizer_step(self, optimizer: torch.optim.Optimizer) -> None:
        super().on_before_optimizer_step(optimizer)
        self.log("grad/field_norm", self.simulator.field.grad.norm())
        self.log("param/foreground_fraction", (self.simulator.field.detach() > 0).float().mean())

    def final_metrics(self) -> dict[str, float]:
        predicted = self.simulator.field.detach() > 0
        metrics = {"foreground_fraction": float(predicted.float().mean()), "blur_sigma": self.blur,
                   "level": float(self.level), "window": self.window}
        truth = self.target.mask.to(predicted.device)
        if truth.numel():
            image = self.target.image.numpy()
            metrics |= {"dice": float(binary_f1_score(predicted, truth)),
                        "iou": float(binary_jaccard_index(predicted, truth)),
                        "dice_start": float(binary_f1_score(torch.from_numpy(image > image.mean()).to(truth.device),
                                                            truth))}
            for name, method in (("otsu", filters.threshold_otsu), ("li", filters.threshold_li)):
                above = torch.from_numpy(image > method(image)).to(truth.device)
                # either polarity, whichever scores higher: the baseline gets the benefit of the doubt
                metrics[f"dice_{name}"] = max(float(binary_f1_score(above, truth)),
                                              float(binary_f1_score(~above, truth)))
            metrics["dice_gain"] = metrics["dice"] - max(metrics["dice_otsu"], metrics["dice_li"])
            if self.tensorboard is not None:
                for name in ("dice", "dice_otsu", "dice_li", "dice_gain"):
                    self.tensorboard.add_scalar(f"final/{name}", metrics[name], self.global_step)
        return metrics

    def save_artifacts(self, out_dir: Path) -> None:
        predicted = (self.simulator.field.detach() > 0).cpu().numpy()
        Image.fromarray((predicted * 255).astype(np.uint8)).save(out_dir / "mask.png")
        panels = [self.target.image.numpy()] + ([self.target.mask.numpy()] if self.target.mask.numel() else [])
        save_strip([*panels, predicted], out_dir / "comparison.png")
