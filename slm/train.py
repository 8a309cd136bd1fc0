"""``train(cfg)``: fit a Hydra config (:func:`slm.fit.fit`), estimate its intervals, and write ``results.json``."""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

import numpy as np
from lightning.pytorch.utilities import rank_zero_only
from omegaconf import DictConfig

from slm.config import build, check_settings
from slm.errors import NonFiniteError
from slm.fit import fit, refit, report_uncertainty
from slm.items import train_each
from slm.restarts import fit_restarts
from slm.restarts import settings as restart_settings
from slm.stopping import sentence

log = logging.getLogger(__name__)


def train(cfg: DictConfig) -> dict[str, Any]:
    """Fit ``cfg.model`` to ``cfg.data`` with ``cfg.task``, estimate the fit's uncertainty (``cfg.uq``,
    :mod:`slm.uncertainty`) and return the ``results.json`` content.

    Everything that can be checked (config values, data files, checkpoint, the uncertainty settings) is
    checked before any training compute; problems raise :class:`slm.InputError` with a one-line message.
    """
    check_settings(cfg)
    items = getattr(build(cfg.data), "items", list)()
    if items:
        return train_each(cfg, items, train)
    uq = build(cfg.uq) if cfg.get("uq") and cfg.uq.get("_target_") else None
    try:
        n, spread, seed = restart_settings(cfg)
        task, trainer, results = fit(cfg, uq) if n == 1 else fit_restarts(cfg, uq, fit, n, spread, seed)
    except NonFiniteError as error:  # said in results.json too, then raised: the run stops with its message
        if rank_zero_only.rank == 0:
            out = Path(cfg.paths.output_dir)
            out.mkdir(parents=True, exist_ok=True)
            stopped = {"params": {}, "metrics": {}, "steps": error.step, "converged": False,
                       "stop_reason": "non-finite", "error": str(error)}
            (out / "results.json").write_text(json.dumps(stopped, indent=2) + "\n")
        raise
    if uq is not None:
        results["uncertainty"] = uq(task, results["steps"], refit=lambda *args: refit(cfg, *args))
    if trainer.is_global_zero:
        out = Path(cfg.paths.output_dir)
        out.mkdir(parents=True, exist_ok=True)
        (out / "results.json").write_text(json.dumps(results, indent=2) + "\n")
        task.save_artifacts(out)
        summary = ", ".join(f"{k}={_fmt(v)}" for k, v in {**results["params"], **results["metrics"]}.items())
        said = f" | {sentence(results)}" if "stop_reason" in results else ""
        log.info("fitted %s | %d steps in %.1f s%s | %s", summary, results["steps"], results["seconds"], said,
                 out / "results.json")
        if uq is not None:
            report_uncertainty(task, results, out)
        if results.get("converged") is False:
            log.warning(unconverged_line(results))
    return results


def unconverged_line(results: dict[str, Any]) -> str:
    """One warning line for a fit that ended unconverged, with the one-step estimate beside the fit where the
    intervals computed one."""
    center = (results.get("uncertainty") or {}).get("center")
    beside = ("; fit " + ", ".join(f"{k}={_fmt(v)}" for k, v in results["params"].items()) + " | one-step estimate "
              + ", ".join(f"{k}={_fmt(v)}" for k, v in center.items())) if center else ""
    return (f"the fit ended at the {results['stop_reason']} after {results['steps']} steps without converging "
            f"({sentence(results)}){beside}")


def _fmt(value: Any) -> str:
    """A reported value of any shape in a log line: a number, a short list, or a field's shape and mean."""
    if isinstance(value, list):
        array = np.asarray(value, dtype=float)
        if array.size > 4:  # a field: its shape and mean, not every value
            return f"[{'x'.join(map(str, array.shape))} values, mean {np.nanmean(array):.4f}]"
        return str(np.round(array, 4).tolist())
    return f"{value:.4f}" if isinstance(value, float) else str(value)
