"""The scaling study: approximate gradients (AD) against ABC-SMC, CMA-ES and NPE as the number of parameters
grows, on SI spread fields of d blocks and PRW mixtures of K walker classes.

    python scripts/compare_calibrators.py --quick --dims 1,16,256 --classes 1,2 --out scaling.json

Every gradient-free method gets a wall-clock budget of :data:`BUDGET_FACTOR` x AD's fit time; a method that
fails or yields nothing gets a row that says why (``stopped``), and the rows of every size are written as
they come, so one failure never loses the study.
"""

from __future__ import annotations

import json
import logging
import math
import tempfile
import time
from collections.abc import Iterable
from functools import partial
from pathlib import Path

import torch
from matplotlib.figure import Figure

from slm.baselines.abc_smc import abc_smc
from slm.baselines.cma_es import cma_es
from slm.baselines.npe import npe
from slm.baselines.problems import parameter_error
from slm.baselines.prw_exact import prw_exact_fit
from slm.baselines.trace import Trace
from slm.config import build, compose_config
from slm.errors import InputError
from slm.parameters import flat_values
from slm.studies.calibrators import guarded, make_problem, run_ad, seconds_to

log = logging.getLogger(__name__)

#: overrides per setting and study (``si_field``: the SI spread field; ``prw_mixture``: the PRW mixture on
#: celltrackR's neutrophils), and ABC-SMC's population
SCALING = {
    "quick": {"si_field": ["data.n_sequences=20", "data.n_frames=20", "trainer.max_epochs=10"],
              "prw_mixture": ["trainer.max_epochs=6"], "population": 100},
    "full": {"si_field": [], "prw_mixture": [], "population": 200},
}
#: each gradient-free method gets this many times AD's fit time, and at least MIN_BUDGET seconds
BUDGET_FACTOR, MIN_BUDGET = 10, 120.0
METHOD_COLOURS = {"AD": "tab:blue", "ABC": "tab:red", "CMA": "tab:green", "NPE": "tab:purple", "MLE": "black",
                  "exa": "black"}


def blocks_of(dims: int) -> tuple[int, int]:
    """``(s, s)`` blocks for ``dims = s^2`` parameters, else a one-line error."""
    side = math.isqrt(dims)
    if dims < 1 or side * side != dims:
        raise InputError(f"--dims: {dims} is not a square number of blocks (1, 4, 16, ..., 4096 on 64x64)")
    return side, side


def scale(study: str, size: int, quick: bool, procs: int, work: Path, overrides: Iterable[str] = (),
          min_budget: float = MIN_BUDGET) -> tuple[list[dict], dict[str, Trace], dict]:
    """AD, ABC-SMC, CMA-ES and NPE (sbi) on one size of a scaling ``study``: ``si_field`` with ``size`` = d blocks
    (experiment ``si_field``; error: the field's RMSE to the truth, reference: the exact per-block MLE) or
    ``prw_mixture`` with ``size`` = K classes (experiment ``prw_mixture`` on neutrophils, 3K - 1 parameters;
    error: the fit's loss on the exact MSD, reference: its exact optimum, :func:`prw_exact_fit`). The
    gradient-free methods get a wall-clock budget of :data:`BUDGET_FACTOR` x AD's fit time (at least
    ``min_budget`` seconds); ``overrides`` go after the setting's. Returns the rows, the traces and each
    trace's errors."""
    setting = SCALING["quick" if quick else "full"]
    if study == "si_field":
        by, bx = blocks_of(size)
        shape, dims, metric = f"model.blocks=[{by},{bx}]", size, "param_error"
    else:
        shape, dims, metric = f"model.classes={size}", 3 * size - 1, "loss"
    cfg = compose_config(f"experiment={study}", shape, f"paths.output_dir={work / f'{study}_{size}'}",
                         "trainer.enable_progress_bar=false", *setting[study], *overrides)
    datamodule = build(cfg.data)
    datamodule.setup("fit")
    problem = make_problem(cfg, datamodule)
    start = flat_values(build(cfg.model).parameter_values())
    per_step = cfg.data.batch_size / len(datamodule.train_set) if study == "si_field" else 1.0
    ad = guarded(f"AD ({build(cfg.estimator).name})", lambda _: run_ad(cfg, per_step, every=1 if dims <= 256 else 10),
                 problem)
    budget = max(BUDGET_FACTOR * ad.seconds[-1], min_budget)
    log.info("%s, d = %d: AD %.1f s; budget of the others %.0f s", study, dims, ad.seconds[-1], budget)
    traces = {ad.method: ad}
    for method, run in (("ABC-SMC", partial(abc_smc, population_size=setting["population"], max_generations=10**6,
                                            n_procs=procs, max_seconds=budget)),
                        ("CMA-ES", partial(cma_es, start=start, max_evaluations=math.inf, max_seconds=budget)),
                        ("NPE (sbi)", partial(npe, max_seconds=budget))):
        traces[method] = guarded(method, run, make_problem(cfg, datamodule))
    clock = time.perf_counter()
    if study == "si_field":
        reference, name = flat_values({"beta": torch.tensor(build(cfg.model).reference_metrics(
            datamodule.train_set.batches())["beta_mle"], dtype=torch.float64)}), "MLE"
        score = partial(parameter_error, truth=problem.truth, kind="rmse")
    else:
        exact = prw_exact_fit(datamodule.target, cfg.model.mcs_per_frame, cfg.model.dx, classes=size)
        reference, name = flat_values({n: torch.tensor(v) for n, v in exact.items() if n != "msd_rel_error"}), \
            "exact optimum"
        score = problem.evaluate
    reference_seconds = time.perf_counter() - clock
    errors = {m: [score(e) for e in t.estimates] for m, t in traces.items()}
    ad_error = errors[ad.method][-1]
    ad_time = seconds_to(ad.seconds, errors[ad.method], ad_error)
    base = {"task": study, "dims": dims} | ({"classes": size} if study == "prw_mixture" else {})
    rows = [base | {"method": name, "seconds": round(reference_seconds, 3), "simulations": 0,
                    metric: score(reference), "estimate": reference}]
    for method, trace in traces.items():
        reached = seconds_to(trace.seconds, errors[method], ad_error)
        rows.append(base | {"method": method, "seconds": round(trace.seconds[-1], 2),
                            "simulations": trace.simulations[-1], metric: errors[method][-1],
                            "time_to_ad_error": None if math.isinf(reached) else round(reached, 2),
                            "times_ad": None if math.isinf(reached) or ad_time <= 0 else round(reached / ad_time, 2),
                            "budget_seconds": None if trace is ad else round(budget, 1)})
        if trace.stopped:
            rows[-1]["stopped"] = trace.stopped
        if study == "si_field":
            rows[-1]["param_error_mle"] = parameter_error(trace.estimates[-1], reference, "rmse")
        else:
            rows[-1]["estimate"] = trace.estimates[-1]
    if study == "si_field":
        rows[0]["param_error_mle"] = 0.0
        del rows[0]["estimate"]  # d numbers; the fit's results.json has them as a field
    return rows, traces, errors


def plot_scaling(rows: list[dict], path: Path) -> None:
    """Error at the end of each method's budget, and its time to AD's final error, against the number of
    parameters (log-log); a method that never reached AD's error is drawn where it stopped, with an open marker."""
    studies = list(dict.fromkeys(row["task"] for row in rows))
    figure = Figure(figsize=(10, 3.8 * len(studies)), layout="tight")
    for (error_axis, time_axis), study in zip(figure.subplots(len(studies), 2, squeeze=False), studies, strict=True):
        mine = [row for row in rows if row["task"] == study]
        metric = "param_error" if "param_error" in mine[0] else "loss"
        for method in dict.fromkeys(row["method"] for row in mine):
            own = [row for row in mine if row["method"] == method]
            colour = METHOD_COLOURS[method[:3].strip()]
            error_axis.plot([r["dims"] for r in own], [r[metric] for r in own], "o-", color=colour, label=method)
            if "time_to_ad_error" not in own[0]:
                continue
            reached = [(r["dims"], r["time_to_ad_error"]) for r in own if r["time_to_ad_error"] is not None]
            missed = [(r["dims"], r["seconds"]) for r in own if r["time_to_ad_error"] is None]
            if reached:
                time_axis.plot(*zip(*reached, strict=True), "o-", color=colour, label=method)
            if missed:
                time_axis.plot(*zip(*missed, strict=True), "o", mfc="none", color=colour, ms=9,
                               label=f"{method}: not reached (drawn where it stopped)")
        what = "SI spread field" if study == "si_field" else "PRW mixture on neutrophils"
        error_axis.set_ylabel("RMSE of the field to the truth" if metric == "param_error" else
                              "loss on the exact MSD")
        error_axis.set_title(f"{what}: error at the end of each budget")
        time_axis.set_ylabel("seconds to AD's final error (2 CPU cores)")
        time_axis.set_title(f"{what}: time to AD's final error")
        for axis in (error_axis, time_axis):
            axis.set_xscale("log")
            axis.set_yscale("log")
            axis.set_xlabel("parameters d")
            axis.legend(fontsize=7)
    figure.savefig(path, dpi=120)


def run_scaling(quick: bool, dims: Iterable[int], classes: Iterable[int], procs: int, out: Path,
                plot_path: Path | None = None) -> list[dict]:
    """The scaling study for every field size in ``dims`` and every mixture size in ``classes``; writes the
    rows to ``out`` (JSON, after each size) and the figure to ``plot_path`` (default: ``out`` with ``.png``)."""
    sizes = [("si_field", d) for d in dims] + [("prw_mixture", k) for k in classes]
    for study, size in sizes:
        if study == "si_field":
            blocks_of(size)
        elif size < 1:
            raise InputError(f"--classes: expected positive numbers of walker classes, got {size}")
    rows = []
    with tempfile.TemporaryDirectory() as work:
        for study, size in sizes:
            rows += scale(study, size, quick, procs, Path(work))[0]
            Path(out).write_text(json.dumps(rows, indent=2) + "\n")
    plot_scaling(rows, plot_path or Path(out).with_suffix(".png"))
    return rows
