r"""A learnable pixel field whose sign is a binary lattice state (segmentation as state fitting).

The field ``X_pred`` (shape ``(H, W)``) starts as the zero-centred gray image ``X_g = g - mean(g)``
(``g`` normalised to [0, 1]); the lattice state is the mask ``m = H(X_pred)``, differentiated through
the estimator's threshold (the identity straight-through by default).
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from slm.errors import InputError
from slm.estimators import Estimator, make_estimator
from slm.models.base import Simulator


class PixelField(Simulator):
    """``X_pred`` as an ``nn.Parameter``, set from an image by :meth:`set_image`; :meth:`mask` is ``H(X_pred)``.

    The state fitted here is the field itself, so :meth:`transition` ignores its input state and
    returns the mask.

    Args:
        image: gray image in [0, 1], shape ``(H, W)``; ``None`` to set it later with :meth:`set_image`
            (the segmentation task does, from its data module).
        estimator: an :class:`slm.estimators.Estimator` or its name, for the threshold.
    """

    def __init__(self, image: Tensor | None = None, estimator: Estimator | str = "ste"):
        super().__init__()
        self.estimator = make_estimator(estimator)
        if not self.estimator.pathwise:
            raise InputError("estimator: the pixel field is deterministic, so the score estimator gives it no "
                             "gradient; use ste or gumbel")
        self.register_buffer("reference", None)
        self.register_parameter("field", None)
        if image is not None:
            self.set_image(image)

    def set_image(self, image: Tensor) -> None:
        """Start the field at the zero-centred ``image`` ``(H, W)``."""
        self.reference = image - image.mean()
        self.field = nn.Parameter(self.reference.clone())

    def transition(self, state: Tensor | None, prepared: tuple, generator: torch.Generator | None = None) -> Tensor:
        return self.mask()

    def mask(self) -> Tensor:
        """``H(X_pred)``, ``(H, W)``, with the estimator's threshold gradient."""
        if self.field is None:
            raise InputError("PixelField: no image set; call set_image(image) first")
        return self.estimator.threshold(self.field)
