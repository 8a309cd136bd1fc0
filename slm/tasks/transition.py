"""Transition fitting: match one simulated step to observed transitions ``(x_t, x_{t+1})``."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from torch import Tensor

from slm.errors import InputError
from slm.plots import field_figure, field_image
from slm.tasks.base import PREVIEW_STREAM, FittingTask
from slm.uncertainty import EstimatingEquation


class TransitionFitting(FittingTask):
    r"""``loss = mean_{b, i, j} (f_theta(x_t)_{bij} - x_{t+1, bij})^2`` with ``f_theta`` one stochastic step.

    Batches are pairs of uint8 tensors ``(x_t, x_{t+1})`` of shape ``(B, H, W)``; the lattices are the
    samples of the score estimator. The simulator's exact references on the training transitions
    (``simulator.reference_metrics``, e.g. the SI MLE ``beta_mle``) go into the final metrics.
    The validation epoch logs ``x_t | x_{t+1} | prediction`` as an image, and every field parameter (an
    array ``(by, bx)``, e.g. the SI spread field) as ``fitted | truth | MLE`` where those are known;
    ``field.png`` in the run folder shows the same panels at the end.
    """

    _references: dict | None = None

    def loss(self, batch: tuple[Tensor, Tensor], generator: torch.Generator) -> Tensor:
        x, y = (t.float() for t in batch)
        per_lattice = ((self.simulator(x, generator) - y) ** 2).mean((-2, -1))
        return self.simulator.surrogate(per_lattice).mean()

    def validation_step(self, batch: tuple[Tensor, Tensor], batch_idx: int) -> Tensor:
        if batch_idx == 0:
            x, y = (t[0].float() for t in batch)
            with torch.no_grad():
                prediction = self.simulator(x[None], self.noise(PREVIEW_STREAM, 0))[0]
            self.log_image("transition/x_t | x_t+1 | predicted", torch.cat([x, y, prediction], dim=1))
            for name, panels in self.field_panels().items():
                self.log_image(f"field/{name}: {' | '.join(panels)}", field_image(list(panels.values())))
        return super().validation_step(batch, batch_idx)

    def references(self) -> dict:
        """``simulator.reference_metrics`` on every training transition (computed once)."""
        if self._references is None:
            batches = ((x.to(self.device), y.to(self.device)) for x, y in self.target.transitions())
            self._references = self.simulator.reference_metrics(batches)
        return self._references

    def field_panels(self) -> dict[str, dict[str, np.ndarray]]:
        """For each field parameter (2-D): the fitted values, the truth and the MLE (``<name>_mle``) where known."""
        truth = self.target.truth or {}
        fields = {}
        for name, value in self.simulator.parameter_values().items():
            if value.ndim != 2:
                continue
            panels = {"fitted": value.cpu().numpy()}
            if name in truth:
                panels["truth"] = np.asarray(truth[name], dtype=float)
            mle = self.references().get(f"{name}_mle")
            if mle is not None:
                panels["MLE"] = np.asarray(mle, dtype=float)
            fields[name] = panels
        return fields

    def uncertainty_problem(self) -> EstimatingEquation:
        """The estimating equation of the straight-through fit: per transition ``1/2 |E[f(x)] - y|^2``, whose
        gradient is the expected straight-through gradient (the simulator's ``expected_transition``)."""
        expected = getattr(self.simulator, "expected_transition", None)
        if expected is None:
            raise InputError(f"uq: {type(self.simulator).__name__} has no expected_transition; use uq=none")

        def unit_loss(x: Tensor, y: Tensor) -> Tensor:
            return 0.5 * ((expected(x) - y) ** 2).sum((-2, -1))

        return EstimatingEquation(unit_loss, self.target.transitions)

    def final_metrics(self) -> dict[str, float]:
        return dict(self.references())

    def save_artifacts(self, out_dir: Path) -> None:
        for name, panels in self.field_panels().items():
            field_figure(name, panels).savefig(out_dir / "field.png", dpi=120, bbox_inches="tight")
