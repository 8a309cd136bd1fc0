"""LightningDataModules for the fitting tasks."""

from datamodules.si import SITransitionDataModule, load_frames

__all__ = ["SITransitionDataModule", "load_frames"]
