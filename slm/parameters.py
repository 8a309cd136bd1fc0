"""Constrained parameters: stored unconstrained, exposed constrained.

A probability ``p`` is stored as ``logit(p)`` and a positive value ``x`` as ``log(x)``, via
``torch.nn.utils.parametrize``: ``module.p`` is the constrained value and
``module.parametrizations.p.original`` the unconstrained tensor the optimiser updates.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor, nn
from torch.nn.utils import parametrize

from slm.errors import InputError


class Probability(nn.Module):
    """``p = sigmoid(theta)``, with ``dp/dtheta = p (1 - p)``."""

    def forward(self, theta: Tensor) -> Tensor:
        return torch.sigmoid(theta)

    def right_inverse(self, p: Tensor) -> Tensor:
        return torch.logit(p)

    @staticmethod
    def derivative(p: Tensor) -> Tensor:
        return p * (1 - p)

    @staticmethod
    def check(key: str, value: float) -> None:
        if not (math.isfinite(value) and 0.0 < value < 1.0):
            raise InputError(f"{key}: expected a probability strictly inside (0, 1), got {value}")


class UnitInterval(nn.Module):
    """``p = clamp(theta, 0, 1)``: projected gradient descent on the raw value (the thesis's MK fits).

    Inside ``[0, 1]`` the gradient and the learning rate act on ``p`` itself; at a bound it sticks
    while the gradient pushes outwards.
    """

    def forward(self, theta: Tensor) -> Tensor:
        return theta.clamp(0.0, 1.0)

    def right_inverse(self, p: Tensor) -> Tensor:
        return p

    @staticmethod
    def derivative(p: Tensor) -> Tensor:
        return torch.ones_like(p)

    @staticmethod
    def check(key: str, value: float) -> None:
        if not (math.isfinite(value) and 0.0 <= value <= 1.0):
            raise InputError(f"{key}: expected a value in [0, 1], got {value}")


class Positive(nn.Module):
    """``x = exp(theta)``, with ``dx/dtheta = x``."""

    def forward(self, theta: Tensor) -> Tensor:
        return torch.exp(theta)

    def right_inverse(self, x: Tensor) -> Tensor:
        return torch.log(x)

    @staticmethod
    def derivative(x: Tensor) -> Tensor:
        return x

    @staticmethod
    def check(key: str, value: float) -> None:
        if not (math.isfinite(value) and value > 0.0):
            raise InputError(f"{key}: expected a positive finite number, got {value}")


class Real(nn.Module):
    """``x = theta``: an unconstrained value (a contact energy, which may be negative)."""

    def forward(self, theta: Tensor) -> Tensor:
        return theta

    def right_inverse(self, x: Tensor) -> Tensor:
        return x

    @staticmethod
    def derivative(x: Tensor) -> Tensor:
        return torch.ones_like(x)

    @staticmethod
    def check(key: str, value: float) -> None:
        if not math.isfinite(value):
            raise InputError(f"{key}: expected a finite number, got {value}")


Constraint = Probability | UnitInterval | Positive | Real


def register(module: nn.Module, name: str, value: float, constraint: Constraint) -> None:
    """Add a learnable scalar ``module.<name>`` with the given constraint, initialised to ``value``.

    Raises :class:`InputError` naming ``model.<name>`` if ``value`` violates the constraint.
    """
    constraint.check(f"model.{name}", float(value))
    module.register_parameter(name, nn.Parameter(torch.tensor(float(value))))
    parametrize.register_parametrization(module, name, constraint)


def constrained_values(module: nn.Module) -> dict[str, Tensor]:
    """The constrained value of every registered parameter, by name (detached)."""
    return {name: getattr(module, name).detach() for name in _names(module)}


def constrained_grads(module: nn.Module) -> dict[str, Tensor]:
    """``dL/dvalue`` for every registered parameter that has a gradient.

    The optimiser sees ``dL/dtheta``; by the chain rule ``dL/dvalue = dL/dtheta / (dvalue/dtheta)``.
    """
    grads = {}
    for name in _names(module):
        original = module.parametrizations[name].original
        if original.grad is not None:
            value = getattr(module, name).detach()
            grads[name] = original.grad / module.parametrizations[name][0].derivative(value)
    return grads


def _names(module: nn.Module) -> list[str]:
    if not parametrize.is_parametrized(module):
        return []
    return list(module.parametrizations.keys())


def set_values(module: nn.Module, values: dict[str, float], key: str = "truth") -> None:
    """Set learnable parameters (through their constraint) or fixed buffers of ``module`` by name, in place.

    Raises :class:`InputError` naming ``<key>.<name>`` for a name the module does not have.
    """
    learnable = set(_names(module))
    buffers = dict(module.named_buffers())
    for name, value in values.items():
        if name in learnable:
            module.parametrizations[name][0].check(f"{key}.{name}", float(value))
            with torch.no_grad():
                setattr(module, name, torch.tensor(float(value)))
        elif name in buffers and buffers[name].ndim == 0:
            buffers[name].fill_(float(value))
        else:
            raise InputError(f"{key}.{name}: the model has no parameter {name!r}; it has "
                             f"{sorted(learnable | {n for n, b in buffers.items() if b.ndim == 0})}")
