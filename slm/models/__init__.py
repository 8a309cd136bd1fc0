"""Stochastic lattice simulators behind one contract, :class:`Simulator` (see :mod:`slm.models.base`)."""

from slm.models.act import ActPotts, ActState
from slm.models.base import Recording, Simulator, WalkSimulator
from slm.models.cpm import OnePixelCPM, PixelCellState
from slm.models.malevanets_kapral import MalevanetsKapral, uniform_state
from slm.models.persistent_walk import PersistentRandomWalk, WalkerState
from slm.models.pixel_field import PixelField
from slm.models.potts import CellularPotts, PottsState, random_mixture, single_cell
from slm.models.potts_engine import KernelError
from slm.models.si import SI, simulate_si, transition_counts

__all__ = ["SI", "ActPotts", "ActState", "CellularPotts", "KernelError", "MalevanetsKapral", "OnePixelCPM",
           "PersistentRandomWalk",
           "PixelCellState", "PixelField", "PottsState", "Recording", "Simulator", "WalkSimulator", "WalkerState",
           "random_mixture", "simulate_si", "single_cell", "transition_counts", "uniform_state"]
