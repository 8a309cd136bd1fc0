"""CMA-ES (pycma) on a calibration problem of :mod:`slm.baselines.problems`."""

from __future__ import annotations

import logging
import time

import cma
import numpy as np
import torch

from slm.baselines.trace import Trace

log = logging.getLogger(__name__)

# logit bound: keeps every value strictly inside its bounds in float arithmetic
LOGIT_BOUND = 15.0


def _values(bounds: dict[str, tuple[float, float]], x: np.ndarray) -> dict[str, float]:
    """Search coordinates to parameter values: ``low + (high - low) sigmoid(x)``."""
    return {name: float(low + (high - low) / (1 + np.exp(-np.clip(v, -LOGIT_BOUND, LOGIT_BOUND))))
            for (name, (low, high)), v in zip(bounds.items(), x[: len(bounds)], strict=True)}


def cma_es(problem, start: dict[str, float], sigma0: float = 1.0, max_evaluations: float = 1000,
           popsize: int | None = None, seed: int = 0, max_seconds: float | None = None) -> Trace:
    """Minimise ``problem.distance(summary(theta), observed)`` with CMA-ES over ``x``, ``theta = low + (high -
    low) sigmoid(x)`` within ``problem.bounds`` (the logit of a probability).

    Starts from ``start`` (the gradient fit's initial values) with step ``sigma0`` in ``x``;
    every evaluation is a fresh simulation (the objective is noisy). pycma does not run in one
    dimension, so a one-parameter problem gets a second coordinate that the objective ignores.
    The estimate after each iteration is the mean of the search distribution. Stops at pycma's criteria,
    after ``max_evaluations`` or, with ``max_seconds``, at the first iteration that ends past that budget.
    """
    bounds = {name: problem.bounds[name] for name in problem.names}
    x0 = [float(np.log((start[n] - low) / (high - start[n]))) for n, (low, high) in bounds.items()]
    padded = len(x0) == 1
    options = {"seed": seed + 1, "maxfevals": max_evaluations, "verbose": -9}
    if popsize is not None:
        options["popsize"] = popsize
    strategy = cma.CMAEvolutionStrategy(x0 + [0.0] * padded, sigma0, options)
    generator = torch.Generator().manual_seed(seed)
    trace = Trace("CMA-ES")
    start_time = time.time()
    while not strategy.stop() and (max_seconds is None or not trace.seconds or trace.seconds[-1] < max_seconds):
        candidates = strategy.ask()
        values = [problem.distance(problem.summary(_values(bounds, x), generator), problem.observed)
                  for x in candidates]
        strategy.tell(candidates, values)
        trace.add(time.time() - start_time, problem.simulations, _values(bounds, strategy.mean))
    log.info("CMA-ES: %d evaluations, %.1f s, stop: %s", problem.simulations, trace.seconds[-1], strategy.stop())
    return trace
