"""``train(cfg)``: build everything from a Hydra config, fit, and write ``results.json``."""

from __future__ import annotations

import json
import logging
import time
from pathlib import Path
from typing import Any

import lightning as L
import torch
from hydra.errors import InstantiationException
from hydra.utils import instantiate
from omegaconf import DictConfig, OmegaConf

from slm.errors import InputError

log = logging.getLogger(__name__)


def _build(node: DictConfig | dict, **kwargs: Any) -> Any:
    """``hydra.utils.instantiate`` that lets our own one-line :class:`InputError` through unwrapped."""
    try:
        return instantiate(node, **kwargs)
    except InstantiationException as err:
        if isinstance(err.__cause__, InputError):
            raise err.__cause__ from None
        raise


def build_simulator(model_cfg: DictConfig) -> torch.nn.Module:
    """Instantiate ``cfg.model``. Keys ending in ``_true`` (e.g. ``beta_true``) are the ground truth
    of reference simulations, read by the data config, and are not simulator arguments."""
    node = {k: v for k, v in OmegaConf.to_container(model_cfg, resolve=True).items() if not k.endswith("_true")}
    return _build(node)


def build_task_and_data(cfg: DictConfig, simulator: torch.nn.Module | None) -> tuple[Any, Any]:
    """Instantiate and set up ``cfg.data``, then ``cfg.task`` around ``simulator`` (if any)."""
    datamodule = _build(cfg.data)
    datamodule.setup("fit")
    task = _build(cfg.task, **({"simulator": simulator} if simulator is not None else {}))
    return task, datamodule


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
    if cfg.get("seed") is not None:
        L.seed_everything(cfg.seed, workers=True, verbose=False)
    check_checkpoint(cfg.get("ckpt_path"))
    # Tasks whose learnable state comes from the data (segmentation) have no model config.
    task, datamodule = build_task_and_data(cfg, build_simulator(cfg.model) if cfg.get("model") else None)
    callbacks = [_build(c) for c in cfg.get("callbacks", {}).values() if c is not None]
    logger = _build(cfg.logger) if cfg.get("logger") else False
    trainer = _build(cfg.trainer, callbacks=callbacks, logger=logger)

    start = time.perf_counter()
    trainer.fit(task, datamodule=datamodule, ckpt_path=cfg.get("ckpt_path"))
    seconds = time.perf_counter() - start

    results = {**task.results(datamodule), "steps": int(trainer.global_step), "seconds": round(seconds, 3)}
    if trainer.is_global_zero:
        out = Path(cfg.paths.output_dir)
        out.mkdir(parents=True, exist_ok=True)
        (out / "results.json").write_text(json.dumps(results, indent=2) + "\n")
        task.save_artifacts(out, datamodule)
        summary = ", ".join(f"{k}={_fmt(v)}" for k, v in {**results["params"], **results["metrics"]}.items())
        log.info("fitted %s | %d steps in %.1f s | %s", summary, results["steps"], seconds, out / "results.json")
    return results


def _fmt(value: Any) -> str:
    return f"{value:.4f}" if isinstance(value, float) else str(value)
