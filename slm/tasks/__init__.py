"""LightningModules, one per kind of fitting."""

from slm.tasks.base import FittingTask
from slm.tasks.statistics import StatisticsFitting
from slm.tasks.transition import TransitionFitting

__all__ = ["FittingTask", "StatisticsFitting", "TransitionFitting"]
