"""LightningDataModules for the fitting tasks."""

from datamodules.images import ImageDataModule, RepeatImage
from datamodules.msd import MSDDataModule, RepeatTarget
from datamodules.patterns import PatternDataModule
from datamodules.potts import LatticeStatisticsDataModule, StartingLattices, lattice_loader, load_label_stack
from datamodules.si import SITransitionDataModule, TransitionWindows, load_frames
from datamodules.tracks import TrackStatisticsDataModule

__all__ = ["ImageDataModule", "LatticeStatisticsDataModule", "MSDDataModule", "PatternDataModule", "RepeatImage",
           "RepeatTarget", "SITransitionDataModule", "StartingLattices", "TrackStatisticsDataModule",
           "TransitionWindows", "load_frames", "lattice_loader", "load_label_stack"]
