r"""A learnable pixel field whose sign is a binary lattice state (segmentation as state fitting).

The field ``X_pred`` (shape ``(H, W)``) starts as the zero-centred gray image ``X_g = g - mean(g)``
(``g`` normalised to [0, 1]); the lattice state is the mask ``m = H(X_pred)``, differentiated straight
through the threshold.
"""

from __future__ import annotations

from torch import Tensor, nn

from slm.estimators import straight_through_threshold


class PixelField(nn.Module):
    """``X_pred`` as an ``nn.Parameter``; :meth:`forward` returns the mask ``H(X_pred)`` (straight-through).

    Args:
        image: gray image in [0, 1], shape ``(H, W)``.
    """

    def __init__(self, image: Tensor):
        super().__init__()
        reference = image - image.mean()
        self.register_buffer("reference", reference)
        self.field = nn.Parameter(reference.clone())

    def forward(self) -> Tensor:
        return straight_through_threshold(self.field)
