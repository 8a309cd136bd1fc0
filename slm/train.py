"""``train(cfg)``: build everything from a Hydra config, fit, and write ``results.json``."""

from __future__ import annotations

import csv
import json
import logging
import math
import os
import time
from pathlib import Path
from typing import Any

import lightning as L
import numpy as np
import torch
from hydra import compose, initialize_config_dir
from hydra.errors import InstantiationException
from hydra.utils import instantiate
from omegaconf import DictConfig, OmegaConf
from rich.progress import MofNCompleteColumn, Progress

from slm.errors import InputError

log = logging.getLogger(__name__)

#: The Hydra configs of the repository (``configs/`` beside the package).
CONFIG_DIR = Path(__file__).resolve().parents[1] / "configs"


def compose_config(*overrides: str) -> DictConfig:
    """The training config as ``scripts/train.py`` composes it, with ``overrides`` (``experiment=...``,
    ``key=value``), outside a Hydra run: set ``paths.output_dir`` to where the run should write."""
    os.environ.setdefault("PROJECT_ROOT", str(CONFIG_DIR.parent))
    with initialize_config_dir(version_base="1.3", config_dir=str(CONFIG_DIR)):
        return compose("train", overrides=list(overrides))


def build(node: DictConfig | dict, **kwargs: Any) -> Any:
    """``hydra.utils.instantiate`` that lets our own one-line :class:`InputError` through unwrapped."""
    try:
        return instantiate(node, **kwargs)
    except InstantiationException as err:
        cause = err.__cause__
        while isinstance(cause, InstantiationException):  # nested nodes (a model's estimator) wrap it again
            cause = cause.__cause__
        if isinstance(cause, InputError):
            raise cause from None
        raise


def build_task_and_data(cfg: DictConfig) -> tuple[Any, Any]:
    """Instantiate ``cfg.model`` (with its estimators), set up ``cfg.data``, instantiate ``cfg.task`` around the
    model and hand it the data's declared target (:mod:`slm.targets`)."""
    simulator = build(cfg.model)
    datamodule = build(cfg.data)
    datamodule.setup("fit")
    task = build(cfg.task, simulator=simulator)
    task.target = datamodule.task_target()
    return task, datamodule


#: Optimiser and scheduler settings that must be positive (all others there must be >= 0).
POSITIVE = ("lr", "max_lr")


def check_settings(cfg: DictConfig) -> None:
    """Refuse, in one line naming the key, a non-finite number anywhere in the config, a negative or
    zero learning rate, a negative optimiser or scheduler setting, or a run length below one."""
    def walk(node: Any, key: str) -> None:
        if isinstance(node, dict):
            for name, value in node.items():
                walk(value, f"{key}.{name}" if key else str(name))
        elif isinstance(node, list):
            for i, value in enumerate(node):
                walk(value, f"{key}[{i}]")
        elif isinstance(node, float) and not math.isfinite(node):
            raise InputError(f"{key}: expected a finite number, got {node}")
        elif isinstance(node, int | float) and not isinstance(node, bool):
            name = key.rsplit(".", 1)[-1]
            if key.startswith(("task.optimizer.", "task.scheduler.")) and not name.startswith("_"):
                if name in POSITIVE and node <= 0:
                    raise InputError(f"{key}: expected a positive learning rate, got {node}")
                if node < 0:
                    raise InputError(f"{key}: expected a number >= 0, got {node}")

    walk(OmegaConf.to_container(cfg, resolve=True), "")
    for key in ("trainer.max_epochs", "trainer.max_steps"):
        value = OmegaConf.select(cfg, key)
        if value is not None and value != -1 and not (isinstance(value, int) and value >= 1):
            raise InputError(f"{key}: expected a positive integer (or -1 for no limit), got {value}")


def check_checkpoint(ckpt_path: str | None) -> None:
    """Fail early, in one line, on a missing or unreadable checkpoint."""
    if ckpt_path is None:
        return
    if not Path(ckpt_path).is_file():
        raise InputError(f"ckpt_path: file not found: {ckpt_path}")
    try:
        checkpoint = torch.load(ckpt_path, map_location="cpu", weights_only=False)
    except Exception as err:  # torch raises many kinds for a corrupt file
        raise InputError(f"ckpt_path: cannot read {ckpt_path} as a checkpoint ({type(err).__name__})") from None
    if not isinstance(checkpoint, dict) or "state_dict" not in checkpoint:
        raise InputError(f"ckpt_path: {ckpt_path} is not a Lightning checkpoint (no 'state_dict')")


def train(cfg: DictConfig) -> dict[str, Any]:
    """Fit ``cfg.model`` to ``cfg.data`` with ``cfg.task`` and return the ``results.json`` content.

    Everything that can be checked (config values, data files, checkpoint) is checked before any
    training compute; problems raise :class:`slm.InputError` with a one-line message.
    """
    check_settings(cfg)
    items = getattr(build(cfg.data), "items", list)()
    if items:
        return train_each(cfg, items)
    if cfg.get("seed") is not None:
        L.seed_everything(cfg.seed, workers=True, verbose=False)
    check_checkpoint(cfg.get("ckpt_path"))
    task, datamodule = build_task_and_data(cfg)
    # The whole resolved config goes into every checkpoint (hyper_parameters), so a checkpoint knows its run.
    task.save_hyperparameters(OmegaConf.to_container(cfg, resolve=True), logger=False)
    callbacks = [build(c) for c in cfg.get("callbacks", {}).values() if c is not None]
    logger = build(cfg.logger) if cfg.get("logger") else False
    trainer = build(cfg.trainer, callbacks=callbacks, logger=logger)

    start = time.perf_counter()
    trainer.fit(task, datamodule=datamodule, ckpt_path=cfg.get("ckpt_path"))
    seconds = time.perf_counter() - start

    results = {**task.results(), "steps": int(trainer.global_step), "seconds": round(seconds, 3)}
    results["metrics"].update(truth_metrics(results["params"], results["metrics"], task.target.truth))
    if trainer.is_global_zero:
        out = Path(cfg.paths.output_dir)
        out.mkdir(parents=True, exist_ok=True)
        (out / "results.json").write_text(json.dumps(results, indent=2) + "\n")
        task.save_artifacts(out)
        summary = ", ".join(f"{k}={_fmt(v)}" for k, v in {**results["params"], **results["metrics"]}.items())
        log.info("fitted %s | %d steps in %.1f s | %s", summary, results["steps"], seconds, out / "results.json")
    return results


def train_each(cfg: DictConfig, names: list[str]) -> dict[str, Any]:
    """One :func:`train` per item of the data module (``data.name=<name>``; the images of a folder), each into
    ``<output_dir>/<stem>/``, under a progress bar. Writes ``items.csv`` (one row per item: its metrics, steps and
    seconds) and returns (and writes) ``results.json`` with the mean of every metric over the items, ``items`` (their
    number), and the total steps and seconds."""
    if cfg.get("ckpt_path"):
        raise InputError("ckpt_path: a checkpoint belongs to one item; resume it with data.name=<name> and "
                         "paths.output_dir=<run>/<stem>")
    out = Path(cfg.paths.output_dir)
    rows = []
    with Progress(*Progress.get_default_columns(), MofNCompleteColumn()) as bar:
        task = bar.add_task(f"fitting {len(names)} items", total=len(names))
        for name in names:
            item_cfg = cfg.copy()
            OmegaConf.update(item_cfg, "data.name", name)
            OmegaConf.update(item_cfg, "paths.output_dir", str(out / Path(name).stem))
            OmegaConf.update(item_cfg, "trainer.enable_progress_bar", False)
            result = train(item_cfg)
            rows.append({"item": name, **{k: v for k, v in result["metrics"].items() if isinstance(v, int | float)},
                         "steps": result["steps"], "seconds": result["seconds"]})
            bar.advance(task)
    columns = list(dict.fromkeys(key for row in rows for key in row))
    metrics = {k: float(np.mean([row[k] for row in rows if k in row])) for k in columns
               if k not in ("item", "steps", "seconds")}
    results = {"params": {}, "metrics": {**metrics, "items": len(rows)}, "steps": sum(r["steps"] for r in rows),
               "seconds": round(sum(r["seconds"] for r in rows), 3)}
    with open(out / "items.csv", "w", newline="") as file:
        writer = csv.DictWriter(file, columns)
        writer.writeheader()
        writer.writerows({k: f"{v:.6g}" if isinstance(v, float) else v for k, v in row.items()} for row in rows)
    (out / "results.json").write_text(json.dumps(results, indent=2) + "\n")
    log.info("fitted %d items | mean %s | %s", len(rows), ", ".join(f"{k}={v:.4f}" for k, v in metrics.items()),
             out / "items.csv")
    return results


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


def _fmt(value: Any) -> str:
    if isinstance(value, list) and np.size(value) > 4:  # a field: its shape and mean, not every value
        array = np.asarray(value, dtype=float)
        return f"[{'x'.join(map(str, array.shape))} values, mean {np.nanmean(array):.4f}]"
    return f"{value:.4f}" if isinstance(value, float) else str(value)
