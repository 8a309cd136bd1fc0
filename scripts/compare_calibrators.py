"""Approximate gradients (AD) against ABC-SMC (pyabc) and CMA-ES (pycma), side by side.

    python scripts/compare_calibrators.py --quick --out compare.json      # <= 15 min on 2 cores
    python scripts/compare_calibrators.py --out compare.json              # the papers' data sizes

For each task the data are made once (the datamodule of the experiment) and every method fits the
same data from the same start (AD, CMA-ES) or prior (ABC-SMC: uniform(0, 1) per parameter):

* ``si``: SI spread coefficient ``beta`` (truth 0.4) from simulated transitions
  (experiment ``si_transition``; ``--quick``: 20 sequences of 20 frames).
* ``prw``: ``p_center``, ``p_resample`` (truth 0.2, 0.1) of the persistent random walk from the
  MSD of 15,000 simulated walkers (experiment ``prw_synthetic``).

AD is ``scripts/train.py`` itself (``slm.train.train``); its seconds are Lightning's fit time and its
estimates come from the logged ``param/*`` scalars. One *simulation* is one pass of the simulator
over the problem (SI: every training transition once; PRW: 1500 walkers), so AD's count is the
number of such passes its gradient steps made. ``param_error`` is the Euclidean distance to the truth
(ABC: of the posterior mean; the row also has the 90% credible interval).

Writes ``--out`` (a JSON list of rows ``{"task", "method", "seconds", "simulations", "param_error",
...}``) and a plot of parameter error against wall-clock time (``--plot``, default next to ``--out``).
Each ABC and CMA row also says how much longer than AD the method took to reach the *equal error*:
the larger of the two final errors, counted from the first moment after which a method stays at or
below it.
"""

from __future__ import annotations

import argparse
import json
import logging
import math
import os
import sys
import tempfile
from pathlib import Path

import matplotlib
import torch
from hydra import compose, initialize_config_dir
from hydra.utils import instantiate
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
os.environ.setdefault("PROJECT_ROOT", str(ROOT))

try:
    from slm.baselines.abc_smc import abc_smc
    from slm.baselines.cma_es import cma_es
except ImportError as error:  # the baselines are an optional extra
    sys.exit(f"error: {error.name} is not installed; the comparison needs pip install -e '.[baselines]'")
from slm.baselines.problems import PRWProblem, SIProblem, parameter_error  # noqa: E402
from slm.baselines.trace import Trace  # noqa: E402
from slm.train import train  # noqa: E402

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

log = logging.getLogger("compare_calibrators")

SETTINGS = {
    "quick": {
        "si": {"overrides": ["data.n_sequences=20", "data.n_frames=20", "data.batch_size=32"],
               "abc": {"population_size": 100, "max_generations": 8}, "cma": {"max_evaluations": 300}},
        "prw": {"overrides": ["trainer.max_epochs=6"],
                "abc": {"population_size": 200, "max_generations": 8}, "cma": {"max_evaluations": 600}},
    },
    "full": {
        "si": {"overrides": [], "abc": {"population_size": 500, "max_generations": 12},
               "cma": {"max_evaluations": 1000}},
        "prw": {"overrides": [], "abc": {"population_size": 500, "max_generations": 12},
                "cma": {"max_evaluations": 3000}},
    },
}
EXPERIMENTS = {"si": "si_transition", "prw": "prw_synthetic"}


def compose_experiment(task: str, overrides: list[str], output: Path):
    with initialize_config_dir(version_base="1.3", config_dir=str(ROOT / "configs")):
        return compose("train", overrides=[f"experiment={EXPERIMENTS[task]}", f"paths.output_dir={output}",
                                           "trainer.enable_progress_bar=false", *overrides])


def make_problem(task: str, cfg, datamodule):
    if task == "si":
        x, y = (torch.cat(parts) for parts in zip(*datamodule.train_set.batches(), strict=True))
        return SIProblem(x.float(), y.float(), cfg.model.beta_true)
    truth = {"p_center": cfg.model.p_center_true, "p_resample": cfg.model.p_resample_true}
    return PRWProblem(datamodule.target, truth, walkers=cfg.task.batch_size, mcs_per_frame=cfg.model.mcs_per_frame,
                      dx=cfg.model.dx)


def run_ad(cfg, names: tuple[str, ...], simulations_per_step: float) -> Trace:
    """``train(cfg)`` and its estimates from the TensorBoard scalars ``param/<name>``."""
    results = train(cfg)
    events = EventAccumulator(str(next(Path(cfg.paths.output_dir).rglob("events.out.tfevents.*"))))
    events.Reload()
    series = {name: events.Scalars(f"param/{name}") for name in names}
    first = series[names[0]]
    # The last logged step is within a few steps of the end of fit; its time anchors the clock.
    origin = first[-1].wall_time - results["seconds"]
    trace = Trace(f"AD ({cfg.model.estimator})")
    for points in zip(*series.values(), strict=True):
        trace.add(points[0].wall_time - origin, round(points[0].step * simulations_per_step),
                  {name: p.value for name, p in zip(names, points, strict=True)})
    trace.add(results["seconds"], round(results["steps"] * simulations_per_step), results["params"])
    return trace


def seconds_to(trace: Trace, truth: dict[str, float], error: float) -> float:
    """Seconds at the first estimate after which every estimate is within ``error`` of the truth."""
    errors = [parameter_error(e, truth) for e in trace.estimates]
    for i in range(len(errors)):
        if all(e <= error * (1 + 1e-9) for e in errors[i:]):
            return trace.seconds[i]
    return math.inf


def compare(task: str, settings: dict, procs: int, work: Path) -> tuple[list[dict], dict[str, Trace], dict]:
    cfg = compose_experiment(task, settings["overrides"], work / task)
    datamodule = instantiate(cfg.data)
    datamodule.setup("fit")
    problem = make_problem(task, cfg, datamodule)
    truth = problem.truth
    # AD's simulations in units of one pass over the problem (SI: all training transitions)
    per_step = cfg.data.batch_size / len(datamodule.train_set) if task == "si" else 1.0
    start = {name: float(cfg.model[name]) for name in problem.names}
    log.info("%s: truth %s, start %s", task, truth, start)
    traces = {}
    trace = run_ad(cfg, problem.names, per_step)
    traces[trace.method] = trace
    trace = abc_smc(make_problem(task, cfg, datamodule), n_procs=procs, **settings["abc"])
    traces[trace.method] = trace
    trace = cma_es(make_problem(task, cfg, datamodule), start, **settings["cma"])
    traces[trace.method] = trace
    rows = []
    for method, trace in traces.items():
        row = {"task": task, "method": method, "seconds": round(trace.seconds[-1], 2),
               "simulations": trace.simulations[-1], "param_error": parameter_error(trace.estimates[-1], truth),
               "estimate": trace.estimates[-1], "truth": truth}
        if trace.intervals:
            row["interval_90"] = trace.intervals[-1]
        rows.append(row)
    ad = rows[0]
    for row in rows[1:]:
        equal = max(ad["param_error"], row["param_error"])
        t_ad, t_other = seconds_to(traces[ad["method"]], truth, equal), seconds_to(traces[row["method"]], truth, equal)
        row["equal_error"] = equal
        row["seconds_to_equal_error"] = t_other
        row["AD_seconds_to_equal_error"] = t_ad
        row["ratio_to_AD_at_equal_error"] = t_other / t_ad if t_ad > 0 else math.inf
    return rows, traces, truth


def plot(results: dict[str, tuple[list[dict], dict[str, Trace], dict]], path: Path) -> None:
    figure, axes = plt.subplots(1, len(results), figsize=(5 * len(results), 3.8), squeeze=False)
    for axis, (task, (rows, traces, truth)) in zip(axes[0], results.items(), strict=True):
        for (method, trace), colour in zip(traces.items(), ("tab:blue", "tab:red", "tab:green"), strict=True):
            errors = [max(parameter_error(e, truth), 1e-5) for e in trace.estimates]
            axis.plot(trace.seconds, errors, "o-", ms=3, color=colour, label=method)
        for row in rows[1:]:
            axis.axhline(row["equal_error"], color="gray", ls=":", lw=1)
        axis.set_xscale("log")
        axis.set_yscale("log")
        axis.set_xlabel("wall-clock seconds (2 CPU cores)")
        axis.set_ylabel("parameter error |theta - truth|")
        axis.set_title({"si": "SI: beta", "prw": "PRW: p_center, p_resample"}[task])
        axis.legend(fontsize=8)
    figure.tight_layout()
    figure.savefig(path, dpi=120)
    plt.close(figure)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="small data and budgets (<= 15 min on 2 cores)")
    parser.add_argument("--tasks", nargs="*", default=["si", "prw"], choices=["si", "prw"])
    parser.add_argument("--procs", type=int, default=2, help="ABC-SMC worker processes")
    parser.add_argument("--out", type=Path, default=Path("compare_calibrators.json"))
    parser.add_argument("--plot", type=Path, default=None, help="error vs time figure (default: OUT with .png)")
    args = parser.parse_args()
    handler = logging.StreamHandler()
    handler.setFormatter(logging.Formatter("[%(name)s] %(message)s"))
    for name in ("compare_calibrators", "slm"):
        logging.getLogger(name).addHandler(handler)
        logging.getLogger(name).setLevel(logging.INFO)
    settings = SETTINGS["quick" if args.quick else "full"]
    results = {}
    with tempfile.TemporaryDirectory() as work:
        for task in args.tasks:
            results[task] = compare(task, settings[task], args.procs, Path(work))
    rows = [row for task_rows, _, _ in results.values() for row in task_rows]
    args.out.write_text(json.dumps(rows, indent=2) + "\n")
    plot(results, args.plot or args.out.with_suffix(".png"))
    print("| task | method | seconds | simulations | param error | estimate | x AD time at equal error |")
    print("|---|---|---|---|---|---|---|")
    for row in rows:
        estimate = ", ".join(f"{k} {v:.4f}" for k, v in row["estimate"].items())
        ratio = row.get("ratio_to_AD_at_equal_error")
        print(f"| {row['task']} | {row['method']} | {row['seconds']:.1f} | {row['simulations']} | "
              f"{row['param_error']:.4f} | {estimate} | {'' if ratio is None else f'{ratio:.2f}'} |")
    print(f"wrote {args.out} and {args.plot or args.out.with_suffix('.png')}")


if __name__ == "__main__":
    main()
