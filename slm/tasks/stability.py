r"""Stability fitting: parameters under which a reference pattern maintains itself.

Each step simulates ``tau`` steps from the reference pattern ``X_ref`` with the current parameters
and descends

* ``log`` (default, the authors' code): ``log sum_sites (X_{ref+tau} - X_ref)^2`` over both species;
* ``mse``: ``mean_sites (obs(X_{ref+tau}) - obs(X_ref))^2``, with ``obs = simulator.observe`` (for MK
  species A as a fraction of the capacity).

A pattern-formation test, :func:`pattern_test`, simulates from the simulator's ``initial_state`` with
the current parameters and scores the observed field with :func:`slm.stats.pattern_score`; :class:`PatternTest` runs it
every ``every_n_steps`` steps and logs the image and score to TensorBoard, and the task runs it once
after training for ``results.json`` (``pattern_score``, ``patterned``, ``wavelength``) and
``pattern.png``.
"""

from __future__ import annotations

from pathlib import Path

import lightning as L
import torch
from torch import Tensor

from slm.errors import InputError
from slm.models.base import Simulator
from slm.plots import save_field
from slm.stats import dominant_wavelength, is_patterned, pattern_score
from slm.tasks.base import PREVIEW_STREAM, FittingTask

LOSSES = ("log", "mse")


@torch.no_grad()
def pattern_test(model: Simulator, size: int, steps: int, generator: torch.Generator) -> Tensor:
    """The observed field ``(size, size)`` (MK: ``A / N``) after ``steps`` steps from ``model.initial_state``."""
    x = model.rollout(model.initial_state(1, size, generator.device), steps, generator)
    return model.observe(x)[0]


class StabilityFitting(FittingTask):
    """Fit a simulator's parameters so that ``X_ref`` stays put for ``tau`` steps.

    Args:
        simulator: a :class:`slm.models.Simulator` with ``initial_state`` and ``observe`` (MK).
        tau: steps simulated per gradient step.
        checkpoint_every: activation checkpointing segment (steps); ``None`` stores every step.
        loss: ``log`` or ``mse``.
        param_lr: learning rate per parameter name (see :class:`FittingTask`), e.g. E3's.
        test_size, test_steps: the final pattern-formation test.
    """

    def __init__(self, simulator: Simulator, optimizer, scheduler=None, seed: int = 0, tau: int = 500,
                 checkpoint_every: int | None = None, loss: str = "log", param_lr: dict[str, float] | None = None,
                 test_size: int = 64, test_steps: int = 50000, target=None):
        super().__init__(simulator, optimizer, scheduler, seed, param_lr, target=target)
        if loss not in LOSSES:
            raise InputError(f"task.loss: unknown loss {loss!r}; expected one of {', '.join(LOSSES)}")
        if not (isinstance(tau, int) and tau >= 1):
            raise InputError(f"task.tau: expected a positive integer, got {tau}")
        self.tau = tau
        self.checkpoint_every = checkpoint_every
        self.loss_name = loss
        self.test_size = test_size
        self.test_steps = test_steps
        self.field: Tensor | None = None

    def loss(self, reference: Tensor, generator: torch.Generator) -> Tensor:
        out = self.simulator.rollout(reference, self.tau, generator, self.checkpoint_every)
        if self.loss_name == "log":
            per_lattice = ((out - reference) ** 2).flatten(1).sum(1)
            return torch.log(self.simulator.surrogate(per_lattice).sum())
        per_lattice = ((self.simulator.observe(out) - self.simulator.observe(reference)) ** 2).flatten(1).mean(1)
        return self.simulator.surrogate(per_lattice).mean()

    @torch.no_grad()
    def final_metrics(self) -> dict[str, float]:
        self.field = pattern_test(self.simulator, self.test_size, self.test_steps, self.noise(PREVIEW_STREAM, 0))
        return {"pattern_score": float(pattern_score(self.field)), "patterned": bool(is_patterned(self.field)),
                "wavelength": float(dominant_wavelength(self.field))}

    def save_artifacts(self, out_dir: Path) -> None:
        save_field(self.field, out_dir / "pattern.png",
                   f"A/N after {self.test_steps} steps, score {float(pattern_score(self.field)):.3f}")


class PatternTest(L.Callback):
    """Every ``every_n_steps`` optimiser steps (and before the first), run :func:`pattern_test` with the
    current parameters and log ``pattern/A`` (image) and ``pattern/score`` to TensorBoard."""

    def __init__(self, every_n_steps: int = 100, size: int = 64, steps: int = 50000):
        self.every_n_steps = every_n_steps
        self.size = size
        self.steps = steps

    def _run(self, task: StabilityFitting) -> None:
        if task.tensorboard is None:
            return
        field = pattern_test(task.simulator, self.size, self.steps, task.noise(PREVIEW_STREAM, task.global_step))
        task.log_image("pattern/A", field.clamp(0, 1))
        task.tensorboard.add_scalar("pattern/score", float(pattern_score(field)), task.global_step)

    def on_train_start(self, trainer: L.Trainer, task: StabilityFitting) -> None:
        if task.global_step == 0:
            self._run(task)

    def on_train_batch_end(self, trainer: L.Trainer, task: StabilityFitting, *args) -> None:
        if task.global_step % self.every_n_steps == 0:
            self._run(task)
