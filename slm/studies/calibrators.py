"""Approximate gradients (AD) against ABC-SMC (pyabc) and CMA-ES (pycma), side by side.

    python scripts/compare_calibrators.py --quick --out compare.json      # <= 15 min on 2 cores
    python scripts/compare_calibrators.py --out compare.json              # the papers' data sizes

For each task the data are made once (the datamodule of the experiment) and every method fits the
same data from the same start (AD, CMA-ES) or prior (ABC-SMC: uniform(0, 1) per parameter):

* ``si``: SI spread coefficient ``beta`` (truth ``truth.beta``, 0.4) from simulated transitions
  (experiment ``si_transition``; ``--quick``: 20 sequences of 20 frames).
* ``prw``: ``p_center``, ``p_resample`` (truth ``truth.p_center``, ``truth.p_resample``: 0.2, 0.1) of the
  persistent random walk from the MSD of 15,000 simulated walkers (experiment ``prw_synthetic``).
* ``potts``: ``J_dark_light``, ``J_light_light``, ``lambda_volume`` of the multi-cell CPM from the
  summaries over time of cell sorting (experiment ``cpm_sorting``; ``--quick``: 40x40 lattices with
  28 cells). Priors and CMA-ES bounds: :data:`POTTS_BOUNDS`. Its ``param_error`` is the largest
  relative error (the parameters differ in scale), as ``param_rel_error`` in ``results.json``.
* ``tcells``: ``lambda_act``, ``max_act`` of the act model fitted to celltrackR's T cells (experiment
  ``cpm_tcells``; ``--quick``: 8 lattices per simulation, 50 gradient steps). Real data have no truth:
  every estimate is scored by the fit's loss on 64 lattices with the same noise for every estimate
  (:meth:`slm.baselines.problems.TrackProblem.evaluate`, not counted in the methods' time), and the rows
  carry ``loss`` in place of ``param_error``. Priors and CMA-ES bounds: :data:`TRACK_BOUNDS`.

AD is ``scripts/train.py`` itself (``slm.train.train``); its seconds are Lightning's fit time and its
estimates come from the logged ``param/*`` scalars. One *simulation* is one pass of the simulator
over the problem (SI: every training transition once; PRW: 1500 walkers; the CPM: one batch of
lattices), so AD's count is the number of such passes its gradient steps made. ``param_error`` is the
Euclidean distance to the truth
(ABC: of the posterior mean; the row also has the 90% credible interval).

Writes ``--out`` (a JSON list of rows ``{"task", "method", "seconds", "simulations", "param_error",
...}``) and a plot of parameter error against wall-clock time (``--plot``, default next to ``--out``).
Each ABC and CMA row also says how much longer than AD the method took to reach the *equal error*
(or loss): the larger of the two final errors, counted from the first moment after which a method stays
at or below it.
"""

from __future__ import annotations

import json
import logging
import math
import tempfile
import time
from collections.abc import Callable, Iterable
from functools import partial
from pathlib import Path

import torch
from hydra.utils import instantiate
from matplotlib.figure import Figure
from omegaconf import DictConfig, open_dict

from slm.baselines.abc_smc import abc_smc
from slm.baselines.cma_es import cma_es
from slm.baselines.npe import npe
from slm.baselines.problems import PRWProblem, SIProblem, SummaryProblem, TrackProblem, parameter_error
from slm.baselines.prw_exact import prw_exact_fit
from slm.baselines.trace import Trace
from slm.errors import InputError
from slm.parameters import flat_values
from slm.stats import TRACK_TERMS
from slm.train import compose_config, train

log = logging.getLogger(__name__)

#: Config overrides and baseline budgets per setting (``quick``, ``full``) and task.
SETTINGS = {
    "quick": {
        "si": {"overrides": ["data.n_sequences=20", "data.n_frames=20", "data.batch_size=32"],
               "abc": {"population_size": 100, "max_generations": 8}, "cma": {"max_evaluations": 300}},
        "prw": {"overrides": ["trainer.max_epochs=6"],
                "abc": {"population_size": 200, "max_generations": 8}, "cma": {"max_evaluations": 600}},
        "potts": {"overrides": ["data.size=40", "model.cells=28"],
                  "abc": {"population_size": 80, "max_generations": 5}, "cma": {"max_evaluations": 200}},
        "tcells": {"overrides": ["data.batch_size=8", "trainer.max_epochs=2"],
                   "abc": {"population_size": 40, "max_generations": 4}, "cma": {"max_evaluations": 80}},
    },
    "full": {
        "si": {"overrides": [], "abc": {"population_size": 500, "max_generations": 12},
               "cma": {"max_evaluations": 1000}},
        "prw": {"overrides": [], "abc": {"population_size": 500, "max_generations": 12},
                "cma": {"max_evaluations": 3000}},
        "potts": {"overrides": [], "abc": {"population_size": 200, "max_generations": 8},
                  "cma": {"max_evaluations": 800}},
        "tcells": {"overrides": [], "abc": {"population_size": 100, "max_generations": 6},
                   "cma": {"max_evaluations": 300}},
    },
}
#: ABC-SMC's uniform priors and CMA-ES's bounds for the CPM (the truth: 11, 14, 2)
POTTS_BOUNDS = {"J_dark_light": (0.0, 32.0), "J_light_light": (0.0, 32.0), "lambda_volume": (0.25, 8.0)}
#: ABC-SMC's uniform priors and CMA-ES's bounds for the act model on T cells
TRACK_BOUNDS = {"lambda_act": (10.0, 1000.0), "max_act": (2.0, 100.0)}
#: tasks whose parameter error is the largest relative error
RELATIVE = ("potts",)
EXPERIMENTS = {"si": "si_transition", "prw": "prw_synthetic", "potts": "cpm_sorting", "tcells": "cpm_tcells"}
TITLES = {"si": "SI: beta", "prw": "PRW: p_center, p_resample", "potts": "CPM sorting: J_dl, J_ll, lambda_V",
          "tcells": "act model on T cells: lambda_act, max_act"}
TASKS = tuple(EXPERIMENTS)
#: one comparison: its rows, the trace of each method, each trace's errors (or losses)
Result = tuple[list[dict], dict[str, Trace], dict[str, list[float]]]


def compose(task: str, overrides: Iterable[str], output: Path) -> DictConfig:
    """The training config of ``task``'s experiment with ``overrides``, writing into ``output``."""
    return compose_config(f"experiment={EXPERIMENTS[task]}", f"paths.output_dir={output}",
                          "trainer.enable_progress_bar=false", *overrides)


def make_problem(task: str, cfg: DictConfig, datamodule) -> SIProblem | PRWProblem | SummaryProblem | TrackProblem:
    """The baselines' problem on the data of ``datamodule`` (set up), with the truth of ``cfg.truth``."""
    if task == "tcells":
        start = {name: float(v) for name, v in instantiate(cfg.model).parameter_values().items()}
        weights = torch.tensor([float((cfg.task.weights or {}).get(n, 1.0)) for n in TRACK_TERMS])
        return TrackProblem(datamodule.simulator, datamodule.target, start, TRACK_BOUNDS, datamodule.train_set,
                            cfg.data.batch_size, datamodule.burn_in, datamodule.frames, datamodule.mcs_per_frame,
                            weights, cfg.task.eval_lattices)
    if task == "potts":
        return SummaryProblem(datamodule.simulator, datamodule.target, datamodule.truth, POTTS_BOUNDS,
                              datamodule.train_set, cfg.data.batch_size, cfg.data.mcs_per_frame)
    if task == "prw_mixture":
        return PRWProblem(datamodule.target, None, walkers=cfg.task.batch_size, mcs_per_frame=cfg.model.mcs_per_frame,
                          dx=cfg.model.dx, classes=cfg.model.classes)
    if task in ("si", "si_field"):
        x, y = (torch.cat(parts) for parts in zip(*datamodule.train_set.batches(), strict=True))
        blocks = None if cfg.model.blocks is None else tuple(cfg.model.blocks)
        return SIProblem(x.float(), y.float(), datamodule.truth["beta"], blocks)
    truth = {"p_center": float(cfg.truth.p_center), "p_resample": float(cfg.truth.p_resample)}
    return PRWProblem(datamodule.target, truth, walkers=cfg.task.batch_size, mcs_per_frame=cfg.model.mcs_per_frame,
                      dx=cfg.model.dx)


def run_ad(cfg: DictConfig, simulations_per_step: float, every: int = 1) -> Trace:
    """``train(cfg)`` with its parameters recorded every ``every`` steps (:class:`ParameterTrace`); the last
    estimate is the fit's result at its total seconds."""
    path = Path(cfg.paths.output_dir) / "parameter_trace.json"
    method = f"AD ({instantiate(cfg.estimator).name})"
    with open_dict(cfg):
        cfg.callbacks.parameter_trace = {"_target_": "slm.baselines.trace.ParameterTrace", "path": str(path),
                                         "every": every, "method": method}
    results = train(cfg)
    steps = Trace.load(path)
    trace = Trace(method)
    for seconds, step, estimate in zip(steps.seconds, steps.simulations, steps.estimates, strict=True):
        trace.add(seconds, round(step * simulations_per_step), estimate)
    trace.add(results["seconds"], round(results["steps"] * simulations_per_step), flat_values(results["params"]))
    return trace


def seconds_to(seconds: list[float], errors: list[float], level: float) -> float:
    """Seconds at the first estimate after which every error is at most ``level``."""
    for i in range(len(errors)):
        if all(e <= level * (1 + 1e-9) for e in errors[i:]):
            return seconds[i]
    return math.inf


def scorer(task: str, problem) -> Callable[[dict[str, float]], float]:
    """How an estimate is scored: its parameter error against the truth, or (no truth) the evaluated loss."""
    if problem.truth is None:
        return problem.evaluate
    return lambda estimate: parameter_error(estimate, problem.truth, "relative" if task in RELATIVE else "euclidean")


def compare(task: str, settings: dict, procs: int, work: Path) -> Result:
    """AD, ABC-SMC (on ``procs`` processes) and CMA-ES on ``task`` with ``settings`` (one entry of a
    :data:`SETTINGS` setting); AD writes under ``work``. Returns the rows, the traces and the truth."""
    cfg = compose(task, settings["overrides"], work / task)
    datamodule = instantiate(cfg.data)
    datamodule.setup("fit")
    problem = make_problem(task, cfg, datamodule)
    truth = problem.truth
    metric = "loss" if truth is None else "param_error"
    # AD's simulations in units of one pass over the problem (SI: all training transitions)
    per_step = cfg.data.batch_size / len(datamodule.train_set) if task == "si" else 1.0
    start = {name: float(v) for name, v in instantiate(cfg.model).parameter_values().items()}
    log.info("%s: truth %s, start %s", task, truth, start)
    traces = {}
    for trace in (run_ad(cfg, per_step),
                  abc_smc(make_problem(task, cfg, datamodule), n_procs=procs, **settings["abc"]),
                  cma_es(make_problem(task, cfg, datamodule), start, **settings["cma"])):
        traces[trace.method] = trace
    score = scorer(task, problem)
    errors = {method: [score(e) for e in trace.estimates] for method, trace in traces.items()}
    rows = []
    for method, trace in traces.items():
        row = {"task": task, "method": method, "seconds": round(trace.seconds[-1], 2),
               "simulations": trace.simulations[-1], metric: errors[method][-1],
               "estimate": trace.estimates[-1], "truth": truth}
        if trace.intervals:
            row["interval_90"] = trace.intervals[-1]
        rows.append(row)
    ad = rows[0]
    for row in rows[1:]:
        equal = max(ad[metric], row[metric])
        t_ad = seconds_to(traces[ad["method"]].seconds, errors[ad["method"]], equal)
        t_other = seconds_to(traces[row["method"]].seconds, errors[row["method"]], equal)
        row["equal_error"] = equal
        row["seconds_to_equal_error"] = t_other
        row["AD_seconds_to_equal_error"] = t_ad
        row["ratio_to_AD_at_equal_error"] = t_other / t_ad if t_ad > 0 else math.inf
    return rows, traces, errors


def plot(results: dict[str, Result], path: Path) -> None:
    """Parameter error against wall-clock seconds, one panel per task, saved to ``path``."""
    figure = Figure(figsize=(5 * len(results), 3.8), layout="tight")
    axes = figure.subplots(1, len(results), squeeze=False)
    for axis, (task, (rows, traces, errors)) in zip(axes[0], results.items(), strict=True):
        for (method, trace), colour in zip(traces.items(), ("tab:blue", "tab:red", "tab:green"), strict=True):
            axis.plot(trace.seconds, [max(e, 1e-5) for e in errors[method]], "o-", ms=3, color=colour,
                      label=method)
        for row in rows[1:]:
            axis.axhline(row["equal_error"], color="gray", ls=":", lw=1)
        axis.set_xscale("log")
        axis.set_yscale("log")
        axis.set_xlabel("wall-clock seconds (2 CPU cores)")
        axis.set_ylabel("loss (64 lattices, fixed noise)" if "loss" in rows[0] else
                        "largest relative error" if task in RELATIVE else "parameter error |theta - truth|")
        axis.set_title(TITLES[task])
        axis.legend(fontsize=8)
    figure.savefig(path, dpi=120)


def run_comparison(quick: bool, tasks: Iterable[str], procs: int, out: Path, plot_path: Path | None = None
                   ) -> list[dict]:
    """Compare the calibrators on each of ``tasks`` (``si``, ``prw``, ``potts``, ``tcells``) with the ``quick``
    or ``full`` :data:`SETTINGS`; write the rows to ``out`` (JSON) and the figure to ``plot_path`` (default: ``out``
    with ``.png``). Returns the rows of every task."""
    settings = SETTINGS["quick" if quick else "full"]
    results = {}
    with tempfile.TemporaryDirectory() as work:
        for task in tasks:
            results[task] = compare(task, settings[task], procs, Path(work))
    rows = [row for task_rows, _, _ in results.values() for row in task_rows]
    Path(out).write_text(json.dumps(rows, indent=2) + "\n")
    plot(results, plot_path or Path(out).with_suffix(".png"))
    return rows


# -- the scaling study: fields of d parameters and mixtures of K classes ------------------------------

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
    datamodule = instantiate(cfg.data)
    datamodule.setup("fit")
    problem = make_problem(study, cfg, datamodule)
    start = flat_values(instantiate(cfg.model).parameter_values())
    per_step = cfg.data.batch_size / len(datamodule.train_set) if study == "si_field" else 1.0
    ad = run_ad(cfg, per_step, every=1 if dims <= 256 else 10)
    budget = max(BUDGET_FACTOR * ad.seconds[-1], min_budget)
    log.info("%s, d = %d: AD %.1f s; budget of the others %.0f s", study, dims, ad.seconds[-1], budget)
    traces = {ad.method: ad,
              "ABC-SMC": abc_smc(make_problem(study, cfg, datamodule), population_size=setting["population"],
                                 max_generations=10**6, n_procs=procs, max_seconds=budget),
              "CMA-ES": cma_es(make_problem(study, cfg, datamodule), start, max_evaluations=math.inf,
                               max_seconds=budget),
              "NPE (sbi)": npe(make_problem(study, cfg, datamodule), max_seconds=budget)}
    clock = time.perf_counter()
    if study == "si_field":
        reference, name = flat_values({"beta": torch.tensor(instantiate(cfg.model).reference_metrics(
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
                            "times_ad": None if math.isinf(reached) else round(reached / ad_time, 2),
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
