"""One fit of a config: build its parts, run Lightning, and the results without writing them (:func:`fit`); a
bootstrap refit (:func:`refit`), the intervals' report, and how close a fit came to a known truth.

:func:`slm.train.train` wraps :func:`fit` with the intervals and ``results.json``; the studies that only need
a fit's parameters, metrics and time call :func:`fit` itself.
"""

from __future__ import annotations

import logging
import time
from pathlib import Path
from typing import Any

import lightning as L
import numpy as np
from lightning.pytorch.callbacks import LearningRateMonitor
from omegaconf import DictConfig, OmegaConf

from slm.config import build, build_task_and_data, check_checkpoint
from slm.parameters import set_values
from slm.plots import uncertainty_figure
from slm.uncertainty import summary_line

log = logging.getLogger("slm.train")
#: What each Monte Carlo schedule means, for the run's first line.
SCHEDULES = {"random": "uniform random targets, one attempt at a time: the MCS of CompuCell3D, Morpheus, Artistoo",
             "sweep": "every site once per MCS: the same equilibrium as the field's MCS, other kinetics"}

def fit(cfg: DictConfig, uq: Any = None, start: dict[str, Any] | None = None) -> tuple[Any, L.Trainer, dict[str, Any]]:
    """Build the task, data, callbacks, logger and trainer of ``cfg`` and fit; ``start``: parameter values to
    start from instead of the config's (a warm start). Returns the task, the trainer and the results without
    ``uncertainty``."""
    if cfg.get("seed") is not None:
        L.seed_everything(cfg.seed, workers=True, verbose=False)
    check_checkpoint(cfg.get("ckpt_path"))
    task, datamodule = build_task_and_data(cfg)
    schedule = getattr(getattr(task, "simulator", None), "schedule", None)
    if schedule is not None:
        model = type(task.simulator).__name__.removeprefix("Parametrized")  # torch's parametrisation wrapper
        log.info("%s: Monte Carlo schedule %s (%s)", model, schedule, SCHEDULES[schedule])
    if start:
        set_values(task.simulator, start, key="start")
    if uq is not None:
        uq.check(task)
    # The whole resolved config goes into every checkpoint (hyper_parameters), so a checkpoint knows its run.
    task.save_hyperparameters(OmegaConf.to_container(cfg, resolve=True), logger=False)
    logger = build(cfg.logger) if cfg.get("logger") else False
    callbacks = [build(c) for c in (cfg.get("callbacks") or {}).values() if c is not None]
    if not logger:  # a learning-rate monitor has nowhere to write (``~logger``): left out rather than an error
        callbacks = [c for c in callbacks if not isinstance(c, LearningRateMonitor)]
    stopping = build(cfg.stopping) if cfg.get("stopping") else None
    if stopping is not None:
        stopping.distance = getattr(uq, "distance", None)
        callbacks.append(stopping)
    trainer = build(cfg.trainer, callbacks=callbacks, logger=logger)

    begin = time.perf_counter()
    trainer.fit(task, datamodule=datamodule, ckpt_path=cfg.get("ckpt_path"))
    seconds = time.perf_counter() - begin

    results = {**task.results(), "steps": int(trainer.global_step), "seconds": round(seconds, 3)}
    if stopping is not None:
        results |= stopping.report(trainer)
    if schedule is not None:
        results["schedule"] = schedule
    results["metrics"].update(truth_metrics(results["params"], results["metrics"], task.target.truth))
    if task.target.truth is not None:
        results["truth"] = {name: np.asarray(value, dtype=float).tolist() for name, value in task.target.truth.items()}
    return task, trainer, results


def refit(cfg: DictConfig, replicate: int, seed: int, steps: int, parametric: bool, start: dict[str, Any]
          ) -> dict[str, Any]:
    """One bootstrap refit (:class:`slm.uncertainty.Bootstrap`): ``steps`` steps from ``start`` with noise
    ``seed``, on data simulated again at ``start`` with data seed ``seed`` (``parametric``) or on the real data
    resampled over its units (``data.bootstrap=replicate``); no logger, checkpoints or uncertainty. Returns
    the refitted task."""
    item = cfg.copy()
    settings = {"uq": None, "logger": None, "callbacks": None, "seed": seed, "ckpt_path": None,
                "trainer.max_steps": steps, "trainer.max_epochs": -1, "trainer.enable_progress_bar": False,
                "trainer.enable_checkpointing": False}
    if parametric:
        settings |= {f"truth.{name}": value.tolist() for name, value in start.items()} | {"data.seed": seed}
    else:
        settings["data.bootstrap"] = replicate
    for key, value in settings.items():
        OmegaConf.update(item, key, value, force_add=True)
    return fit(item, start=start)[0]


def report_uncertainty(task: Any, results: dict[str, Any], out: Path) -> None:
    """Log the intervals in one line, draw ``uncertainty.png`` and send it and the intervals to TensorBoard."""
    uncertainty = results["uncertainty"]
    log.info(summary_line(uncertainty, results["params"]))
    figure = uncertainty_figure(results["params"], uncertainty, results.get("truth"))
    figure.savefig(out / "uncertainty.png", dpi=110, bbox_inches="tight")
    if task.tensorboard is not None:
        task.tensorboard.add_figure("uncertainty", figure, task.global_step)
        task.tensorboard.add_text("uncertainty", summary_line(uncertainty, results["params"]), task.global_step)


def truth_metrics(params: dict[str, Any], metrics: dict[str, Any], truth: dict[str, Any] | None) -> dict[str, float]:
    """How close the fit came to a known truth: ``param_rel_error``, the largest ``|fitted - true| / |true|`` over
    every true value (each element of a field); for an array-valued parameter also ``<name>_rmse`` and, where
    the metrics hold an exact estimate ``<name>_mle``, its RMSE to the truth (``<name>_mle_rmse``) and the fit's
    RMSE to it (``<name>_rmse_to_mle``; blocks without an MLE are left out)."""
    out: dict[str, float] = {}
    relative = []
    for name, value in (truth or {}).items():
        if name not in params:
            continue
        true, fitted = np.asarray(value, dtype=float), np.asarray(params[name], dtype=float)
        nonzero = true != 0
        relative += list(np.abs(fitted - true)[nonzero] / np.abs(true)[nonzero])
        if true.ndim:
            out[f"{name}_rmse"] = float(np.sqrt(np.mean((fitted - true) ** 2)))
            if f"{name}_mle" in metrics:
                mle = np.array(metrics[f"{name}_mle"], dtype=float)
                known = np.isfinite(mle)
                out[f"{name}_mle_rmse"] = float(np.sqrt(np.mean((mle - true)[known] ** 2)))
                out[f"{name}_rmse_to_mle"] = float(np.sqrt(np.mean((fitted - mle)[known] ** 2)))
    if relative:
        out["param_rel_error"] = float(max(relative))
    return out
