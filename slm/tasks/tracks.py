r"""Track fitting: match the centroid tracks of simulated migrating cells to real or target tracks.

Each step starts ``B`` lattices (``simulator.state(labels, cell_types)``), lets the cells polarise for
``burn_in`` MCS without gradient, records every cell's centroid (``simulator.positions``) at ``F + 1``
frames ``mcs_per_frame`` MCS apart, and takes per lattice :func:`slm.stats.track_statistics`: MSD at
lags ``1..K``, mean speed ``v`` and persistence ``p`` (lattice units). Through ``simulator.surrogate``
and the batch mean ``s`` against the target ``t`` the loss is

.. math::  L = \frac{w_{msd}}{K} \sum_k \left(\frac{s_k - t_k}{t_k}\right)^2
             + w_v \left(\frac{s_v - t_v}{t_v}\right)^2 + w_p (s_p - t_p)^2

(persistence, a mean cosine near 0, in absolute terms). With ``speed_distribution = w_F > 0`` the loss adds
``w_F sum_j (F_j - G_j)^2``, the smoothed distribution functions of per-track mean speeds of model and data
(:meth:`slm.targets.TrackTarget.speed_function`: :func:`slm.stats.speed_distribution` at the data's quantiles):
the statistic that tells a mixture of fast and slow movers from one population. For a population of classes
(``simulator.class_weighted``, e.g. ``ActPotts(classes=K)``) every lattice's statistics carry its class's weight
over its share, so the batch mean is the mixture's ``sum_k w_k s_k``; the report adds each class's weight,
speed and persistence. After training a fresh simulation of
``eval_lattices`` lattices gives ``msd_rel_error`` (mean over lags of ``|s_k - t_k| / t_k``),
``speed_rel_error``, ``persistence`` with its target and ``persistence_error`` (``|s_p - t_p|``), and
``tracks.json`` / ``tracks.png`` (MSD against the data's, example tracks of both) and ``lattice.png`` go
into the run folder.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import torch
from matplotlib.figure import Figure
from torch import Tensor

from slm.errors import InputError
from slm.models.base import Simulator
from slm.plots import SpeedSample, lattice_image, save_field, speeds_figure, tracks_figure, window_outline
from slm.stats import TRACK_TERMS, track_loss, track_objective, track_speeds
from slm.tasks.base import PREVIEW_STREAM, FittingTask
from slm.uncertainty import Moments


class TrackFitting(FittingTask):
    """Fit the track statistics of migrating cells (see the module docstring).

    Its :attr:`target` is a :class:`slm.targets.TrackTarget` (statistics in lattice units, how to record tracks,
    units, starting lattices).

    Args:
        simulator: a model with ``state`` and ``positions`` (:class:`slm.models.ActPotts`).
        checkpoint_every: activation checkpointing segment in MCS within a frame; ``None`` stores all.
        weights: weight of each term (``msd``, ``speed``, ``persistence``; default 1 each).
        speed_distribution: weight of the per-track speed distribution term (0: off; it is always reported).
        image_every: steps between lattice images and MSD figures in TensorBoard.
        eval_lattices: lattices of the final evaluation.
        param_lr: learning rate per parameter name (see :class:`slm.tasks.FittingTask`).
    """

    def __init__(self, simulator: Simulator, optimizer, scheduler=None, seed: int = 0,
                 checkpoint_every: int | None = None, weights: dict[str, float] | None = None,
                 image_every: int = 25, eval_lattices: int = 64, param_lr: dict[str, float] | None = None,
                 speed_distribution: float = 0.0, target=None):
        super().__init__(simulator, optimizer, scheduler, seed, param_lr, target=target)
        if isinstance(speed_distribution, bool) or not isinstance(speed_distribution, int | float) or not (
                speed_distribution >= 0):
            raise InputError(f"task.speed_distribution: expected a weight >= 0, got {speed_distribution!r}")
        self.speed_distribution = float(speed_distribution)
        unknown = sorted(set(weights or {}) - set(TRACK_TERMS))
        if unknown:
            raise InputError(f"task.weights: unknown term(s) {unknown}; expected some of {list(TRACK_TERMS)}")
        self.checkpoint_every = checkpoint_every
        self.register_buffer("weights", torch.tensor([float((weights or {}).get(n, 1.0)) for n in TRACK_TERMS]),
                             persistent=False)
        self.image_every = image_every
        self.eval_lattices = eval_lattices
        self.fitted: Tensor | None = None
        self.fitted_tracks: Tensor | None = None
        self.last_state: tuple | None = None
        #: the data's and the fitted model's per-track mean speeds (um/min), the model's weights and classes
        self.speeds: SpeedSample | None = None
        self.batch_units = 1  # lattices per training step (as last seen)

    def simulate(self, labels: Tensor, cell_types: Tensor, generator: torch.Generator) -> tuple[Tensor, Tensor, tuple]:
        """Per-lattice statistics ``(B, K + 2)`` (with the speed distribution term: ``(B, K + 2 + J)``, its
        distribution function appended), the observed tracks ``(B, N, F + 1, d)`` (NaN where a track has no
        point, :class:`slm.observation.Observation`) and the final state."""
        state, tracks = self.target.record(self.simulator, self.simulator.state(labels, cell_types), generator,
                                           self.checkpoint_every)
        return self.target.track_statistics(tracks, self.speed_distribution > 0), tracks, state

    def full_target(self) -> Tensor:
        """The target statistics, with the data's speed distribution function appended when it is fitted."""
        return self.target.full_statistics(self.speed_distribution > 0).to(self.device)

    def objective(self, simulated: Tensor, target: Tensor) -> Tensor:
        """:func:`slm.stats.track_objective`: the track loss plus the speed distribution term."""
        return track_objective(simulated, target, self.weights, self.target.lags, self.speed_distribution)

    def loss(self, batch: tuple[Tensor, Tensor], generator: torch.Generator) -> Tensor:
        labels, cell_types = batch
        self.batch_units = len(labels)
        target = self.target
        statistics, _, state = self.simulate(labels, cell_types, generator)
        simulated = self.simulator.surrogate(self.simulator.class_weighted(statistics)).mean(0)
        shown = simulated.detach()[: len(target.statistics)]
        for name, value in zip(target.names, target.physical(shown), strict=True):
            if name in ("speed", "persistence", f"msd_{target.lags}"):
                self.log(f"stat/{name}", value)
        if self.global_step % self.image_every == 0:
            self.log_image("lattice", lattice_image(self.simulator.observe(state)[0]))
            if self.tensorboard is not None:
                self.tensorboard.add_figure("msd", self.msd_figure(shown), self.global_step)
        return self.objective(simulated, self.full_target())

    def uncertainty_problem(self) -> Moments:
        """The track fit as a method of moments: per-lattice track statistics, :func:`slm.stats.track_loss`'s
        weighting; each evaluation simulates about 64 cells (at least 8 lattices)."""
        target = self.full_target()
        lags = self.target.lags
        weight = torch.cat([self.weights[0] / lags / target[:lags] ** 2, (self.weights[1] / target[lags] ** 2)[None],
                            self.weights[2:], torch.full_like(target[lags + 2:], self.speed_distribution)])
        resample = None
        if self.speed_distribution > 0 and self.target.resample_tracks is not None:
            def resample(rng: np.random.Generator) -> Tensor:
                statistics, speeds, steps = self.target.resample_tracks(rng)
                return torch.cat([statistics, self.target.speed_function(speeds, steps)])
        return Moments(target, weight,
                       lambda n, generator: self.simulator.class_weighted(
                           self.simulate(*self.start_lattices(n), generator)[0]),
                       units=max(8, math.ceil(64 / self.simulator.cells)), fit_units=self.batch_units,
                       unit="lattices", resample=resample)

    @torch.no_grad()
    def final_metrics(self) -> dict[str, float]:
        target = self.target.statistics.to(self.device)
        size = len(target)
        statistics, tracks, self.last_state = self.simulate(*self.start_lattices(self.eval_lattices),
                                                            self.noise(PREVIEW_STREAM, 0))
        statistics = statistics[:, :size]
        self.fitted, self.fitted_tracks = self.simulator.class_weighted(statistics).mean(0), tracks.flatten(0, 1)
        relative = ((self.fitted - target) / target).abs()
        physical = self.target.physical(self.fitted)
        return self.class_metrics(statistics) | self.speed_metrics(tracks) | {
                "msd_rel_error": float(relative[:-2].mean()), "msd_rel_error_max": float(relative[:-2].max()),
                "speed_rel_error": float(relative[-2]), "persistence": float(self.fitted[-1]),
                "persistence_target": float(target[-1]),
                "persistence_error": float((self.fitted[-1] - target[-1]).abs()),
                "speed_um_per_min": float(physical[-2]),
                "speed_um_per_min_target": float(self.target.physical(target)[-2]),
                "track_loss": float(track_loss(self.fitted, target, self.weights)),
                "mcs_per_frame": self.target.mcs_per_frame, "frame_residual_mcs": self.target.frame_residual}

    def speed_metrics(self, tracks: Tensor) -> dict[str, float]:
        """How the per-track mean speeds of observed ``tracks (B, N, F + 1, d)`` (each lattice weighted for its
        class) compare with the data's, every track weighted by its steps: the Wasserstein distance in um/min, the
        largest gap of the distribution functions at the data's quantiles, and the median track length (points)
        of both; keeps the speeds for ``speeds.png``."""
        from scipy.stats import wasserstein_distance

        if self.target.track_speeds is None:
            return {}
        per_minute = self.target.um_per_site * 60 / self.target.frame_interval
        speeds, steps = track_speeds(tracks)
        classes = self.simulator.unit_classes(len(tracks))
        weight = torch.ones(len(tracks), device=speeds.device) if classes is None else classes[1]
        kind = None if classes is None else classes[0][:, None].expand_as(speeds)
        seen = speeds.isfinite()
        if not bool(seen.any()):
            return {"tracks_observed": 0}
        present = self.target.track_speeds.isfinite()
        data, data_steps = self.target.track_speeds[present], self.target.track_steps[present]
        self.speeds = SpeedSample(data.cpu().numpy() * per_minute, data_steps.cpu().numpy(),
                                  (speeds[seen] * per_minute).cpu().numpy(), steps[seen].cpu().numpy(),
                                  (weight[:, None] * steps)[seen].cpu().numpy(),
                                  None if kind is None else kind[seen].cpu().numpy())
        model_function = (self.target.speed_function(speeds, steps) * weight[:, None]).mean(0)
        gap = (model_function - self.target.speed_function(data.to(speeds.device), data_steps.to(speeds.device))
               ).abs().max()
        sample = self.speeds
        distance = wasserstein_distance(sample.data, sample.model, sample.data_steps, sample.model_weights)
        return {"speed_wasserstein_um_per_min": float(distance), "speed_distribution_error": float(gap),
                "tracks_observed": int(seen.sum()), "track_points_median": float(np.median(sample.model_steps) + 1),
                "track_points_median_target": float(np.median(sample.data_steps) + 1)}

    def class_metrics(self, statistics: Tensor) -> dict[str, float]:
        """Each class's weight, mean speed (um/min) and persistence from per-lattice ``statistics`` (none for one
        population)."""
        classes = self.simulator.unit_classes(len(statistics))
        if classes is None:
            return {}
        kind, weight = classes
        share = torch.bincount(kind).to(weight.dtype) / len(kind)
        metrics = {}
        for k in range(len(share)):
            physical = self.target.physical(statistics[kind == k].mean(0))
            metrics |= {f"class_{k}_weight": float(weight[kind == k][0] * share[k]),
                        f"class_{k}_speed_um_per_min": float(physical[-2]),
                        f"class_{k}_persistence": float(physical[-1])}
        return metrics

    def save_artifacts(self, out_dir: Path) -> None:
        target = self.target
        tracks = self.fitted_tracks[self.fitted_tracks[..., 0].isfinite().sum(-1) >= 2]
        simulated = (tracks * target.um_per_site).cpu().numpy()
        first = simulated[np.arange(len(simulated)), np.isfinite(simulated[..., 0]).argmax(1)]
        relative = simulated[:12] - first[:12, None]
        curves = {"names": list(target.names), "target": target.physical(target.statistics).tolist(),
                  "fitted": target.physical(self.fitted.cpu()).tolist(),
                  "units": {"msd": "um^2", "speed": "um/min", "persistence": "mean cos of successive steps"},
                  "frame_interval_s": target.frame_interval, "mcs_per_frame": target.mcs_per_frame,
                  "um_per_site": target.um_per_site,
                  "window_sites": None if target.observation.window is None else target.observation.window,
                  "example_tracks_um": np.where(np.isfinite(relative), relative.round(3), None).tolist()}
        (out_dir / "tracks.json").write_text(json.dumps(curves, indent=2) + "\n")
        self.msd_figure(self.fitted, simulated).savefig(out_dir / "tracks.png", dpi=120)
        if self.speeds is not None:
            speeds_figure(self.speeds).savefig(out_dir / "speeds.png", dpi=120)
        window = target.observation.window
        save_field(window_outline(lattice_image(self.simulator.observe(self.last_state)[0]), window),
                   out_dir / "lattice.png", "fitted model, lattice 0 (shade: activity" +
                   (", frame: the window)" if window is not None and len(window) == 2 else ")"))

    def msd_figure(self, simulated: Tensor, tracks: np.ndarray | None = None) -> Figure:
        """:func:`slm.plots.tracks_figure` of the target's statistics and ``simulated`` (lattice units)."""
        target = self.target
        lags = np.arange(1, target.lags + 1) * target.frame_interval / 60
        return tracks_figure(lags, target.physical(target.statistics.cpu()), target.physical(simulated.cpu()),
                             target.examples, tracks)
