"""Differentiable stochastic lattice simulators."""

from slm.models.cpm import OnePixelCPM
from slm.models.persistent_walk import PersistentRandomWalk
from slm.models.si import SI, simulate_si, transition_counts

__all__ = ["SI", "OnePixelCPM", "PersistentRandomWalk", "simulate_si", "transition_counts"]
