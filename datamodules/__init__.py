"""LightningDataModules for the fitting tasks."""

from datamodules.images import ImageDataModule, RepeatImage
from datamodules.msd import MSDDataModule, RepeatTarget
from datamodules.patterns import PatternDataModule
from datamodules.potts import LatticeStatisticsDataModule, StartingLattices, load_label_stack
from datamodules.si import SITransitionDataModule, TransitionWindows, load_frames

__all__ = ["ImageDataModule", "LatticeStatisticsDataModule", "MSDDataModule", "PatternDataModule", "RepeatImage",
           "RepeatTarget", "SITransitionDataModule", "StartingLattices", "TransitionWindows", "load_frames",
           "load_label_stack"]
