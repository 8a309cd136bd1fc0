"""The benchmark's report: the Markdown table and the throughput figure."""

from __future__ import annotations

import math
from collections.abc import Iterable

from slm.studies.benchmark.timing import Row

COLUMNS = ("model", "lattice", "batch", "forward steps/s", "copy attempts/s", "gradient step", "epoch", "peak memory")


def markdown(rows: Iterable[Row], columns: Iterable[str] = COLUMNS) -> str:
    """The rows as a Markdown table with ``columns`` (empty cells where a row has no value)."""
    columns = list(columns)
    lines = ["| " + " | ".join(columns) + " |", "|" + "---|" * len(columns)]
    lines += ["| " + " | ".join(str(row.get(c, "")) for c in columns) + " |" for row in rows]
    return "\n".join(lines)


#: The CPM benchmark's modes as the figure names them.
ENGINE_LABELS = {"random": "random schedule (default)", "uniform": "random, literal uniform targets",
                 "kernel": "sweep, compiled", "torch": "sweep, torch", "sequential": "literal sequential (Python)",
                 "glazier": "glazier serial (Rust)"}


def throughput_figure(rows: Iterable[Row], path: str) -> None:
    """Log-log figure of the rows with copy attempts/s and an ``engine``: against the lattice's sites at batch 1
    (left, one line per engine) and against the batch on each lattice (right)."""
    from matplotlib.figure import Figure

    rows = [row for row in rows if "copy attempts/s" in row and "engine" in row]
    figure = Figure(figsize=(10, 4))
    left, right = figure.subplots(1, 2, sharey=True)
    for engine in dict.fromkeys(row["engine"] for row in rows):
        line = sorted((row["sites"], float(row["copy attempts/s"].replace(",", ""))) for row in rows
                      if row["engine"] == engine and row["batch"] == 1)
        if line:
            left.plot(*zip(*line, strict=True), "o-", label=ENGINE_LABELS.get(engine, engine))
    for sites in sorted({row["sites"] for row in rows}):
        line = sorted((row["batch"], float(row["copy attempts/s"].replace(",", ""))) for row in rows
                      if row["engine"] == "random" and row["sites"] == sites)
        if len(line) > 1:
            right.plot(*zip(*line, strict=True), "o-", label=f"random schedule, {math.isqrt(sites)}^2")
    for axis, label in ((left, "lattice sites (batch 1)"), (right, "lattices per batch")):
        axis.set(xscale="log", yscale="log", xlabel=label, ylabel="copy attempts / s")
        axis.grid(True, which="both", alpha=0.3)
        axis.legend()
    figure.tight_layout()
    figure.savefig(path, dpi=120)
