"""The record a calibrator leaves: its estimate after each round, with time and simulations spent."""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass
class Trace:
    """Estimates of a calibration run, one per round (ABC generation, CMA iteration, logged AD step).

    ``seconds`` and ``simulations`` are cumulative from the start of the run; ``estimates`` are
    parameter dicts; ``intervals`` (ABC only) the 90% credible interval of each parameter.
    """

    method: str
    seconds: list[float] = field(default_factory=list)
    simulations: list[int] = field(default_factory=list)
    estimates: list[dict[str, float]] = field(default_factory=list)
    intervals: list[dict[str, tuple[float, float]]] = field(default_factory=list)

    def add(self, seconds: float, simulations: int, estimate: dict[str, float],
            interval: dict[str, tuple[float, float]] | None = None) -> None:
        self.seconds.append(float(seconds))
        self.simulations.append(int(simulations))
        self.estimates.append({name: float(value) for name, value in estimate.items()})
        if interval is not None:
            self.intervals.append({name: (float(lo), float(hi)) for name, (lo, hi) in interval.items()})
