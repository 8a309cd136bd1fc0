"""slm: fit stochastic lattice models by backpropagating approximate gradients."""

from slm.errors import InputError, NonFiniteError

__all__ = ["InputError", "NonFiniteError"]
__version__ = "0.1.0"
