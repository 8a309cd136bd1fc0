r"""Several starts of one fit (``task.restarts=N``), for losses with ridges and local minima (the act
populations): the best is kept by its loss, and the spread of the starts' estimates is reported.

**Starts.** Start 0 is the configured one. Start ``i > 0`` moves every learnable number of the configured start
by ``spread * u_i`` in its unconstrained coordinate (``log`` of a positive value, ``logit`` of a probability, the
logits of mixture weights), ``u_i`` a scrambled Sobol point in ``[-1, 1]^D`` (seeded by ``task.restart_seed``):
``spread = 1`` spreads a positive parameter over a factor ``e`` either way.

**Choosing.** Each start is fitted in turn, with the run's stopping rule, in its own folder
(``restarts/<i>/``; the kept start's checkpoints are copied to the run's ``checkpoints/``). Their losses are
compared on common random numbers: the mean loss over :data:`BATCHES` training batches with the same noise
for every start (:meth:`slm.tasks.FittingTask.common_loss`), so the comparison is not decided by one start's
luckier draw.
"""

from __future__ import annotations

import logging
import shutil
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch
from omegaconf import DictConfig, OmegaConf
from scipy.stats import qmc

from slm.config import build_task_and_data
from slm.errors import InputError

log = logging.getLogger("slm.train")
#: Training batches the starts' losses are compared on.
BATCHES = 4


def settings(cfg: DictConfig) -> tuple[int, float, int]:
    """``task.restarts``, ``task.restart_spread`` and ``task.restart_seed``, checked (one-line errors)."""
    task = cfg.get("task") or {}
    n, spread, seed = task.get("restarts", 1), task.get("restart_spread", 1.0), task.get("restart_seed", 0)
    if isinstance(n, bool) or not isinstance(n, int) or n < 1:
        raise InputError(f"task.restarts: expected a number of starts >= 1, got {n!r}")
    if isinstance(spread, bool) or not isinstance(spread, int | float) or not spread > 0:
        raise InputError(f"task.restart_spread: expected a positive spread in unconstrained units, got {spread!r}")
    if n > 1 and cfg.get("ckpt_path"):
        raise InputError("ckpt_path: a run with task.restarts > 1 resumes one start at a time: resume the start's own "
                         "checkpoint (restarts/<i>/checkpoints/last.ckpt) with task.restarts=1")
    return n, float(spread), int(seed)


def starts(simulator: torch.nn.Module, n: int, spread: float, seed: int) -> list[dict[str, torch.Tensor]]:
    """``n`` start values (by parameter name) around the simulator's current ones; the first is the current."""
    parametrizations = simulator.parametrizations
    names = list(parametrizations.keys())
    stored = [parametrizations[name].original.detach() for name in names]
    size = sum(t.numel() for t in stored)
    points = 2 * qmc.Sobol(size, scramble=True, seed=seed).random(max(n - 1, 1)) - 1
    out = [{name: getattr(simulator, name).detach().clone() for name in names}]
    for u in points[: n - 1]:
        shift, at, start = torch.as_tensor(spread * u, dtype=stored[0].dtype), 0, {}
        for name, theta in zip(names, stored, strict=True):
            moved = theta + shift[at:at + theta.numel()].view_as(theta)
            at += theta.numel()
            start[name] = parametrizations[name][0](moved).detach()
        out.append(start)
    return out


def fit_restarts(cfg: DictConfig, uq: Any, fit: Callable[..., tuple[Any, Any, dict[str, Any]]], n: int,
                 spread: float, seed: int) -> tuple[Any, Any, dict[str, Any]]:
    """Fit ``cfg`` from ``n`` starts in turn with ``fit`` (:func:`slm.fit.fit`) and return the task, trainer and
    results of the start with the least common loss, its results holding ``restarts`` (every start's loss,
    estimate, steps and convergence, and the range of the estimates)."""
    task, _ = build_task_and_data(_single(cfg))
    values = starts(task.simulator, n, spread, seed)
    runs = []
    for i, start in enumerate(values):
        item = _single(cfg)
        OmegaConf.update(item, "paths.output_dir", str(Path(cfg.paths.output_dir) / "restarts" / str(i)))
        log.info("restart %d of %d from %s", i + 1, n,
                 ", ".join(f"{k}={np.round(v.double().numpy(), 4).tolist()}" for k, v in start.items()))
        task, trainer, results = fit(item, uq, start={k: v for k, v in start.items()})
        loss = task.common_loss(trainer.datamodule, BATCHES)
        runs.append((loss, task, trainer, results))
    best = min(range(n), key=lambda i: runs[i][0])
    kept = Path(cfg.paths.output_dir) / "restarts" / str(best) / "checkpoints"
    if kept.is_dir():  # the kept start's checkpoints where a run keeps its own (resume it with task.restarts=1)
        shutil.copytree(kept, Path(cfg.paths.output_dir) / "checkpoints", dirs_exist_ok=True)
    loss, task, trainer, results = runs[best]
    estimates = [r[3]["params"] for r in runs]
    results["restarts"] = {
        "n": n, "spread": spread, "chosen": best, "loss": [round(r[0], 6) for r in runs],
        "converged": [r[3].get("converged") for r in runs], "steps": [r[3]["steps"] for r in runs],
        "params": estimates,
        "range": {name: [np.min([np.asarray(e[name], dtype=float) for e in estimates], 0).tolist(),
                         np.max([np.asarray(e[name], dtype=float) for e in estimates], 0).tolist()]
                  for name in estimates[0]}}
    results["seconds"] = round(sum(r[3]["seconds"] for r in runs), 3)
    log.info("restarts: kept start %d of %d (common loss %s); losses %s", best + 1, n, f"{loss:.6g}",
             ", ".join(f"{r[0]:.6g}" for r in runs))
    return task, trainer, results


def _single(cfg: DictConfig) -> DictConfig:
    item = cfg.copy()
    OmegaConf.update(item, "task.restarts", 1, force_add=True)
    return item
