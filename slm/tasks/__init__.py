"""LightningModules, one per kind of fitting."""

from slm.tasks.base import FittingTask
from slm.tasks.transition import TransitionFitting

__all__ = ["FittingTask", "TransitionFitting"]
