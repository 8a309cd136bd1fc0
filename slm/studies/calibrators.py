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
  28 cells). Priors and CMA-ES bounds: ``calibration.bounds`` of the experiment. Its ``param_error`` is the largest
  relative error (the parameters differ in scale), as ``param_rel_error`` in ``results.json``.
* ``tcells``: ``lambda_act``, ``max_act`` of the act model fitted to celltrackR's T cells (experiment
  ``cpm_tcells``; ``--quick``: 8 lattices per simulation, 50 gradient steps). Real data have no truth:
  every estimate is scored by the fit's loss on 64 lattices with the same noise for every estimate
  (:meth:`slm.baselines.problems.TrackProblem.evaluate`, not counted in the methods' time), and the rows
  carry ``loss`` in place of ``param_error``. Priors and CMA-ES bounds: ``calibration.bounds`` of the experiment.
* ``tcells_mixture``: the same with two classes of act cells (experiment ``cpm_tcells_mixture`` with
  :data:`TWO_CLASSES`: 12 cells per lattice seen through its window): ``lambda_act[k]``, ``max_act[k]`` and the
  class weights (searched each in (0, 1), normalised), on the fit's loss with its per-track speed distribution
  term (4 lattices per simulation; ``--quick``: 100 gradient steps).

AD is the fit ``scripts/train.py`` runs (``slm.fit.fit``); its seconds are Lightning's fit time and its
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
from pathlib import Path

from matplotlib.figure import Figure
from omegaconf import DictConfig, open_dict

from slm.baselines.abc_smc import abc_smc
from slm.baselines.cma_es import cma_es
from slm.baselines.problems import PRWProblem, SIProblem, SummaryProblem, TrackProblem, parameter_error
from slm.baselines.trace import Trace
from slm.config import build, compose_config
from slm.errors import InputError
from slm.fit import fit
from slm.parameters import flat_values

log = logging.getLogger(__name__)

#: cpm_tcells_mixture with two classes of act cells (the comparison's K = 2), from a slow and a fast class
TWO_CLASSES = ["model.classes=2", "model.lambda_act=[30,300]", "model.max_act=[20,30]", "model.weights=[0.3,0.7]"]
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
        "tcells_mixture": {"overrides": [*TWO_CLASSES, "data.batch_size=4", "trainer.max_epochs=4", "uq=none"],
                           "abc": {"population_size": 60, "max_generations": 4}, "cma": {"max_evaluations": 150}},
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
        "tcells_mixture": {"overrides": [*TWO_CLASSES, "data.batch_size=4", "uq=none"],
                           "abc": {"population_size": 200, "max_generations": 8}, "cma": {"max_evaluations": 1000}},
    },
}
#: tasks whose parameter error is the largest relative error
RELATIVE = ("potts",)
EXPERIMENTS = {"si": "si_transition", "prw": "prw_synthetic", "potts": "cpm_sorting", "tcells": "cpm_tcells",
               "tcells_mixture": "cpm_tcells_mixture"}
TITLES = {"si": "SI: beta", "prw": "PRW: p_center, p_resample", "potts": "CPM sorting: J_dl, J_ll, lambda_V",
          "tcells": "act model on T cells: lambda_act, max_act",
          "tcells_mixture": "two act classes on T cells: lambda_act[k], max_act[k], weights"}
TASKS = tuple(EXPERIMENTS)
#: one comparison: its rows, the trace of each method, each trace's errors (or losses)
Result = tuple[list[dict], dict[str, Trace], dict[str, list[float]]]


def compose(task: str, overrides: Iterable[str], output: Path) -> DictConfig:
    """The training config of ``task``'s experiment with ``overrides``, writing into ``output``."""
    return compose_config(f"experiment={EXPERIMENTS[task]}", f"paths.output_dir={output}",
                          "trainer.enable_progress_bar=false", *overrides)


def make_problem(cfg: DictConfig, datamodule) -> SIProblem | PRWProblem | SummaryProblem | TrackProblem:
    """The baselines' problem of an experiment: ``cfg.calibration`` (``configs/calibration/``) on the data of
    ``datamodule`` (set up), on the fit's own batch and loss."""
    if cfg.get("calibration") is None:
        raise InputError(f"calibration: experiment {cfg.task_name} has no calibration problem for the baselines")
    return build(cfg.calibration, _partial_=True)(target=datamodule.task_target())


def run_ad(cfg: DictConfig, simulations_per_step: float, every: int = 1) -> Trace:
    """The fit of ``cfg`` (:func:`slm.fit.fit`) with its parameters recorded every ``every`` steps
    (:class:`ParameterTrace`); the last estimate is the fit's result at its total seconds."""
    path = Path(cfg.paths.output_dir) / "parameter_trace.json"
    method = f"AD ({build(cfg.estimator).name})"
    with open_dict(cfg):
        cfg.callbacks.parameter_trace = {"_target_": "slm.baselines.trace.ParameterTrace", "path": str(path),
                                         "every": every, "method": method}
    uq = build(cfg.uq) if cfg.get("uq") and cfg.uq.get("_target_") else None  # the stopping rule's distance
    results = fit(cfg, uq)[2]
    steps = Trace.load(path)
    trace = Trace(method)
    for seconds, step, estimate in zip(steps.seconds, steps.simulations, steps.estimates, strict=True):
        trace.add(seconds, round(step * simulations_per_step), estimate)
    trace.add(results["seconds"], round(results["steps"] * simulations_per_step), flat_values(results["params"]))
    return trace


def guarded(method: str, run: Callable[..., Trace], problem) -> Trace:
    """``run(problem)``, or, if it raises or yields no estimate, a trace of one point at the prior's centre that
    says why (``stopped``): a method that fails, AD included, gives a row, never ends the study."""
    clock = time.perf_counter()
    try:
        trace = run(problem)
    except Exception as error:  # any failure of a third-party calibrator is reported, not raised
        log.warning("%s failed: %s: %s", method, type(error).__name__, error)
        trace = Trace(method, stopped=f"failed: {type(error).__name__}: {error}")
    if not trace.estimates:
        trace.stopped = trace.stopped or "no estimate"
        trace.add(time.perf_counter() - clock, problem.simulations,
                  {n: (low + high) / 2 for n, (low, high) in problem.bounds.items()})
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
    datamodule = build(cfg.data)
    datamodule.setup("fit")
    problem = make_problem(cfg, datamodule)
    truth = problem.truth
    metric = "loss" if truth is None else "param_error"
    # AD's simulations in units of one pass over the problem (SI: all training transitions)
    per_step = cfg.data.batch_size / len(datamodule.train_set) if task == "si" else 1.0
    start = flat_values(build(cfg.model).parameter_values())
    log.info("%s: truth %s, start %s", task, truth, start)
    runs = ((f"AD ({build(cfg.estimator).name})", lambda _: run_ad(cfg, per_step)),
            ("ABC-SMC", lambda problem: abc_smc(problem, n_procs=procs, **settings["abc"])),
            ("CMA-ES", lambda problem: cma_es(problem, start, **settings["cma"])))
    traces = {}
    for method, run in runs:
        trace = guarded(method, run, make_problem(cfg, datamodule))
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
        if trace.stopped:
            row["stopped"] = trace.stopped
        if truth is None:
            row["eval_lattices"] = problem.eval_lattices
        rows.append(row)
    ad = rows[0]
    for row in rows[1:] if "stopped" not in ad else ():  # no ratios to an AD run that failed
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
        axis.set_ylabel(f"loss ({rows[0].get('eval_lattices')} lattices, fixed noise)" if "loss" in rows[0] else
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
    results, rows = {}, []
    with tempfile.TemporaryDirectory() as work:
        for task in tasks:
            results[task] = compare(task, settings[task], procs, Path(work))
            rows += results[task][0]
            Path(out).write_text(json.dumps(rows, indent=2) + "\n")  # each finished task's rows, as it goes
    plot(results, plot_path or Path(out).with_suffix(".png"))
    return rows
