"""LightningDataModules for the fitting tasks."""

from datamodules.msd import MSDDataModule
from datamodules.si import SITransitionDataModule, load_frames

__all__ = ["MSDDataModule", "SITransitionDataModule", "load_frames"]
