"""Constrained parameters: stored unconstrained, exposed constrained.

A probability ``p`` is stored as ``logit(p)``, a positive value ``x`` as ``log(x)`` and mixture weights
``w`` (a point of the simplex) as ``log(w)`` with ``w = softmax(theta)``, via
``torch.nn.utils.parametrize``: ``module.p`` is the constrained value and
``module.parametrizations.p.original`` the unconstrained tensor the optimiser updates.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np
import torch
from torch import Tensor, nn
from torch.nn.utils import parametrize

from slm.errors import InputError


@dataclass(frozen=True)
class Link:
    """How a reported value maps to the real line, where intervals are symmetric (and back), on numbers or arrays.

    Attributes:
        name: ``logit``, ``log`` or ``identity`` (``results.json``'s ``space``).
        forward: value to link.
        inverse: link to value.
        slope: ``d value / d link`` at a value (the delta method's factor).
    """

    name: str
    forward: Callable[[np.ndarray], np.ndarray]
    inverse: Callable[[np.ndarray], np.ndarray]
    slope: Callable[[np.ndarray], np.ndarray]

    def label(self, name: str) -> str:
        """``logit(p)``, ``log(x)`` or ``x``."""
        return name if self.name == "identity" else f"{self.name}({name})"


LOGIT = Link("logit", lambda v: np.log(v / (1 - v)), lambda x: 1 / (1 + np.exp(-x)), lambda v: v * (1 - v))
LOG = Link("log", np.log, np.exp, lambda v: v)
IDENTITY = Link("identity", lambda v: v, lambda x: x, lambda v: np.ones_like(np.asarray(v, dtype=float)))
#: Every link by its name.
LINKS = {link.name: link for link in (LOGIT, LOG, IDENTITY)}


class _Elementwise(nn.Module):
    """A constraint that maps every stored number to one value. Subclasses set :attr:`link`; where the link
    undoes the map (``logit(sigmoid(theta)) = theta``) :attr:`exact_link` says so.

    The uncertainty code asks a constraint for its coordinates (the free numbers of the stored tensor), the
    link of its values (differentiable) and the labels of its coordinates."""

    link: Link = IDENTITY
    exact_link = False
    #: stored numbers that are not free coordinates (a simplex's last)
    fixed = 0

    def coordinates(self, theta: Tensor) -> Tensor:
        """The free coordinates of the stored ``theta``, flat."""
        return theta.flatten()

    def stored(self, coordinates: Tensor) -> Tensor:
        """The stored tensor (flat) at ``coordinates``."""
        return coordinates

    def linked(self, theta: Tensor) -> Tensor:
        """The link of the values at the stored ``theta``, flat and differentiable."""
        if self.exact_link:
            return theta.flatten()
        value = self(theta).flatten()
        return torch.logit(value) if self.link is LOGIT else torch.log(value) if self.link is LOG else value

    def labels(self, names: list[str]) -> list[str]:
        """One label per coordinate, from the names of the values."""
        return [self.link.label(name) for name in names]


class Probability(_Elementwise):
    """``p = sigmoid(theta)``, with ``dp/dtheta = p (1 - p)``."""

    link, exact_link = LOGIT, True

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


class UnitInterval(_Elementwise):
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


class Positive(_Elementwise):
    """``x = exp(theta)``, with ``dx/dtheta = x``."""

    link, exact_link = LOG, True

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


class Simplex(_Elementwise):
    """``w = softmax(theta)`` over the last dimension: weights that are positive and sum to one.

    The Jacobian is not diagonal: ``dL/dtheta = w * (g - <w, g>)`` for ``g = dL/dw``, so dividing by
    :meth:`derivative` ``= w`` gives ``g - <w, g>``, the gradient along the simplex (``g`` up to the
    constant that the simplex cannot see). Its coordinates are the log-ratios ``theta_k - theta_K`` to the last
    weight (``K - 1`` free numbers); each weight is reported on the logit scale.
    """

    link, fixed = LOGIT, 1

    def forward(self, theta: Tensor) -> Tensor:
        return torch.softmax(theta, -1)

    def right_inverse(self, w: Tensor) -> Tensor:
        return torch.log(w)

    @staticmethod
    def derivative(w: Tensor) -> Tensor:
        return w

    @staticmethod
    def check(key: str, value: Tensor | list[float]) -> None:
        w = torch.as_tensor(value, dtype=torch.float64)
        if not (w.ndim == 1 and len(w) >= 1 and w.isfinite().all() and (w > 0).all()
                and abs(float(w.sum()) - 1) < 1e-6):
            raise InputError(f"{key}: expected positive weights that sum to 1, got {w.tolist()}")

    def coordinates(self, theta: Tensor) -> Tensor:
        theta = theta.flatten()
        return theta[:-1] - theta[-1]

    def stored(self, coordinates: Tensor) -> Tensor:
        return torch.cat([coordinates, coordinates.new_zeros(1)])

    def labels(self, names: list[str]) -> list[str]:
        return [f"log({name}/{names[-1]})" for name in names[:-1]]


class Real(_Elementwise):
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


Constraint = Probability | UnitInterval | Positive | Real | Simplex


def check_values(key: str, value: float | Tensor, constraint: Constraint) -> None:
    """``constraint.check`` on a scalar, or on every element of an array (a field, per-class values);
    a :class:`Simplex` checks the whole vector."""
    if isinstance(constraint, Simplex):
        constraint.check(key, value)
        return
    values = torch.as_tensor(value, dtype=torch.float64).flatten()
    for i, element in enumerate(values.tolist()):
        constraint.check(key if values.numel() == 1 else f"{key}[{i}]", element)


def class_values(key: str, value: float | Sequence[float], classes: int, constraint: Constraint, spread: float,
                 check: Callable[[str, float], None] | None = None) -> Tensor:
    """Start values ``(K,)`` of a parameter with one value per class: ``K`` given numbers, or one number (checked
    by ``check``) spread over the classes from ``-spread`` to ``+spread`` in the constraint's unconstrained
    coordinate, so that the classes start apart and their gradients differ (one class: the number itself)."""
    if isinstance(value, int | float) and not isinstance(value, bool):
        if not math.isfinite(value):
            raise InputError(f"{key}: expected a finite number, got {value!r}")
        if check is not None:
            check(key, float(value))
        if classes == 1:
            return torch.tensor([float(value)])
        centre = constraint.right_inverse(torch.tensor(float(value)))
        return constraint(centre + torch.linspace(-spread, spread, classes))
    try:
        values = torch.tensor([float(v) for v in value])
    except (TypeError, ValueError):
        raise InputError(f"{key}: expected a number or {classes} values (one per class), got {value!r}") from None
    if values.shape != (classes,) or not bool(values.isfinite().all()):
        raise InputError(f"{key}: expected a number or {classes} values (one per class), got {value!r}")
    return values


def register(module: nn.Module, name: str, value: float | Tensor, constraint: Constraint) -> None:
    """Add a learnable ``module.<name>`` with the given constraint, initialised to ``value``: a scalar,
    or an array (a field of one value per block, one value per class).

    Raises :class:`InputError` naming ``model.<name>`` if ``value`` violates the constraint.
    """
    check_values(f"model.{name}", value, constraint)
    module.register_parameter(name, nn.Parameter(torch.as_tensor(value, dtype=torch.get_default_dtype()).clone()))
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


def set_values(module: nn.Module, values: dict[str, float | Tensor], key: str = "truth") -> None:
    """Set learnable parameters (through their constraint) or fixed buffers of ``module`` by name, in place.
    An array-valued parameter takes an array (or nested list) of its shape.

    Raises :class:`InputError` naming ``<key>.<name>`` for a name the module does not have or a value of
    the wrong shape.
    """
    learnable = set(_names(module))
    buffers = dict(module.named_buffers())
    for name, value in values.items():
        if name in learnable:
            current = getattr(module, name)
            value = torch.as_tensor(value, dtype=current.dtype, device=current.device)
            if value.shape != current.shape:
                raise InputError(f"{key}.{name}: expected shape {list(current.shape)}, got {list(value.shape)}")
            check_values(f"{key}.{name}", value, module.parametrizations[name][0])
            with torch.no_grad():
                setattr(module, name, value)
        elif name in buffers and buffers[name].ndim == 0:
            buffers[name].fill_(float(value))
        else:
            raise InputError(f"{key}.{name}: the model has no parameter {name!r}; it has "
                             f"{sorted(learnable | {n for n, b in buffers.items() if b.ndim == 0})}")


def flat_values(values: dict[str, Tensor | float]) -> dict[str, float]:
    """Parameter values as one number per name: a scalar keeps its name, an array's elements are named
    ``<name>[i]`` in row-major order (how the gradient-free calibrators see a field)."""
    flat = {}
    for name, value in values.items():
        array = torch.as_tensor(value).detach().cpu().reshape(-1)
        if torch.as_tensor(value).ndim == 0:
            flat[name] = float(array[0])
        else:
            flat.update({f"{name}[{i}]": float(v) for i, v in enumerate(array.tolist())})
    return flat


def unflat_values(flat: dict[str, float], template: dict[str, Tensor | float]) -> dict[str, Tensor]:
    """The inverse of :func:`flat_values`: one tensor per name of ``template``, shaped like it, from numbers named
    as :func:`flat_values` names them."""
    values = {}
    for name, current in template.items():
        current = torch.as_tensor(current)
        if current.ndim == 0:
            values[name] = torch.tensor(float(flat[name]))
        else:
            values[name] = torch.tensor([float(flat[f"{name}[{i}]"]) for i in range(current.numel())]
                                        ).reshape(current.shape)
    return values

