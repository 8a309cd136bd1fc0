r"""Summary fitting: match a simulator's summary statistics over time to target ones.

Each step starts ``B`` lattices from the batch (``simulator.state(labels, cell_types)``), runs ``F``
frames of ``mcs_per_frame`` steps and records ``simulator.summary(state)`` after each frame, ``(B, F, m)``.
The per-lattice summaries go through ``simulator.surrogate`` (the score function's gradient), and with
``s`` their batch mean and ``t`` the target the loss is

.. math::  L = \frac{1}{F} \sum_{f, j} w_j \left(\frac{s_{fj} - t_{fj}}{c_j}\right)^2,
           \quad c_j = \mathrm{mean}_f |t_{fj}|,

a relative error per statistic (weights ``w``, default 1). Logs ``stat/<name>`` (last frame) every step
and the first lattice as an image every ``image_every`` steps. After training, a fresh simulation of
``eval_lattices`` lattices gives ``summary_rel_error`` (mean over frames and statistics of
``|s - t| / c``), and ``summary.json`` / ``summary.png`` (target and fitted curves) and ``lattice.png``
go into the run folder.
"""

from __future__ import annotations

import json
from pathlib import Path

import torch
from torch import Tensor

from slm.errors import InputError
from slm.models.base import Simulator
from slm.plots import lattice_image, save_field, summary_figure
from slm.tasks.base import PREVIEW_STREAM, FittingTask
from slm.uncertainty import Moments


class SummaryFitting(FittingTask):
    """Fit a simulator's summary statistics over time (see the module docstring).

    Args:
        simulator: a :class:`slm.models.Simulator` with ``state``, ``summary`` and ``summary_names``
            (the multi-cell CPM).
        checkpoint_every: activation checkpointing segment in steps (memory bounded for long rollouts);
            ``None`` stores every step.
        weights: weight of each statistic, by name (default 1 each).
        image_every: steps between lattice images in TensorBoard.
        eval_lattices: lattices of the final evaluation.
        param_lr: learning rate per parameter name (see :class:`slm.tasks.FittingTask`).
    """

    def __init__(self, simulator: Simulator, optimizer, scheduler=None, seed: int = 0,
                 checkpoint_every: int | None = None, weights: dict[str, float] | None = None,
                 image_every: int = 25, eval_lattices: int = 16, param_lr: dict[str, float] | None = None, target=None):
        super().__init__(simulator, optimizer, scheduler, seed, param_lr, target=target)
        names = list(getattr(simulator, "summary_names", ()))
        if not names:
            raise InputError(f"model: summary fitting needs a model with summary statistics, got "
                             f"{type(simulator).__name__}")
        unknown = sorted(set(weights or {}) - set(names))
        if unknown:
            raise InputError(f"task.weights: unknown statistic(s) {unknown}; expected some of {names}")
        self.names = names
        self.checkpoint_every = checkpoint_every
        self.register_buffer("weights", torch.tensor([float((weights or {}).get(n, 1.0)) for n in names]),
                             persistent=False)
        self.image_every = image_every
        self.eval_lattices = eval_lattices
        self.fitted: Tensor | None = None
        self.last_state = None
        self.batch_units = 1  # lattices per training step (as last seen)

    def simulate(self, labels: Tensor, cell_types: Tensor, frames: int, generator: torch.Generator) -> Tensor:
        """Per-lattice summaries ``(B, frames, m)`` from the given starting lattices."""
        every = self.target.mcs_per_frame
        self.last_state, series = self.simulator.rollout(
            self.simulator.state(labels, cell_types), frames * every, generator, self.checkpoint_every,
            record_every=every, record=self.simulator.summary)
        return series[:, 1:]

    def relative_error(self, simulated: Tensor, target: Tensor) -> Tensor:
        """``(s - t) / c`` per frame and statistic, ``(F, m)``."""
        return (simulated - target) / target.abs().mean(0).clamp_min(1e-6)

    def loss(self, batch: tuple[Tensor, Tensor], generator: torch.Generator) -> Tensor:
        labels, cell_types = batch
        self.batch_units = len(labels)
        target = self.target.summaries.to(self.device)
        simulated = self.simulator.surrogate(self.simulate(labels, cell_types, len(target), generator)).mean(0)
        for name, value in zip(self.names, simulated[-1].detach(), strict=True):
            self.log(f"stat/{name}", value)
        if self.global_step % self.image_every == 0:
            self.log_image("lattice", lattice_image(self.simulator.observe(self.last_state)[0]))
        return (self.weights * self.relative_error(simulated, target) ** 2).sum(1).mean()

    def uncertainty_problem(self) -> Moments:
        """The summary fit as a method of moments: per-lattice summaries of every frame ``(F m,)``, the loss's
        weighting ``w_j / (F c_j^2)``."""
        target = self.target.summaries.to(self.device)
        frames = len(target)
        weight = (self.weights / target.abs().mean(0).clamp_min(1e-6) ** 2 / frames).expand(frames, -1).reshape(-1)
        return Moments(target.reshape(-1), weight,
                       lambda n, generator: self.simulate(*self.start_lattices(n), frames, generator).flatten(1),
                       units=64, fit_units=self.batch_units, unit="lattices")

    @torch.no_grad()
    def final_metrics(self) -> dict[str, float]:
        target = self.target.summaries.to(self.device)
        starts = self.start_lattices(self.eval_lattices)
        self.fitted = self.simulate(*starts, len(target), self.noise(PREVIEW_STREAM, 0)).mean(0)
        return {"summary_rel_error": float(self.relative_error(self.fitted, target).abs().mean())}

    def save_artifacts(self, out_dir: Path) -> None:
        target = self.target
        frames = [target.mcs_per_frame * (f + 1) for f in range(len(target.summaries))]
        curves = {"mcs": frames, "names": self.names, "target": target.summaries.tolist(),
                  "target_sd": target.spread.tolist(), "fitted": self.fitted.tolist()}
        (out_dir / "summary.json").write_text(json.dumps(curves, indent=2) + "\n")
        summary_figure(frames, self.names, target.summaries, target.spread, self.fitted).savefig(
            out_dir / "summary.png", dpi=110)
        save_field(lattice_image(self.simulator.observe(self.last_state)[0]), out_dir / "lattice.png",
                   "fitted model, lattice 0")
