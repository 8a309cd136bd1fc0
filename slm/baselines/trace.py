"""The record a calibrator leaves: its estimate after each round, with time and simulations spent."""

from __future__ import annotations

import json
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import lightning as L

from slm.parameters import flat_values


@dataclass
class Trace:
    """Estimates of a calibration run, one per round (ABC generation, CMA iteration, logged AD step).

    ``seconds`` and ``simulations`` are cumulative from the start of the run; ``estimates`` are
    parameter dicts; ``intervals`` (ABC, NPE) the 90% credible interval of each parameter; ``stopped`` why
    a run ended early, if it failed.
    """

    method: str
    seconds: list[float] = field(default_factory=list)
    simulations: list[int] = field(default_factory=list)
    estimates: list[dict[str, float]] = field(default_factory=list)
    intervals: list[dict[str, tuple[float, float]]] = field(default_factory=list)
    stopped: str | None = None

    def add(self, seconds: float, simulations: int, estimate: dict[str, float],
            interval: dict[str, tuple[float, float]] | None = None) -> None:
        self.seconds.append(float(seconds))
        self.simulations.append(int(simulations))
        self.estimates.append({name: float(value) for name, value in estimate.items()})
        if interval is not None:
            self.intervals.append({name: (float(lo), float(hi)) for name, (lo, hi) in interval.items()})

    def save(self, path: str | Path) -> None:
        Path(path).write_text(json.dumps(asdict(self)) + "\n")

    @classmethod
    def load(cls, path: str | Path) -> Trace:
        return cls(**json.loads(Path(path).read_text()))


class ParameterTrace(L.Callback):
    """Record a fit's parameters (:func:`slm.parameters.flat_values`) every ``every`` optimiser steps with the
    seconds since the fit started, and write them as a :class:`Trace` to ``path`` at the end (how the
    calibrator comparison follows approximate-gradient fits; ``simulations`` holds the step)."""

    def __init__(self, path: str, every: int = 1, method: str = "AD"):
        self.path, self.every = Path(path), every
        self.trace = Trace(method)
        self.start = 0.0

    def on_fit_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self.start = time.perf_counter()

    def on_train_batch_end(self, trainer: L.Trainer, pl_module: L.LightningModule, outputs: Any, batch: Any,
                           batch_idx: int) -> None:
        if trainer.global_step % self.every == 0:
            self.trace.add(time.perf_counter() - self.start, trainer.global_step,
                           flat_values(pl_module.simulator.parameter_values()))

    def on_fit_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if trainer.is_global_zero:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self.trace.save(self.path)
