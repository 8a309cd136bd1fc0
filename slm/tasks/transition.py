"""Transition fitting: match one simulated step to observed transitions ``(x_t, x_{t+1})``."""

from __future__ import annotations

from pathlib import Path

import lightning as L
import numpy as np
import torch
from matplotlib.figure import Figure
from torch import Tensor

from slm.tasks.base import PREVIEW_STREAM, FittingTask

#: an image of a field is drawn at least this many pixels high, each block as a square of pixels
FIELD_PIXELS = 128


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
            for name, panels in self.field_panels(self.trainer.datamodule).items():
                self.log_image(f"field/{name}: {' | '.join(panels)}", field_image(list(panels.values())))
        return super().validation_step(batch, batch_idx)

    def references(self, datamodule: L.LightningDataModule) -> dict:
        """``simulator.reference_metrics`` on every training transition (computed once)."""
        if self._references is None:
            batches = ((x.to(self.device), y.to(self.device)) for x, y in datamodule.train_set.batches())
            self._references = self.simulator.reference_metrics(batches)
        return self._references

    def field_panels(self, datamodule: L.LightningDataModule) -> dict[str, dict[str, np.ndarray]]:
        """For each field parameter (2-D): the fitted values, the truth and the MLE (``<name>_mle``) where known."""
        truth = getattr(datamodule, "truth", None) or {}
        fields = {}
        for name, value in self.simulator.parameter_values().items():
            if value.ndim != 2:
                continue
            panels = {"fitted": value.cpu().numpy()}
            if name in truth:
                panels["truth"] = np.asarray(truth[name], dtype=float)
            mle = self.references(datamodule).get(f"{name}_mle")
            if mle is not None:
                panels["MLE"] = np.asarray(mle, dtype=float)
            fields[name] = panels
        return fields

    def final_metrics(self, datamodule: L.LightningDataModule) -> dict[str, float]:
        return dict(self.references(datamodule))

    def save_artifacts(self, out_dir: Path, datamodule: L.LightningDataModule) -> None:
        for name, panels in self.field_panels(datamodule).items():
            field_figure(name, panels).savefig(out_dir / "field.png", dpi=120, bbox_inches="tight")


def field_image(panels: list[np.ndarray]) -> Tensor:
    """Fields ``(by, bx)`` side by side as one gray image in [0, 1] (common scale, NaN black), each block a
    square of pixels, with a one-pixel white gap between panels."""
    stack = np.stack(panels)
    low, high = np.nanmin(stack), np.nanmax(stack)
    scaled = np.nan_to_num((stack - low) / max(high - low, 1e-12), nan=0.0)
    repeat = max(1, FIELD_PIXELS // max(stack.shape[1:]))
    scaled = scaled.repeat(repeat, axis=1).repeat(repeat, axis=2)
    gap = np.ones((scaled.shape[1], 1))
    return torch.from_numpy(np.concatenate([part for p in scaled for part in (p, gap)][:-1], axis=1)).float()


def field_figure(name: str, panels: dict[str, np.ndarray]) -> Figure:
    """The panels of a field on one colour scale, with its colour bar."""
    figure = Figure(figsize=(3.2 * len(panels) + 0.8, 3.2), layout="constrained")
    axes = figure.subplots(1, len(panels), squeeze=False)[0]
    low = min(np.nanmin(p) for p in panels.values())
    high = max(np.nanmax(p) for p in panels.values())
    for axis, (title, values) in zip(axes, panels.items(), strict=True):
        image = axis.imshow(values, vmin=low, vmax=high, cmap="viridis", interpolation="nearest")
        axis.set_title(f"{name}: {title}")
        axis.set_xticks([])
        axis.set_yticks([])
    figure.colorbar(image, ax=list(axes), shrink=0.8)
    return figure
