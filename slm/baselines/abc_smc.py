"""ABC-SMC (pyabc) on a calibration problem of :mod:`slm.baselines.problems`."""

from __future__ import annotations

import logging
import multiprocessing as mp
import os
import signal
import tempfile
import time
from datetime import timedelta
from pathlib import Path

import numpy as np
import pyabc
import torch
from pyabc.weighted_statistics import weighted_quantile

from slm.baselines.trace import Trace

log = logging.getLogger(__name__)


def abc_smc(problem, population_size: int = 200, max_generations: int = 10, min_epsilon: float = 0.0,
            max_simulations: float = np.inf, n_procs: int = 2, seed: int = 0, max_seconds: float | None = None
            ) -> Trace:
    """Run pyabc's ABC-SMC with uniform priors on ``problem.bounds`` for every parameter of ``problem``.

    The distance is ``problem.distance`` on ``problem.summary``; thresholds follow pyabc's default
    (median of the previous generation's distances), proposals its adaptive multivariate normal kernel,
    and simulations run on ``n_procs`` processes (``MulticoreEvalParallelSampler``). Stops after
    ``max_generations`` generations, at ``min_epsilon``, after ``max_simulations`` simulations, or after
    ``max_seconds`` of wall clock.

    pyabc runs in a forked process group, so that the budget holds even inside a generation: in many
    dimensions a generation may never end (pyabc redraws a proposal until all of its coordinates fall
    inside the prior's box), or pyabc gives up (its importance weights turn NaN when the kernel density
    underflows). Either way the generations it finished are kept, a last point at the stop repeats the
    last estimate (the prior's mean if none finished), and :attr:`Trace.stopped` says why.

    Returns a :class:`Trace` with, per generation, the posterior mean, its 90% credible interval
    (weighted 5% and 95% quantiles), the seconds since the start and pyabc's cumulative count of
    simulations (every simulated particle of a finished generation, accepted or not).
    """
    trace = Trace("ABC-SMC")
    with tempfile.TemporaryDirectory() as folder:
        database = f"sqlite:///{Path(folder) / 'abc.db'}"
        receiver, sender = mp.get_context("fork").Pipe(duplex=False)
        settings = (population_size, max_generations, min_epsilon, max_simulations, n_procs, seed, max_seconds)
        worker = mp.get_context("fork").Process(target=_run, args=(problem, database, settings, sender), daemon=False)
        start = time.time()
        worker.start()
        worker.join(max_seconds)
        if worker.is_alive():
            os.killpg(worker.pid, signal.SIGKILL)  # pyabc and its sampler's worker processes
            worker.join()
            trace.stopped = f"the budget of {max_seconds:.0f} s ended inside a generation"
        elif receiver.poll():
            trace.stopped = receiver.recv()
        elif worker.exitcode:  # killed (out of memory, a dead sampler worker) before it could say why
            trace.stopped = f"pyabc's process ended with exit code {worker.exitcode}"
        stopped_at = time.time() - start
        history = pyabc.History(database)
        populations = history.get_all_populations().sort_values("t") if history.n_populations else []
        simulations = 0
        for row in getattr(populations, "itertuples", lambda: [])():
            simulations += int(row.samples)
            if row.t < 0:  # pyabc's calibration sample from the prior
                continue
            particles, weights = history.get_distribution(m=0, t=int(row.t))
            estimate = {name: float((particles[name] * weights).sum()) for name in problem.names}
            interval = {name: tuple(weighted_quantile(particles[name].to_numpy(), weights, alpha=q)
                                    for q in (0.05, 0.95)) for name in problem.names}
            trace.add(row.population_end_time.timestamp() - start, simulations, estimate, interval)
    if trace.stopped or not trace.estimates:
        trace.stopped = trace.stopped or "pyabc finished no generation"
        log.warning("ABC-SMC: %s", trace.stopped)
        if trace.estimates:  # the time of the unfinished generation was spent too
            trace.add(stopped_at, simulations, trace.estimates[-1], trace.intervals[-1])
        else:
            trace.add(stopped_at, simulations, {n: (lo + hi) / 2 for n, (lo, hi) in problem.bounds.items()},
                      dict(problem.bounds))
    log.info("ABC-SMC: %d generations, %d simulations, %.1f s", len(trace.seconds), simulations, trace.seconds[-1])
    return trace


def _run(problem, database: str, settings: tuple, sender) -> None:
    """The pyabc run, in its own process group (forked: the problem is inherited, not pickled)."""
    os.setsid()
    population_size, max_generations, min_epsilon, max_simulations, n_procs, seed, max_seconds = settings
    priors = pyabc.Distribution(**{name: pyabc.RV("uniform", low, high - low)
                                   for name, (low, high) in problem.bounds.items()})

    def model(params: dict) -> dict:
        # Each worker process runs one simulation at a time; more threads would oversubscribe the cores.
        torch.set_num_threads(1)
        generator = torch.Generator().manual_seed(int(np.random.randint(2**62)))
        return {"s": problem.summary({name: float(params[name]) for name in problem.names}, generator)}

    def distance(a: dict, b: dict) -> float:
        return problem.distance(a["s"], b["s"])

    np.random.seed(seed)  # pyabc draws from numpy's global generator
    sampler = pyabc.sampler.MulticoreEvalParallelSampler(n_procs=n_procs)
    abc = pyabc.ABCSMC(model, priors, distance, population_size=population_size, sampler=sampler)
    abc.new(database, {"s": problem.observed})
    try:
        abc.run(minimum_epsilon=min_epsilon, max_nr_populations=max_generations,
                max_total_nr_simulations=max_simulations,
                max_walltime=None if max_seconds is None else timedelta(seconds=max_seconds))
    except (AssertionError, ValueError, np.linalg.LinAlgError) as error:
        sender.send(f"pyabc stopped in generation {abc.history.n_populations}: {error}")
