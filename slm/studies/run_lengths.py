"""Every experiment's default run, as a user starts it: its steps, seconds and whether it converged
(``scripts/run_lengths.py``). Each run is its own ``scripts/train.py`` process, so a table row is what the
command gives: the run length chosen by the stopping rule (:mod:`slm.stopping`) under the experiment's cap.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from slm.config import CONFIG_DIR

ROOT = CONFIG_DIR.parent
#: The table's columns: (key in a row, heading).
COLUMNS = (("experiment", "experiment"), ("steps", "steps"), ("seconds", "fit s"),
           ("command_seconds", "command s"), ("converged", "converged"), ("stop_reason", "stop"),
           ("gradient_z", "gradient z"), ("root_distance_se", "se from root"), ("metric", "headline metric"))
#: The metric a row shows, by preference.
HEADLINE = ("param_rel_error", "msd_rel_error", "beta_rmse", "dice", "iou", "track_loss")


def experiments() -> list[str]:
    """Every experiment config's name."""
    return sorted(p.stem for p in (CONFIG_DIR / "experiment").glob("*.yaml"))


def run(name: str, out: Path, overrides: list[str], timeout: float) -> dict[str, Any]:
    """Run ``experiment=name`` in its own process, writing into ``out``; one table row."""
    command = [sys.executable, str(ROOT / "scripts" / "train.py"), f"experiment={name}", "~logger",
               "trainer.enable_progress_bar=false", f"paths.output_dir={out}", *overrides]
    begin = time.perf_counter()
    try:
        done = subprocess.run(command, cwd=ROOT, capture_output=True, text=True, timeout=timeout,
                              env={**os.environ, "PYTHONPATH": str(ROOT)})
    except subprocess.TimeoutExpired:
        return {"experiment": name, "error": f"over {timeout:.0f} s"}
    seconds = time.perf_counter() - begin
    results = out / "results.json"
    if done.returncode or not results.exists():
        last = (done.stderr.strip().splitlines() or ["no output"])[-1]
        return {"experiment": name, "error": last[:200]}
    fit = json.loads(results.read_text())
    if "items" in fit:  # a data set of several items: the first item's run stands for the row
        fit = next(iter(fit["items"].values()))
    metrics = fit.get("metrics", {})
    headline = next((k for k in HEADLINE if k in metrics), None)
    return {"experiment": name, "steps": fit.get("steps"), "seconds": fit.get("seconds"),
            "command_seconds": round(seconds, 1), "converged": fit.get("converged"),
            "stop_reason": fit.get("stop_reason"), "gradient_z": fit.get("gradient_z"),
            "root_distance_se": fit.get("root_distance_se"),
            "metric": None if headline is None else f"{headline} {metrics[headline]:.4g}"}


def markdown(rows: list[dict[str, Any]]) -> str:
    """The rows as a markdown table."""
    def cell(row: dict[str, Any], key: str) -> str:
        if "error" in row and key != "experiment":
            return row["error"] if key == "steps" else ""
        value = row.get(key)
        return "-" if value is None else f"{value:.3g}" if isinstance(value, float) else str(value)
    lines = ["| " + " | ".join(h for _, h in COLUMNS) + " |", "|" + "---|" * len(COLUMNS)]
    lines += ["| " + " | ".join(cell(r, k) for k, _ in COLUMNS) + " |" for r in rows]
    return "\n".join(lines)
