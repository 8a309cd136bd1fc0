"""Neural posterior estimation (sbi's NPE) on a calibration problem of :mod:`slm.baselines.problems`."""

from __future__ import annotations

import contextlib
import io
import logging
import time
import warnings

import numpy as np
import torch
from sbi.inference import NPE
from sbi.utils import BoxUniform

from slm.baselines.trace import Trace

log = logging.getLogger(__name__)


def npe(problem, max_seconds: float, first_round: int = 100, max_epochs: int = 100, samples: int = 500,
        seed: int = 0) -> Trace:
    """Amortised NPE (``sbi.inference.NPE``, a masked autoregressive flow) with uniform priors on ``problem.bounds``.

    Rounds of simulations from the prior, doubling in size (``first_round``, then twice that, ...). After each
    round the flow is trained on every simulation so far (at most ``max_epochs`` epochs, sbi's early
    stopping) and the estimate is the mean of ``samples`` posterior samples at the observed summary, its 90%
    interval their 5% and 95% quantiles (samples
    outside the prior's box are clipped into it rather than rejected: a poor flow would make rejection
    sampling hang). A round stops simulating once ``max_seconds`` have passed, and the run ends with that
    round. Simulations run one at a time in this process; the trace has one estimate per round.
    """
    low = torch.tensor([problem.bounds[name][0] for name in problem.names], dtype=torch.float32)
    high = torch.tensor([problem.bounds[name][1] for name in problem.names], dtype=torch.float32)
    torch.manual_seed(seed)
    generator = torch.Generator().manual_seed(seed)
    prior = BoxUniform(low, high)
    inference = NPE(prior=prior, density_estimator="maf", show_progress_bars=False, tracker=_NoTracking())
    observed = torch.as_tensor(np.asarray(problem.observed, dtype=np.float32).reshape(-1))
    trace = Trace("NPE (sbi)")
    start = time.time()
    size = first_round
    while True:
        thetas, summaries = [], []
        for theta in prior.sample((size,)):
            summary = problem.summary(dict(zip(problem.names, theta.tolist(), strict=True)), generator)
            thetas.append(theta)
            summaries.append(torch.as_tensor(np.asarray(summary, dtype=np.float32).reshape(-1)))
            if time.time() - start > max_seconds:
                break
        with warnings.catch_warnings():  # summaries that are constant (no sites with n = 0 turn) cannot be z-scored
            warnings.simplefilter("ignore")
            inference.append_simulations(torch.stack(thetas), torch.stack(summaries))
        # every simulation is from the prior, so each round trains on all of them with the first round's loss
        with contextlib.redirect_stdout(io.StringIO()), warnings.catch_warnings():  # sbi prints and warns per round
            warnings.simplefilter("ignore")
            flow = inference.train(max_num_epochs=max_epochs, force_first_round_loss=True, show_train_summary=False)
        posterior = inference.build_posterior(flow)
        with warnings.catch_warnings():  # the draws outside the box are clipped below, as documented
            warnings.simplefilter("ignore")
            draws = posterior.sample((samples,), x=observed, reject_outside_prior=False, show_progress_bars=False)
        clipped = torch.minimum(torch.maximum(draws, low), high)
        interval = dict(zip(problem.names, torch.quantile(clipped, torch.tensor([0.05, 0.95]), dim=0).T.tolist(),
                            strict=True))
        trace.add(time.time() - start, problem.simulations, dict(zip(problem.names, clipped.mean(0).tolist(),
                                                                      strict=True)), interval)
        if time.time() - start > max_seconds:
            break
        size *= 2
    log.info("NPE: %d rounds, %d simulations, %.1f s", len(trace.seconds), problem.simulations, trace.seconds[-1])
    return trace


class _NoTracking:
    """sbi's tracker protocol, logging nothing: by default sbi writes TensorBoard files into ``./sbi-logs``."""

    log_dir = None

    def log_metric(self, name: str, value: float, step: int | None = None) -> None:
        pass

    def log_metrics(self, metrics: dict[str, float], step: int | None = None) -> None:
        pass

    def log_params(self, params: dict) -> None:
        pass

    def add_figure(self, name: str, figure: object, step: int | None = None) -> None:
        pass

    def flush(self) -> None:
        pass
