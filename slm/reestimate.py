"""The uncertainty of a finished run, estimated again (``scripts/uncertainty.py``): another method or level on
the run's own config and latest checkpoint."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import torch
from omegaconf import OmegaConf

from slm.config import build, build_task_and_data, compose_config
from slm.errors import InputError
from slm.fit import refit, report_uncertainty


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
