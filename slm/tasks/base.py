"""The base of every fitting task: a simulator with learnable parameters, fitted by gradient descent."""

from __future__ import annotations

from abc import abstractmethod
from collections.abc import Callable
from pathlib import Path
from typing import Any

import lightning as L
import numpy as np
import torch
from lightning.pytorch.loggers import TensorBoardLogger
from torch import Tensor
from torch.utils.tensorboard import SummaryWriter

from slm.errors import InputError, NonFiniteError
from slm.models.base import Simulator
from slm.parameters import constrained_grads
from slm.targets import Target
from slm.uncertainty import EstimatingEquation, Moments

TRAIN_STREAM, VAL_STREAM, PREVIEW_STREAM, COMMON_STREAM = 0, 1, 2, 3


class FittingTask(L.LightningModule):
    """Fit the learnable parameters of ``simulator`` by minimising :meth:`loss`.

    Noise: every step draws from its own ``torch.Generator`` seeded by ``(seed, rank, stream,
    counter)``: the training stream is keyed by the global step and the validation stream by the batch
    index. Runs therefore repeat exactly, a resumed run draws what the uninterrupted run would have
    drawn, DDP ranks draw different noise, and validation uses common random numbers across epochs.

    Logged: ``train/loss``, ``val/loss``, and for every constrained parameter ``param/<name>`` and
    ``grad/<name>`` (``dL/d<name>``, in the constrained space). A NaN or infinite loss, gradient or
    parameter raises :class:`NonFiniteError` before the optimiser step, so checkpoints stay good.

    A task depends only on the :class:`slm.models.Simulator` contract and on :attr:`target`, the typed
    :class:`slm.targets.Target` of its data (targets, units, truth), which :func:`slm.config.build_task_and_data`
    hands over at construction from the data module's ``task_target()``. Before each loss the
    simulator's estimators are reset, and tasks pass per-sample losses or statistics through
    ``simulator.surrogate`` so that every estimator, the score function included, gives its gradient.

    Args:
        simulator: the model, a :class:`slm.models.Simulator`.
        optimizer: partial ``torch.optim`` constructor, called with ``params``.
        scheduler: optional partial LR scheduler (``OneCycleLR``), called with ``optimizer``, ``total_steps``
            and, unless it sets ``max_lr``, each parameter group's learning rate as ``max_lr``; it is
            stepped every optimiser step.
        seed: seed of the simulation noise.
        param_lr: learning rate per parameter name (the others use the optimiser's), for parameters
            on different scales (a contact energy of 10 next to a log-temperature).
        target: what the task fits, from its data (:mod:`slm.targets`).
    """

    def __init__(
        self,
        simulator: Simulator,
        optimizer: Callable[..., torch.optim.Optimizer],
        scheduler: Callable[..., Any] | None = None,
        seed: int = 0,
        param_lr: dict[str, float] | None = None,
        target: Target | None = None,
    ):
        super().__init__()
        unknown = sorted(set(param_lr or {}) - set(simulator.parameter_values()))
        if unknown:
            raise InputError(f"task.param_lr: not learnable parameter(s) {unknown}; learnable: "
                             f"{sorted(simulator.parameter_values())}")
        self.param_lr = dict(param_lr or {})
        self.simulator = simulator
        self.optimizer_factory = optimizer
        self.scheduler_factory = scheduler
        self.seed = seed
        self._last_loss: Tensor | None = None
        self._quiet = False
        #: what the task needs from its data (handed over by :func:`slm.config.build_task_and_data`)
        self.target = target

    @abstractmethod
    def loss(self, batch: Any, generator: torch.Generator) -> Tensor:
        """Scalar loss of one batch, simulating with noise from ``generator``."""

    def common_loss(self, datamodule: L.LightningDataModule, batches: int) -> float:
        """The mean loss over the first ``batches`` training batches with noise that depends on the batch only:
        what :mod:`slm.restarts` compares its starts on (common random numbers)."""
        losses = []
        self._quiet = True  # outside Lightning's loop a task's ``self.log`` has nowhere to go
        try:
            with torch.no_grad():
                for i, batch in zip(range(batches), datamodule.train_dataloader(), strict=False):
                    self.simulator.reset_estimators()
                    batch = self.transfer_batch_to_device(batch, self.device, 0)
                    losses.append(float(self.loss(batch, self.noise(COMMON_STREAM, i))))
        finally:
            self._quiet = False
        return float(np.mean(losses))

    def log(self, *args: Any, **kwargs: Any) -> None:
        if not self._quiet:
            super().log(*args, **kwargs)

    def final_metrics(self) -> dict[str, float]:
        """Metrics for ``results.json``, computed once after training."""
        return {}

    def start_lattices(self, n: int) -> tuple[Tensor, Tensor]:
        """``n`` starting lattices ``(labels, cell_types)`` of the target's data set (``target.starts``), in order
        (repeated if needed), on this module's device."""
        starts = self.target.starts
        picks = (starts[i % len(starts)] for i in range(n))
        return tuple(torch.stack(parts).to(self.device) for parts in zip(*picks, strict=True))

    def uncertainty_problem(self) -> Moments | EstimatingEquation:
        """What the sandwich covariance of :mod:`slm.uncertainty` needs from this fit: its statistics and
        weighting (:class:`slm.uncertainty.Moments`) or its estimating equation."""
        raise InputError(f"uq: {type(self).__name__} has no uncertainty estimate; use uq=none")

    def derived_values(self) -> dict[str, Tensor]:
        """Quantities the simulator derives from its parameters (``simulator.derived()``), e.g. the CPM's
        acceptance rate; logged as ``derived/<name>`` and reported in the metrics."""
        return {name: value.detach() for name, value in self.simulator.derived().items()}

    def results(self) -> dict[str, dict[str, float]]:
        """``{"params": fitted constrained values, "metrics": derived values and final_metrics()}``."""
        params = {name: value.tolist() for name, value in self.simulator.parameter_values().items()}
        derived = {name: value.tolist() for name, value in self.derived_values().items()}
        return {"params": params, "metrics": derived | self.final_metrics()}

    def noise(self, stream: int, counter: int) -> torch.Generator:
        """A generator on this module's device, seeded by ``(seed, rank, stream, counter)``."""
        key = np.random.SeedSequence([self.seed, self.global_rank, stream, counter]).generate_state(1, np.uint64)
        return torch.Generator(device=self.device).manual_seed(int(key[0]))

    def training_step(self, batch: Any, batch_idx: int) -> Tensor:
        self.simulator.reset_estimators()
        loss = self.loss(batch, self.noise(TRAIN_STREAM, self.global_step))
        self._last_loss = loss.detach()
        self.log("train/loss", loss, prog_bar=True)
        return loss

    def validation_step(self, batch: Any, batch_idx: int) -> Tensor:
        self.simulator.reset_estimators()
        loss = self.loss(batch, self.noise(VAL_STREAM, batch_idx))
        self.log("val/loss", loss, prog_bar=True, sync_dist=True)
        return loss

    def on_before_optimizer_step(self, optimizer: torch.optim.Optimizer) -> None:
        grads = [p.grad.flatten() for p in self.parameters() if p.grad is not None]
        values = [p.detach().flatten() for p in self.parameters()]
        if not torch.cat([self._last_loss.flatten(), *grads, *values]).isfinite().all():
            raise NonFiniteError(
                f"non-finite loss, gradient or parameter at step {self.global_step} "
                f"(loss={float(self._last_loss):.6g}); stopped before the update, the last checkpoint is kept",
                step=self.global_step)
        for name, value in self.simulator.parameter_values().items():
            self.log_values(f"param/{name}", value)
        for name, grad in constrained_grads(self.simulator).items():
            self.log_values(f"grad/{name}", grad)
        for name, value in self.derived_values().items():
            self.log(f"derived/{name}", value)

    def log_values(self, tag: str, value: Tensor) -> None:
        """Log a scalar as ``tag``, an array of at most 16 values as ``tag/<i>`` (row-major), and a larger one as
        a TensorBoard histogram ``tag`` every ``trainer.log_every_n_steps`` steps."""
        if value.numel() == 1:
            self.log(tag, value.reshape(()))
        elif value.numel() <= 16:
            for i, element in enumerate(value.flatten()):
                self.log(f"{tag}/{i}", element)
        elif self.tensorboard is not None and self.global_step % self.trainer.log_every_n_steps == 0:
            self.tensorboard.add_histogram(tag, value.detach().float().cpu(), self.global_step)

    def param_groups(self) -> list[dict]:
        """What the optimiser gets as ``params``: one group per parameter with its own learning rate in
        :attr:`param_lr`, and one group of all the others."""
        groups, rest = [], []
        for name, parameter in self.simulator.named_parameters():
            short = name.split(".")[1] if name.startswith("parametrizations.") else name
            if short in self.param_lr:
                groups.append({"params": [parameter], "lr": self.param_lr[short]})
            else:
                rest.append(parameter)
        rest += [p for name, p in self.named_parameters() if not name.startswith("simulator.")]
        return ([{"params": rest}] if rest else []) + groups

    def configure_optimizers(self) -> Any:
        optimizer = self.optimizer_factory(params=self.param_groups())
        if self.scheduler_factory is None:
            return optimizer
        settings = {"total_steps": int(self.trainer.estimated_stepping_batches)}
        if "max_lr" not in getattr(self.scheduler_factory, "keywords", {}):
            settings["max_lr"] = [group["lr"] for group in optimizer.param_groups]
        scheduler = self.scheduler_factory(optimizer=optimizer, **settings)
        return {"optimizer": optimizer, "lr_scheduler": {"scheduler": scheduler, "interval": "step"}}

    @property
    def tensorboard(self) -> SummaryWriter | None:
        """The TensorBoard writer on the global-zero rank, else ``None``."""
        if isinstance(self.logger, TensorBoardLogger) and self.trainer.is_global_zero:
            return self.logger.experiment
        return None

    def log_image(self, tag: str, image: Tensor) -> None:
        """Send a ``(H, W)`` or ``(3, H, W)`` image in [0, 1] to TensorBoard, if that is the logger."""
        if self.tensorboard is not None:
            image = image[None] if image.ndim == 2 else image
            self.tensorboard.add_image(tag, image.detach().float().cpu(), self.global_step)

    def save_artifacts(self, out_dir: Path) -> None:
        """Write task-specific files (curves, figures) into the run folder after training."""
