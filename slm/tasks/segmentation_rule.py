r"""The settings ``experiment=seg_image`` reads off the image itself (``task.level=auto``, ``task.window=auto``).

**Blur.** For a step edge of height ``h`` blurred by a Gaussian of sigma ``s``, the gradient across the edge
integrates to ``h`` and its square to ``h^2 / (2 sqrt(pi) s)``. Summed over the edges of an image whose edge
heights ``h`` are read locally as ``H`` (the range of the image in a box around each pixel):

    s = sum(|grad I| H) / (2 sqrt(pi) sum |grad I|^2)

after a light Gaussian smoothing of sigma ``s_0`` against noise (taken off again in quadrature), over the pixels
whose box holds at least a fifth of the image's largest range (the background's noise elsewhere would bias ``s``
down). It tracks BBBC005's nominal blur ``0.25 F`` on the real images of every level (docs/segmentation.md).

**Level.** A blurred halo pulls the foreground mean ``c_1`` down, so the two-level reconstruction's level
``q = 1/2`` grows the cells; the level rises with the blur:

    q = clip(LEVEL_BASE + LEVEL_SLOPE s, 1/2, LEVEL_MAX)

``LEVEL_BASE`` and ``LEVEL_SLOPE`` are the least-squares line through the best level of synthetic images
(calibration seeds ``100 + F``, never the evaluation images) at each BBBC005 blur level F, fitted with the
window rule below (``python scripts/segmentation_set.py --calibrate``).

**Window.** The local class means must reach past the blurred edge into both classes, and stay within about one
object so that dim and bright neighbours keep their own means:

    window = round(max(WINDOW_PER_RADIUS r, WINDOW_PER_SIGMA s))

with ``r`` the median equivalent radius of the objects of the Otsu threshold (:func:`object_radius`). The two
factors are where the best window sat on the calibration images at 696x520 and at 348x260 (cells twice as small;
docs/segmentation.md). The contact weights and the start measured as flat there and stay at their defaults.
"""

from __future__ import annotations

import numpy as np
from scipy import ndimage
from skimage import filters, measure

#: Light smoothing (px) before measuring the gradient, against pixel noise.
SMOOTHING = 1.0
#: Radius (px) of the box in which an edge's height is read.
RANGE_RADIUS = 25
#: The level rule (module docstring): calibrated by ``scripts/segmentation_set.py --calibrate``.
LEVEL_BASE, LEVEL_SLOPE, LEVEL_MAX = 0.507, 0.0109, 0.7
#: The window rule (module docstring), and its bounds in px.
WINDOW_PER_RADIUS, WINDOW_PER_SIGMA, WINDOW_RANGE = 0.6, 2.0, (3, 50)


def blur_sigma(image: np.ndarray) -> float:
    """The Gaussian blur (sigma, px) of the edges of a gray ``image`` ``(H, W)``; see the module docstring."""
    smooth = ndimage.gaussian_filter(np.asarray(image, dtype=float), SMOOTHING)
    gy, gx = np.gradient(smooth)
    squared = gx ** 2 + gy ** 2
    box = 2 * RANGE_RADIUS + 1
    height = ndimage.maximum_filter(smooth, box) - ndimage.minimum_filter(smooth, box)
    edges = height > 0.2 * height.max()
    total = np.sqrt(np.pi) * 2 * squared[edges].sum()
    if total <= 0:
        return 0.0
    measured = (np.sqrt(squared) * height)[edges].sum() / total
    return float(np.sqrt(max(measured ** 2 - SMOOTHING ** 2, 0.0)))


def level_for_blur(sigma: float) -> float:
    """The reconstruction level ``q`` for an image blurred by ``sigma`` px (module docstring)."""
    return float(np.clip(LEVEL_BASE + LEVEL_SLOPE * sigma, 0.5, LEVEL_MAX))


def object_radius(image: np.ndarray) -> float:
    """The median equivalent radius (px) of the objects (connected regions of more than 20 px) above the Otsu
    threshold of a gray ``image`` ``(H, W)``; 0 if there are none."""
    image = np.asarray(image, dtype=float)
    regions = measure.regionprops(measure.label(image > filters.threshold_otsu(image)))
    areas = [region.area for region in regions if region.area > 20]
    return float(np.sqrt(np.median(areas) / np.pi)) if areas else 0.0


def window_for(sigma: float, radius: float) -> int:
    """The radius (px) of the local class means for blur ``sigma`` and object radius ``radius`` (module docstring)."""
    low, high = WINDOW_RANGE
    return int(np.clip(round(max(WINDOW_PER_RADIUS * radius, WINDOW_PER_SIGMA * sigma)), low, high))


def read_off(image: np.ndarray) -> dict[str, float]:
    """Everything the rule reads off a gray ``image`` ``(H, W)``: ``blur_sigma``, ``object_radius``, and the
    ``level`` and ``window`` it picks."""
    sigma, radius = blur_sigma(image), object_radius(image)
    return {"blur_sigma": sigma, "object_radius": radius, "level": level_for_blur(sigma),
            "window": window_for(sigma, radius)}
