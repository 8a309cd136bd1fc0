"""LightningDataModules for the fitting tasks."""

from datamodules.images import ImageDataModule, RepeatImage
from datamodules.msd import MSDDataModule, RepeatTarget
from datamodules.patterns import PatternDataModule
from datamodules.si import SITransitionDataModule, TransitionWindows, load_frames

__all__ = ["ImageDataModule", "MSDDataModule", "PatternDataModule", "RepeatImage", "RepeatTarget",
           "SITransitionDataModule", "TransitionWindows", "load_frames"]
