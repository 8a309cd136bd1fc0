r"""Uncertainty of a fit: an interval for every fitted parameter (the ``uq`` config group).

**Coordinates.** Intervals are built in unconstrained coordinates ``phi`` (``d``) and mapped back, so they
respect the bounds: a probability's logit, a positive value's log, a real value itself, and a mixture's
``K`` weights by their ``K - 1`` log-ratios to the last one (softmax has one direction that changes
nothing). Each reported scalar has a *link*: logit for probabilities and weights, log for positive values,
the identity for reals. With ``V`` the covariance of ``phi`` and ``J = d link / d phi`` the link's covariance
is ``J V J'``, and the interval ``link^-1(link(theta*) -+ z se)`` at the requested level.

**One step.** A stochastic-gradient fit ends near the root of its own equation, not on it: the simulation
noise of its last steps (and, with a biased estimator such as Gumbel-softmax, the bias) leaves it a fraction of
a standard error away, more when it has not converged. The intervals are therefore centred on the one-step
estimate ``theta* = theta + Delta``, one Newton (Gauss-Newton) step from the fit, whose variance is known
exactly; ``center`` in the report. ``|Delta|`` in standard errors is how far the fit is from the root
(``fit_to_root_se``); above :data:`CONVERGED_SE`, ``converged`` is false and a warning says so.

**Simulated method of moments** (:class:`Moments`: MSD, track and summary fits). The fit minimises
``(s(phi) - t)' W (s(phi) - t)`` with ``s`` the mean of per-unit simulated statistics (walkers, lattices) and
``t`` the observed ones; ``W`` (diagonal) is the loss's own weighting. Then

.. math::  V = (G'WG)^{-1} G'W \left(\Omega + \Sigma / n\right) W G (G'WG)^{-1}

with ``G = ds/dphi`` by central finite differences with common random numbers (the approximate gradients
are biased, so they are not used for ``G``; their Jacobian is reported beside it as a diagnostic, for up to
:data:`AUTOGRAD_STATISTICS` statistics), ``Omega`` the covariance of ``t``: on real data a bootstrap over its
independent units (``target.resample``, which stays valid when the model is misspecified), on simulated
data ``Sigma / N`` with ``Sigma`` the per-unit covariance of simulations at the estimate and ``N`` the data's
units. ``Sigma / n`` is the Monte-Carlo correction: the simulation noise of the one-step estimate, whose
``Delta = -(G'WG)^{-1} G'W r`` takes the residual ``r = s - t`` from ``n`` simulated units.
``J = r' (Omega + Sigma/n)^+ r`` tests the fit (chi-square with ``m - d`` degrees of freedom): a small p-value
says the model cannot fit the data.

**Estimating equation** (:class:`EstimatingEquation`: the SI transition fit with the straight-through
estimator, whose expected gradient is ``sum_u psi_u(phi)``, ``psi_u`` the gradient of the unit's
``1/2 |E[f(x_u)] - y_u|^2``). ``V = A^{-1} B A^{-T}`` with ``A = sum_u dpsi_u/dphi`` (exact, by automatic
differentiation of the expectation) and ``B = sum_u psi_u psi_u'``; the transitions are a martingale
difference sequence at the truth, so ``B`` needs no independence between them. The Newton step
``Delta = -A^{-1} sum_u psi_u`` is exact (no simulation), so the one-step estimate is the root itself up to
the equation's curvature. Above :data:`FULL_DIMENSION` parameters (a field) ``A`` and ``B`` are taken
block-diagonal, exact for ``A`` when each site depends on one parameter.

An ill-conditioned direction (the correlation matrix of ``V`` with condition number above
:data:`RIDGE_CONDITION`) is named in a one-line warning: the data fix a combination (a ratio, in log space),
not each parameter.

:class:`Bootstrap` refits ``replicates`` data sets warm-started at the estimate: simulated data again at the
estimate (parametric) or real data resampled over its units; the intervals are percentiles.
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from scipy import stats
from torch import Tensor, nn

from slm.errors import InputError
from slm.parameters import Link, flat_values

log = logging.getLogger(__name__)

#: Above this many coordinates the estimating equation's ``A`` and ``B`` are taken block-diagonal.
FULL_DIMENSION = 64
#: Above this many coordinates the stopping rule's distance takes ``A`` and ``B`` diagonal (a full Hessian of
#: 16 coordinates cost more than the fit, and the rule measures it several times).
STOPPING_DIMENSION = 1
#: A covariance is reported in ``results.json`` (``cov``) up to this many reported scalars.
REPORTED_COV = 16
#: The autograd Jacobian diagnostic is computed for up to this many statistics (one backward pass each).
AUTOGRAD_STATISTICS = 16
#: A fit farther than this many standard errors from the root of its equation is reported as not converged.
CONVERGED_SE = 1.0
#: Condition number of the correlation matrix above which a direction is reported as ill-conditioned.
RIDGE_CONDITION = 50.0


@dataclass
class Moments:
    """A simulated-method-of-moments fit (see the module docstring).

    Attributes:
        observed: the data's statistics ``t``, ``(m,)``.
        weight: the diagonal of the loss's weighting ``W``, ``(m,)``.
        simulate: ``(n, generator) -> (n, m)``, per-unit statistics of ``n`` units simulated at the simulator's
            current parameters (with the estimators' graph when grad is enabled).
        units: simulated units per evaluation by default.
        fit_units: simulated units per step of the fit.
        unit: what a unit is (``walkers``, ``lattices``), for messages.
        resample: the data's statistics from a bootstrap replicate of its units, where they are more than
            ``target.resample`` gives (default: ``target.resample``).
    """

    observed: Tensor
    weight: Tensor
    simulate: Callable[[int, torch.Generator], Tensor]
    units: int
    fit_units: int
    unit: str
    resample: Callable[[np.random.Generator], Tensor] | None = None


@dataclass
class EstimatingEquation:
    """A fit whose expected gradient is ``sum_u psi_u`` (see the module docstring).

    Attributes:
        unit_loss: ``(x, y) -> (B,)``, each unit's ``1/2 |E[f(x)] - y|^2``, differentiable in the parameters.
        batches: iterates over the data's units in batches ``(x, y)``.
    """

    unit_loss: Callable[[Tensor, Tensor], Tensor]
    batches: Callable[[], Iterable[tuple[Tensor, Tensor]]]


class Coordinates:
    """The unconstrained coordinates ``phi`` of a simulator's learnable parameters and their links, as each
    parameter's constraint (:mod:`slm.parameters`) defines them.

    ``names`` are the reported scalars (:func:`slm.parameters.flat_values` order), ``links`` their
    :class:`slm.parameters.Link`.
    """

    def __init__(self, simulator: nn.Module):
        self.simulator = simulator
        self.parts = [(name, simulator.parametrizations[name][0], tuple(getattr(simulator, name).shape))
                      for name in simulator.parametrizations]
        self.names = list(flat_values(simulator.parameter_values()))
        self.links: list[Link] = [constraint.link for _, constraint, shape in self.parts
                                  for _ in range(math.prod(shape))]

    def original(self, name: str) -> Tensor:
        return self.simulator.parametrizations[name].original

    def space(self) -> dict[str, str]:
        """Each reported scalar's link by name (``results.json``'s ``space``)."""
        return {name: link.name for name, link in zip(self.names, self.links, strict=True)}

    def get(self) -> Tensor:
        """``phi``, float64 ``(d,)``."""
        return torch.cat([constraint.coordinates(self.original(name).detach().double())
                          for name, constraint, _ in self.parts])

    def _originals(self, phi: Tensor) -> list[Tensor]:
        out, i = [], 0
        for name, constraint, _ in self.parts:
            size = self.original(name).numel() - constraint.fixed
            out.append(constraint.stored(phi[i:i + size]))
            i += size
        return out

    def free(self, grads: list[Tensor | None]) -> Tensor:
        """Gradients with respect to the stored tensors as gradients with respect to ``phi`` (the stored numbers
        that are not coordinates, a simplex's last, are fixed at 0 by :meth:`set`)."""
        parts = []
        for (name, constraint, _), grad in zip(self.parts, grads, strict=True):
            grad = torch.zeros_like(self.original(name)) if grad is None else grad
            parts.append(grad.flatten()[: grad.numel() - constraint.fixed])
        return torch.cat(parts)

    @torch.no_grad()
    def set(self, phi: Tensor) -> None:
        """Put the parameters at ``phi``."""
        for (name, _, _), theta in zip(self.parts, self._originals(phi), strict=True):
            original = self.original(name)
            original.copy_(theta.reshape(original.shape).to(original.dtype))

    def link(self, phi: Tensor) -> Tensor:
        """The link of every reported scalar at ``phi`` (differentiable), ``(n,)``."""
        return torch.cat([constraint.linked(theta.reshape(shape))
                          for (_, constraint, shape), theta in zip(self.parts, self._originals(phi), strict=True)])

    def to_link(self, values: np.ndarray) -> np.ndarray:
        """Link values from reported values."""
        return np.array([link.forward(v) for link, v in zip(self.links, np.asarray(values, float), strict=True)])

    def unlink(self, link: Tensor | np.ndarray) -> np.ndarray:
        """Reported values from link values."""
        return np.array([each.inverse(v) for each, v in zip(self.links, np.asarray(link, dtype=float), strict=True)])

    def slope(self, link: np.ndarray) -> np.ndarray:
        """``d value / d link`` of every reported scalar at ``link`` (the delta method's factor)."""
        return np.array([each.slope(v) for each, v in zip(self.links, self.unlink(link), strict=True)], dtype=float)

    def labels(self) -> list[str]:
        """A name per coordinate, ``logit(p_center)``, ``log(lambda_act)``, ``log(weights[0]/weights[1])``."""
        labels = []
        for name, constraint, shape in self.parts:
            size = math.prod(shape)
            labels += constraint.labels([name] if size == 1 and not shape else [f"{name}[{i}]" for i in range(size)])
        return labels

    def shaped(self, flat: np.ndarray) -> dict[str, Any]:
        """Per-scalar values back into the parameters' shapes (a scalar, or a nested list), by name."""
        out, i = {}, 0
        for name, _, shape in self.parts:
            size = math.prod(shape)
            out[name] = np.asarray(flat[i:i + size], dtype=float).reshape(shape).tolist()
            i += size
        return out


def _check_level(level: float) -> None:
    if not (isinstance(level, int | float) and 0 < level < 1):
        raise InputError(f"uq.level: expected a level strictly inside (0, 1), got {level}")


class Sandwich:
    """``uq=sandwich``: the sandwich covariance (see the module docstring).

    Args:
        level: level of the reported intervals.
        units: simulated units per evaluation of the statistics (``None``: the task's default).
        step: central finite-difference step in the coordinates.
        replicates: bootstrap replicates of real data's statistics (``Omega``).
        seed: seed of the simulations (common random numbers across the finite differences); ``None``: 0.
    """

    method = "sandwich"

    def __init__(self, level: float = 0.9, units: int | None = None, step: float = 0.1, replicates: int = 200,
                 seed: int | None = 0):
        _check_level(level)
        if units is not None and not (isinstance(units, int) and units >= 2):
            raise InputError(f"uq.units: expected an integer >= 2 (or null), got {units}")
        if not step > 0:
            raise InputError(f"uq.step: expected a positive finite-difference step, got {step}")
        if not (isinstance(replicates, int) and replicates >= 2):
            raise InputError(f"uq.replicates: expected an integer >= 2, got {replicates}")
        self.level, self.units, self.step, self.replicates = level, units, step, replicates
        self.seed = 0 if seed is None else seed

    def check(self, task: Any) -> None:
        """Refuse, before any compute, a task without an uncertainty problem."""
        task.uncertainty_problem()

    def __call__(self, task: Any, steps: int, refit: Callable | None = None) -> dict[str, Any]:
        """The uncertainty of ``task``'s fitted parameters after ``steps`` steps (``results.json``'s
        ``uncertainty``)."""
        start = time.perf_counter()
        coords, phi, cov, simulations, extra = self.covariance(task)
        return report(self.method, self.level, coords, phi, cov, time.perf_counter() - start, simulations, extra)

    def covariance(self, task: Any, full_dimension: int = FULL_DIMENSION
                   ) -> tuple[Coordinates, Tensor, Tensor, int, dict[str, Any]]:
        """The coordinates, their current values ``phi``, the covariance around the one-step estimate, the
        simulated units and the form's extras (with ``newton_step``); an estimating equation of more than
        ``full_dimension`` coordinates is taken block-diagonal."""
        problem = task.uncertainty_problem()
        coords = Coordinates(task.simulator)
        phi = coords.get()
        if isinstance(problem, EstimatingEquation):
            cov, simulations, extra = self.estimating_equation(task.simulator, coords, problem, full_dimension)
        else:
            cov, simulations, extra = self.moments(coords, problem, task.target)
        coords.set(phi)
        return coords, phi, cov, simulations, extra

    def distance(self, task: Any) -> float:
        """How far the fit is from the root of its own equation, in its standard errors (:func:`root_distance`
        of the one-step ``Delta``; the stopping rule's test, :mod:`slm.stopping`), measured often: an
        estimating equation of more than :data:`STOPPING_DIMENSION` coordinates is taken block-diagonal."""
        _, _, cov, _, extra = self.covariance(task, STOPPING_DIMENSION)
        return root_distance(extra["newton_step"], cov)

    def moments(self, coords: Coordinates, problem: Moments, target: Any) -> tuple[Tensor, int, dict[str, Any]]:
        n = self.units or problem.units
        phi = coords.get()

        def simulate(at: Tensor) -> Tensor:
            coords.set(at)
            with torch.no_grad():
                return problem.simulate(n, torch.Generator(problem.observed.device).manual_seed(self.seed)).double()

        center = simulate(phi)
        columns = []
        for i in range(len(phi)):
            shift = torch.zeros_like(phi)
            shift[i] = self.step
            columns.append((simulate(phi + shift).mean(0) - simulate(phi - shift).mean(0)) / (2 * self.step))
        coords.set(phi)
        G = torch.stack(columns, 1)
        sigma = torch.cov(center.T).reshape(len(center.T), -1)
        observed = problem.observed.double().cpu()
        resample = problem.resample if problem.resample is not None else target.resample
        if resample is not None:
            rng = np.random.default_rng(self.seed)
            replicates = torch.stack([resample(rng).double().reshape(-1).cpu() for _ in range(self.replicates)])
            omega, source = torch.cov(replicates.T), f"bootstrap over {target.units} data units"
        elif target.units:
            omega, source = sigma / target.units, f"simulations at the estimate ({target.units} data {problem.unit})"
        else:
            raise InputError("uq: the data have neither independent units to resample nor a size to simulate "
                             "(a given target value); use uq=none")
        total = omega + sigma / n
        W = torch.diag(problem.weight.double().cpu())
        bread, singular = torch.linalg.inv_ex(G.T @ W @ G)
        if int(singular):  # a parameter moved no statistic in these simulations: its interval is not determined
            bread = torch.full_like(bread, torch.nan)
        cov = bread @ G.T @ W @ total @ W @ G @ bread
        residual = center.mean(0) - observed
        j_stat = float(residual @ torch.linalg.pinv(total, hermitian=True) @ residual)
        dof = len(observed) - len(phi)
        extra = {"form": "method of moments", "omega": source, "units_per_evaluation": n,
                 "j_test": {"statistic": j_stat, "dof": dof, "p_value": float(stats.chi2.sf(j_stat, dof)) if dof > 0
                            else None}}
        if len(observed) <= AUTOGRAD_STATISTICS:
            extra["autograd_jacobian_rel_error"] = self.autograd_agreement(coords, problem, G)
        extra["newton_step"] = -bread @ G.T @ W @ residual
        return cov, n * (2 * len(phi) + 1), extra

    def autograd_agreement(self, coords: Coordinates, problem: Moments, G: Tensor) -> float:
        """``|G_autograd - G| / |G|`` (Frobenius) of the estimators' Jacobian on one step's worth of units."""
        simulator = coords.simulator
        simulator.reset_estimators()
        originals = [coords.original(name) for name, _, _ in coords.parts]
        generator = torch.Generator(problem.observed.device).manual_seed(self.seed + 1)
        with torch.enable_grad():
            mean = simulator.surrogate(problem.simulate(problem.fit_units, generator)).mean(0)
            rows = [coords.free(list(torch.autograd.grad(value, originals, retain_graph=True, allow_unused=True)))
                    for value in mean]
        simulator.reset_estimators()
        autograd = torch.stack(rows).double().cpu()
        return float((autograd - G).norm() / G.norm().clamp_min(1e-300))

    def estimating_equation(self, simulator: nn.Module, coords: Coordinates, problem: EstimatingEquation,
                            full_dimension: int = FULL_DIMENSION) -> tuple[Tensor, int, dict[str, Any]]:
        if any(constraint.fixed for _, constraint, _ in coords.parts):
            raise InputError("uq: the estimating-equation form does not take mixture weights")
        names = [f"simulator.parametrizations.{name}.original" for name, _, _ in coords.parts]
        originals = [coords.original(name).detach() for name, _, _ in coords.parts]
        wrapper = _Call(simulator, problem.unit_loss)

        def unit_loss(theta: tuple[Tensor, ...], x: Tensor, y: Tensor) -> Tensor:
            return torch.func.functional_call(wrapper, dict(zip(names, theta, strict=True)), (x[None], y[None]))[0]

        def total_loss(theta: tuple[Tensor, ...], x: Tensor, y: Tensor) -> Tensor:
            return torch.func.functional_call(wrapper, dict(zip(names, theta, strict=True)), (x, y)).sum()

        per_unit = torch.func.vmap(torch.func.grad(unit_loss), in_dims=(None, 0, 0))
        theta = tuple(originals)
        d = sum(t.numel() for t in theta)
        full = d <= full_dimension
        A = torch.zeros(d, d, dtype=torch.float64) if full else torch.zeros(d, dtype=torch.float64)
        B = torch.zeros_like(A)
        score = torch.zeros(d, dtype=torch.float64)
        units = 0
        for x, y in problem.batches():
            x, y = x.float().to(originals[0].device), y.float().to(originals[0].device)
            psi = torch.cat([g.reshape(len(x), -1) for g in per_unit(theta, x, y)], 1).double().cpu()
            units += len(psi)
            score += psi.sum(0)
            if full:
                B += psi.T @ psi
                hessian = torch.func.hessian(total_loss)(theta, x, y)
                A += torch.cat([torch.cat([h.reshape(a.numel(), b.numel()) for b, h in zip(theta, row, strict=True)],
                                          1) for a, row in zip(theta, hessian, strict=True)]).double().cpu()
            else:
                B += (psi ** 2).sum(0)
                ones = tuple(torch.ones_like(t) for t in theta)
                _, diagonal = torch.func.jvp(lambda *t, x=x, y=y: torch.func.grad(total_loss)(t, x, y), theta, ones)
                A += torch.cat([g.flatten() for g in diagonal]).double().cpu()
        if full:
            bread = torch.linalg.inv(A)
            cov = bread @ B @ bread.T
            step = -bread @ score
        else:
            cov = torch.diag(B / A ** 2)
            step = -score / A
        extra = {"form": "estimating equation A^-1 B A^-T" + ("" if full else " (block-diagonal)"),
                 "units": units, "newton_step": step}
        return cov, 0, extra


class _Call(nn.Module):
    """A module whose forward is ``fn`` on ``simulator``'s parameters (what ``functional_call`` swaps)."""

    def __init__(self, simulator: nn.Module, fn: Callable[..., Tensor]):
        super().__init__()
        self.simulator = simulator
        self.fn = fn

    def forward(self, *args: Tensor) -> Tensor:
        return self.fn(*args)


def root_distance(step: Tensor, cov_phi: Tensor) -> float:
    """``sqrt(mean_j (step_j / se_j)^2)``: the one-step distance in standard errors, the root mean square over the
    coordinates (``|step| / se`` for one parameter; for a field, how far it is in a typical block rather than its
    worst of many)."""
    return float((step / cov_phi.diagonal().clamp_min(1e-300).sqrt()).square().mean().sqrt())


def report(method: str, level: float, coords: Coordinates, phi: Tensor, cov_phi: Tensor, seconds: float,
           simulations: int, extra: dict[str, Any]) -> dict[str, Any]:
    """``results.json``'s ``uncertainty`` from the covariance of ``phi`` around the one-step estimate ``phi +
    extra["newton_step"]`` (see the module docstring); logs a warning naming an ill-conditioned direction or an
    unconverged fit."""
    step = extra.pop("newton_step")
    center = phi + step
    J = torch.func.jacrev(coords.link)(center)
    cov = J @ cov_phi @ J.T
    link = coords.link(center).detach().numpy()
    se_link = cov.diagonal().clamp_min(0).sqrt().numpy()
    out = intervals(coords, link, se_link, level)
    warnings = ridges(coords, cov_phi)
    distance = root_distance(step, cov_phi)
    extra |= {"center": coords.shaped(coords.unlink(link)), "fit_to_root_se": distance,
              "fit_to_root_max_se": float((step.abs() / cov_phi.diagonal().clamp_min(1e-300).sqrt()).max()),
              "converged": distance <= CONVERGED_SE}
    if distance > CONVERGED_SE:
        warnings.append(f"uq: the fit has not converged: it is {distance:.1f} standard errors from the root of its "
                        f"own equation; the intervals are centred on its one-step estimate (one Newton step away, "
                        f"printed beside the fit); raise the cap (trainer.max_epochs)")
    for line in warnings:
        log.warning(line)
    result = built(method, level, coords, out, cov, condition(cov_phi), seconds, simulations, warnings=warnings,
                   **extra)
    finite = _finite(result)
    if finite != result:
        line = ("uq: some intervals are not determined (a non-finite covariance or centre: too few data or an "
                "unconverged fit); they are null in results.json")
        log.warning(line)
        finite["warnings"].append(line)
    return finite


def built(method: str, level: float, coords: Coordinates, intervals: dict[str, Any], cov: Tensor, cond: float,
          seconds: float, simulations: int | None, **extra: Any) -> dict[str, Any]:
    """``results.json``'s ``uncertainty``, for every method: the method and level, the ``intervals`` (``se``,
    ``se_link``, ``interval`` and what else the method has), the covariance in link space (up to
    :data:`REPORTED_COV` scalars), each scalar's link, the condition number, the cost, and ``extra``."""
    small = len(coords.names) <= REPORTED_COV
    return {"method": method, "level": level, **intervals, "cov": cov.tolist() if small else None,
            "cov_names": coords.names if small else None, "space": coords.space(), "cond": cond,
            "seconds": round(seconds, 3), "simulations": simulations, **extra}


def _finite(value: Any) -> Any:
    """``value`` with every non-finite number replaced by None (``results.json`` stays valid JSON)."""
    if isinstance(value, dict):
        return {key: _finite(item) for key, item in value.items()}
    if isinstance(value, list | tuple):
        return [_finite(item) for item in value]
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value


def intervals(coords: Coordinates, link: np.ndarray, se_link: np.ndarray, level: float) -> dict[str, Any]:
    """``se`` (delta method, in the parameters' units), ``se_link`` and the ``interval`` per parameter."""
    z = float(stats.norm.ppf(0.5 + level / 2))
    lo, hi = coords.unlink(link - z * se_link), coords.unlink(link + z * se_link)
    low, high = coords.shaped(lo), coords.shaped(hi)
    return {"se": coords.shaped(se_link * coords.slope(link)), "se_link": coords.shaped(se_link),
            "interval": {name: [low[name], high[name]] for name in low}}


def correlation(cov: Tensor) -> Tensor:
    """The correlation matrix of ``cov``."""
    sd = cov.diagonal().clamp_min(1e-300).sqrt()
    return cov / sd[:, None] / sd[None, :]


def condition(cov: Tensor) -> float:
    """Condition number of the correlation matrix of ``cov`` (1 for independent parameters; NaN for a covariance
    that is not finite)."""
    if not bool(cov.isfinite().all()):
        return math.nan
    eigenvalues = torch.linalg.eigvalsh(correlation(cov))
    return float(eigenvalues[-1] / eigenvalues[0].clamp_min(1e-300))


def ridges(coords: Coordinates, cov: Tensor) -> list[str]:
    """A one-line warning for the least determined direction when the correlation matrix is ill-conditioned."""
    if len(cov) < 2 or len(cov) > FULL_DIMENSION or not condition(cov) > RIDGE_CONDITION:
        return []
    _, vectors = torch.linalg.eigh(correlation(cov))
    direction = vectors[:, -1]  # the correlation's largest eigenvector: where V is long
    labels = coords.labels()
    big = [(float(w), label) for w, label in zip(direction, labels, strict=True) if abs(w) > 0.3]
    combo = " ".join(f"{w:+.2f} {label}" for w, label in big)
    kind = ""
    if len(big) == 2 and big[0][0] * big[1][0] > 0:
        kind = "; the data fix mostly the ratio of the two"
    elif len(big) == 2:
        kind = "; the data fix mostly the product of the two"
    return [f"uq: ill-conditioned direction {combo} (correlation condition number {condition(cov):.0f}): the "
            f"intervals along it are wide and each parameter's interval is not separately determined{kind}"]


class Bootstrap:
    """``uq=bootstrap``: ``replicates`` refits warm-started at the estimate, each on a new data set: simulated
    again at the estimate (parametric) or the real data resampled over its units; percentile intervals of the
    refits' one-step estimates (:class:`Sandwich`'s centre, the estimator whose spread the sandwich predicts).

    Args:
        level: level of the intervals.
        replicates: number of refits (at least 2).
        steps: steps of each refit (``None``: the fit's own, so that a refit keeps the fit's simulation noise;
            fewer steps make noisier refits: a quarter of them gave SI refits 2.4x the spread, docs/uncertainty.md).
        seed: first seed of the replicates' data and noise.
    """

    method = "bootstrap"

    def __init__(self, level: float = 0.9, replicates: int = 20, steps: int | None = None, seed: int = 1000):
        _check_level(level)
        if not (isinstance(replicates, int) and replicates >= 2):
            raise InputError(f"uq.replicates: expected an integer >= 2, got {replicates}")
        if steps is not None and not (isinstance(steps, int) and steps >= 20):
            raise InputError(f"uq.steps: expected an integer >= 20 (a refit's one-cycle schedule) or null, got "
                             f"{steps}")
        self.level, self.replicates, self.steps, self.seed = level, replicates, steps, seed

    def check(self, task: Any) -> None:
        """Refuse, before any compute, data with neither units to resample nor a truth to simulate again, and
        fields (one refit per replicate cannot be afforded there; ``uq=sandwich`` is their form)."""
        target = task.target
        if target.resample is None and target.truth is None:
            raise InputError("uq=bootstrap: these data have no independent units to resample and no truth to "
                             "simulate again; use uq=sandwich")
        if any(value.ndim > 1 for value in task.simulator.parameter_values().values()):
            raise InputError("uq=bootstrap: not for a field of parameters; use uq=sandwich (block form)")

    def __call__(self, task: Any, steps: int, refit: Callable[..., dict[str, Any]]) -> dict[str, Any]:
        """Run the refits through ``refit(replicate, seed, steps, parametric, start)``, which returns the refitted
        task (``start``: the fitted values, the warm start and, parametric, the new truth)."""
        start = time.perf_counter()
        coords = Coordinates(task.simulator)
        phi = coords.get()
        link = coords.link(phi).detach().numpy()
        fitted = task.simulator.parameter_values()
        parametric = task.target.resample is None
        refit_steps = self.steps or steps
        estimates = []
        for b in range(self.replicates):
            replica = refit(b, self.seed + b, refit_steps, parametric, fitted)
            center = Sandwich(self.level, seed=self.seed + b)(replica, refit_steps)["center"]
            estimates.append(np.array(list(flat_values(center).values())))
        values = np.stack(estimates)
        links = np.stack([coords.to_link(row) for row in values])
        cov = np.cov(links.T).reshape(len(link), len(link))
        se_link = np.sqrt(np.diag(cov))
        tail = (1 - self.level) / 2
        lo, hi = np.quantile(values, tail, axis=0), np.quantile(values, 1 - tail, axis=0)
        low, high = coords.shaped(lo), coords.shaped(hi)
        out = {"se": coords.shaped(values.std(0, ddof=1)), "se_delta": coords.shaped(se_link * coords.slope(link)),
               "se_link": coords.shaped(se_link), "interval": {name: [low[name], high[name]] for name in low}}
        cov = torch.as_tensor(cov)
        return built(self.method, self.level, coords, out, cov, condition(cov), time.perf_counter() - start, None,
                     replicates=self.replicates, refit_steps=refit_steps, kind="parametric" if parametric else "data",
                     estimates=values.tolist())


def summary_line(uncertainty: dict[str, Any], params: dict[str, Any]) -> str:
    """``beta=0.4000 [0.3910, 0.4090]`` per scalar; a field as its count and median width. Where an interval
    does not contain the printed estimate, the line says why: it is centred on the one-step estimate, printed
    beside the fit, which is that many standard errors from the root of its equation."""
    parts, outside = [], 0
    center = uncertainty.get("center") or {}
    for name, (lo, hi) in uncertainty["interval"].items():
        # any shape (a number, a vector, a field, a 1x1 field) as flat arrays; None (not determined) reads as nan
        value, lo, hi = (np.ravel(np.asarray(x, dtype=float)) for x in (params[name], lo, hi))
        middle = np.ravel(np.asarray(center.get(name, value), dtype=float))
        out = (value < lo) | (value > hi)
        outside += int(out.sum())
        labels = [name] if value.size == 1 else [f"{name}[{i}]" for i in range(value.size)]
        if value.size <= 4:
            parts += [f"{label}={v:.4f}" + (f" (one-step {c:.4f})" if o else "") + f" [{a:.4f}, {b:.4f}]"
                      for label, v, c, o, a, b in zip(labels, value, middle, out, lo, hi, strict=True)]
        else:
            parts.append(f"{name}: {value.size} intervals, median width {np.median(hi - lo):.4f}")
    line = f"{uncertainty['level']:.0%} intervals ({uncertainty['method']}): " + ", ".join(parts)
    if outside:
        distance = uncertainty.get("fit_to_root_se")
        far = f"{distance:.1f} standard errors" if distance is not None else "far"
        line += (f" | {outside} interval(s) exclude the fit: they are centred on the one-step estimate, and the fit "
                 f"is {far} from the root of its equation (not converged)")
    return line
