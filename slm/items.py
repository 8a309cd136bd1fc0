"""Fitting the items of a data module one at a time (the images of a folder): one run per item, a table of
them, and their mean."""

from __future__ import annotations

import csv
import json
import logging
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
from omegaconf import DictConfig, OmegaConf
from rich.progress import MofNCompleteColumn, Progress

from slm.errors import InputError

log = logging.getLogger("slm.train")


def train_each(cfg: DictConfig, names: list[str], train: Callable[[DictConfig], dict[str, Any]]) -> dict[str, Any]:
    """One ``train`` (:func:`slm.train.train`) per item of the data module (``data.name=<name>``; the images of a
    folder), each into ``<output_dir>/<stem>/``, under a progress bar. Writes ``items.csv`` (one row per item: its
    metrics, steps and seconds) and returns (and writes) ``results.json`` with the mean of every metric over the
    items, ``items`` (their number), and the total steps and seconds."""
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
