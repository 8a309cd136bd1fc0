"""Stochastic lattice simulators behind one contract, :class:`Simulator` (see :mod:`slm.models.base`)."""

from slm.models.base import Simulator, WalkSimulator
from slm.models.cpm import OnePixelCPM
from slm.models.malevanets_kapral import MalevanetsKapral, uniform_state
from slm.models.persistent_walk import PersistentRandomWalk
from slm.models.pixel_field import PixelField
from slm.models.si import SI, simulate_si, transition_counts

__all__ = ["SI", "MalevanetsKapral", "OnePixelCPM", "PersistentRandomWalk", "PixelField", "Simulator",
           "WalkSimulator", "simulate_si", "transition_counts", "uniform_state"]
