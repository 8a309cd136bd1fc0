"""Differentiable stochastic lattice simulators."""

from slm.models.si import SI, simulate_si, transition_counts

__all__ = ["SI", "simulate_si", "transition_counts"]
