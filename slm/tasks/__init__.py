"""LightningModules, one per kind of fitting; each depends only on the simulator contract."""

from slm.tasks.base import FittingTask
from slm.tasks.segmentation import SegmentationFitting
from slm.tasks.stability import PatternTest, StabilityFitting
from slm.tasks.statistics import StatisticsFitting
from slm.tasks.summary import SummaryFitting
from slm.tasks.tracks import TrackFitting
from slm.tasks.transition import TransitionFitting

__all__ = ["FittingTask", "PatternTest", "SegmentationFitting", "StabilityFitting", "StatisticsFitting",
           "SummaryFitting", "TrackFitting", "TransitionFitting"]
