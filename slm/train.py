"""``train(cfg)``: build everything from a Hydra config, fit, and write ``results.json``."""

from __future__ import annotations

import csv
import json
import logging
import math
import os
import time
import zlib
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
from slm.parameters import set_values
from slm.plots import uncertainty_figure
from slm.uncertainty import summary_line

log = logging.getLogger(__name__)
#: What each Monte Carlo schedule means, for the run's first line.
SCHEDULES = {"random": "uniform random targets, one attempt at a time: the MCS of CompuCell3D, Morpheus, Artistoo",
             "sweep": "every site once per MCS: the same equilibrium as the field's MCS, other kinetics"}

#: The Hydra configs of the repository (``configs/`` beside the package).
CONFIG_DIR = Path(__file__).resolve().parents[1] / "configs"


def compose_config(*overrides: str) -> DictConfig:
    """The training config as ``scripts/train.py`` composes it, with ``overrides`` (``experiment=...``,
    ``key=value``), outside a Hydra run: set ``paths.output_dir`` to where the run should write."""
    os.environ.setdefault("PROJECT_ROOT", str(CONFIG_DIR.parent))
    with initialize_config_dir(version_base="1.3", config_dir=str(CONFIG_DIR)):
        return compose("train", overrides=list(overrides))


def draw(index: int, key: str, box: Any) -> float:
    """``low + (high - low) u`` with ``u`` uniform in [0, 1) fixed by ``(key, index)``, for ``box = [low, high]``
    (``high < low`` gives ``1 - x`` of the box reversed: a mixture's second weight): the resolver
    ``${draw:index,key,box}`` that gives every job of a coverage study its own truth and start
    (``configs/coverage/``)."""
    low, high = (float(v) for v in box)
    seed = np.random.SeedSequence([int(index), zlib.crc32(key.encode())])
    return low + (high - low) * float(np.random.default_rng(seed).random())


OmegaConf.register_new_resolver("draw", draw, replace=True)


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


def check_choices(arguments: list[str]) -> None:
    """Refuse, in one line, a command-line choice of a config group that does not exist (``uq=foo``), before
    Hydra composes (whose own message spans many lines); a ``--config-dir`` adds its options."""
    folders = [CONFIG_DIR]
    for i, argument in enumerate(arguments):
        if argument in ("--config-dir", "-cd") and i + 1 < len(arguments):
            folders.append(Path(arguments[i + 1]))
        elif argument.startswith("--config-dir="):
            folders.append(Path(argument.split("=", 1)[1]))
    for argument in arguments:
        key, _, value = argument.partition("=")
        groups = [folder / key.lstrip("+~") for folder in folders]
        if argument.startswith("-") or not value or not groups[0].is_dir() or value == "null" or "," in value \
                or "(" in value:
            continue
        options = sorted({p.stem for group in groups if group.is_dir() for p in group.glob("*.yaml")})
        if value not in options:
            raise InputError(f"{key}: unknown option {value!r}; expected one of {', '.join(options)}")


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
    """Fit ``cfg.model`` to ``cfg.data`` with ``cfg.task``, estimate the fit's uncertainty (``cfg.uq``,
    :mod:`slm.uncertainty`) and return the ``results.json`` content.

    Everything that can be checked (config values, data files, checkpoint, the uncertainty settings) is
    checked before any training compute; problems raise :class:`slm.InputError` with a one-line message.
    """
    check_settings(cfg)
    items = getattr(build(cfg.data), "items", list)()
    if items:
        return train_each(cfg, items)
    uq = build(cfg.uq) if cfg.get("uq") and cfg.uq.get("_target_") else None
    task, trainer, results = fit(cfg, uq)
    if uq is not None:
        results["uncertainty"] = uq(task, results["steps"], refit=lambda *args: refit(cfg, *args))
    if trainer.is_global_zero:
        out = Path(cfg.paths.output_dir)
        out.mkdir(parents=True, exist_ok=True)
        (out / "results.json").write_text(json.dumps(results, indent=2) + "\n")
        task.save_artifacts(out)
        summary = ", ".join(f"{k}={_fmt(v)}" for k, v in {**results["params"], **results["metrics"]}.items())
        log.info("fitted %s | %d steps in %.1f s | %s", summary, results["steps"], results["seconds"],
                 out / "results.json")
        if uq is not None:
            report_uncertainty(task, results, out)
    return results


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
    callbacks = [build(c) for c in (cfg.get("callbacks") or {}).values() if c is not None]
    logger = build(cfg.logger) if cfg.get("logger") else False
    trainer = build(cfg.trainer, callbacks=callbacks, logger=logger)

    begin = time.perf_counter()
    trainer.fit(task, datamodule=datamodule, ckpt_path=cfg.get("ckpt_path"))
    seconds = time.perf_counter() - begin

    results = {**task.results(), "steps": int(trainer.global_step), "seconds": round(seconds, 3)}
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


def estimate_uncertainty(run: Path, overrides: list[str]) -> dict[str, Any]:
    """The uncertainty of a finished run, again (``scripts/uncertainty.py``): its config composed from its own
    overrides (``.hydra/overrides.yaml``) and ``overrides`` (``uq=bootstrap``, ``uq.level=0.95``), its parameters
    from its latest checkpoint; writes ``uncertainty`` into its ``results.json`` and redraws ``uncertainty.png``."""
    run = Path(run)
    checkpoints = sorted((run / "checkpoints").glob("*.ckpt"), key=lambda p: p.stat().st_mtime)
    needs = ((run / ".hydra" / "overrides.yaml", "a Hydra run folder"), (run / "results.json", "a finished run"))
    for needed, what in needs:
        if not needed.is_file():
            raise InputError(f"run: {run} is not {what} (no {needed.relative_to(run)})")
    if not checkpoints:
        raise InputError(f"run: {run} has no checkpoint (checkpoints/*.ckpt)")
    cfg = compose_config(*OmegaConf.load(run / ".hydra" / "overrides.yaml"), f"paths.output_dir={run}", *overrides)
    if not (cfg.get("uq") and cfg.uq.get("_target_")):
        raise InputError("uq: none chosen; pick uq=sandwich or uq=bootstrap")
    uq = build(cfg.uq)
    task, _ = build_task_and_data(cfg)
    task.load_state_dict(torch.load(checkpoints[-1], map_location="cpu", weights_only=False)["state_dict"])
    uq.check(task)
    results = json.loads((run / "results.json").read_text())
    results["uncertainty"] = uq(task, results["steps"], refit=lambda *args: refit(cfg, *args))
    (run / "results.json").write_text(json.dumps(results, indent=2) + "\n")
    report_uncertainty(task, results, run)
    return results


def report_uncertainty(task: Any, results: dict[str, Any], out: Path) -> None:
    """Log the intervals in one line, draw ``uncertainty.png`` and send it and the intervals to TensorBoard."""
    uncertainty = results["uncertainty"]
    log.info(summary_line(uncertainty, results["params"]))
    figure = uncertainty_figure(results["params"], uncertainty, results.get("truth"))
    figure.savefig(out / "uncertainty.png", dpi=110, bbox_inches="tight")
    if task.tensorboard is not None:
        task.tensorboard.add_figure("uncertainty", figure, task.global_step)
        task.tensorboard.add_text("uncertainty", summary_line(uncertainty, results["params"]), task.global_step)


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
