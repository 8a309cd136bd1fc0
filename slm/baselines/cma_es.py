"""CMA-ES (pycma) on a calibration problem of :mod:`slm.baselines.problems`."""

from __future__ import annotations

import logging
import time

import cma
import numpy as np
import torch

from slm.baselines.trace import Trace

log = logging.getLogger(__name__)

# logit bound: keeps every probability strictly inside (0, 1) in float arithmetic
LOGIT_BOUND = 15.0


def _probabilities(names: tuple[str, ...], x: np.ndarray) -> dict[str, float]:
    return {name: float(1 / (1 + np.exp(-np.clip(v, -LOGIT_BOUND, LOGIT_BOUND))))
            for name, v in zip(names, x[: len(names)], strict=True)}


def cma_es(problem, start: dict[str, float], sigma0: float = 1.0, max_evaluations: int = 1000,
           popsize: int | None = None, seed: int = 0) -> Trace:
    """Minimise ``problem.distance(summary(theta), observed)`` over logit-parameters with CMA-ES.

    Starts from ``start`` (the gradient fit's initial values) with step ``sigma0`` in logit space;
    every evaluation is a fresh simulation (the objective is noisy). pycma does not run in one
    dimension, so a one-parameter problem gets a second coordinate that the objective ignores.
    The estimate after each iteration is the mean of the search distribution.
    """
    names = problem.names
    x0 = [float(np.log(start[n] / (1 - start[n]))) for n in names]
    padded = len(x0) == 1
    options = {"seed": seed + 1, "maxfevals": max_evaluations, "verbose": -9}
    if popsize is not None:
        options["popsize"] = popsize
    strategy = cma.CMAEvolutionStrategy(x0 + [0.0] * padded, sigma0, options)
    generator = torch.Generator().manual_seed(seed)
    trace = Trace("CMA-ES")
    start_time = time.time()
    while not strategy.stop():
        candidates = strategy.ask()
        values = [problem.distance(problem.summary(_probabilities(names, x), generator), problem.observed)
                  for x in candidates]
        strategy.tell(candidates, values)
        trace.add(time.time() - start_time, problem.simulations, _probabilities(names, strategy.mean))
    log.info("CMA-ES: %d evaluations, %.1f s, stop: %s", problem.simulations, trace.seconds[-1], strategy.stop())
    return trace
