"""LightningDataModules for the fitting tasks."""

from datamodules.images import ImageDataModule, RepeatImage
from datamodules.msd import MSDDataModule, RepeatTarget
from datamodules.patterns import PatternDataModule
from datamodules.potts import LatticeStatisticsDataModule, StartingLattices, lattice_loader
from datamodules.si import SITransitionDataModule, TransitionWindows
from datamodules.tracks import TrackStatisticsDataModule

__all__ = ["ImageDataModule", "LatticeStatisticsDataModule", "MSDDataModule", "PatternDataModule", "RepeatImage",
           "RepeatTarget", "SITransitionDataModule", "StartingLattices", "TrackStatisticsDataModule",
           "TransitionWindows", "lattice_loader"]
