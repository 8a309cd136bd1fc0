"""ABC-SMC (pyabc) on a calibration problem of :mod:`slm.baselines.problems`."""

from __future__ import annotations

import logging
import tempfile
import time
from pathlib import Path

import numpy as np
import pyabc
import torch
from pyabc.weighted_statistics import weighted_quantile

from slm.baselines.trace import Trace

log = logging.getLogger(__name__)


def abc_smc(problem, population_size: int = 200, max_generations: int = 10, min_epsilon: float = 0.0,
            max_simulations: float = np.inf, n_procs: int = 2, seed: int = 0) -> Trace:
    """Run pyabc's ABC-SMC with uniform priors on ``problem.bounds`` for every parameter of ``problem``.

    The distance is ``problem.distance`` on ``problem.summary``; thresholds follow pyabc's default
    (median of the previous generation's distances), proposals its adaptive multivariate normal kernel,
    and simulations run on ``n_procs`` processes (``MulticoreEvalParallelSampler``). Stops after
    ``max_generations`` generations, at ``min_epsilon`` or after ``max_simulations`` simulations.

    Returns a :class:`Trace` with, per generation, the posterior mean, its 90% credible interval
    (weighted 5% and 95% quantiles), the seconds since the start and pyabc's cumulative count of
    simulations (every simulated particle, accepted or not).
    """
    priors = pyabc.Distribution(**{name: pyabc.RV("uniform", low, high - low)
                                   for name, (low, high) in problem.bounds.items()})

    def model(params: dict) -> dict:
        # Each worker process runs one simulation at a time; more threads would oversubscribe the cores.
        torch.set_num_threads(1)
        generator = torch.Generator().manual_seed(int(np.random.randint(2**62)))
        return {"s": problem.summary({name: float(params[name]) for name in problem.names}, generator)}

    def distance(a: dict, b: dict) -> float:
        return problem.distance(a["s"], b["s"])

    # pyabc draws from numpy's global generator: seed it for this run and give the caller its state back.
    outer = np.random.get_state()
    np.random.seed(seed)
    try:
        sampler = pyabc.sampler.MulticoreEvalParallelSampler(n_procs=n_procs)
        abc = pyabc.ABCSMC(model, priors, distance, population_size=population_size, sampler=sampler)
        trace = Trace("ABC-SMC")
        with tempfile.TemporaryDirectory() as folder:
            abc.new(f"sqlite:///{Path(folder) / 'abc.db'}", {"s": problem.observed})
            start = time.time()
            history = abc.run(minimum_epsilon=min_epsilon, max_nr_populations=max_generations,
                              max_total_nr_simulations=max_simulations)
            populations = history.get_all_populations().sort_values("t")
            simulations = 0
            for row in populations.itertuples():
                simulations += int(row.samples)
                if row.t < 0:  # pyabc's calibration sample from the prior
                    continue
                particles, weights = history.get_distribution(m=0, t=int(row.t))
                estimate = {name: float((particles[name] * weights).sum()) for name in problem.names}
                interval = {name: tuple(weighted_quantile(particles[name].to_numpy(), weights, alpha=q)
                                        for q in (0.05, 0.95)) for name in problem.names}
                trace.add(row.population_end_time.timestamp() - start, simulations, estimate, interval)
    finally:
        np.random.set_state(outer)
    log.info("ABC-SMC: %d generations, %d simulations, %.1f s", len(trace.seconds), simulations, trace.seconds[-1])
    return trace
