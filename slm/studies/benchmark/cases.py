"""The benchmark's cases: each a function ``(device, repeats) -> row`` (:data:`CASES`, in the table's order)."""

from __future__ import annotations

import tempfile
import warnings
from collections.abc import Callable
from functools import partial

import numpy as np
import torch
import torch.nn.functional as F

from datamodules.images import synthetic_cells
from slm.config import build_task_and_data, compose_config
from slm.errors import InputError
from slm.fit import fit
from slm.models.act import ActPotts
from slm.models.cpm import OnePixelCPM
from slm.models.malevanets_kapral import MalevanetsKapral, uniform_state
from slm.models.persistent_walk import PersistentRandomWalk
from slm.models.pixel_field import PixelField
from slm.models.potts import CellularPotts
from slm.models.reference.mk import NaiveMK
from slm.models.reference.potts import reference_parameters, sequential_mcs
from slm.models.si import SI, simulate_si
from slm.stats import track_statistics
from slm.studies.benchmark.timing import CELLSORT, Row, glazier_mcs_seconds, gradient_step_seconds, median_seconds
from slm.tasks.segmentation import segmentation_loss


def si_step(device: torch.device, repeats: int, blocks: int | None = None) -> Row:
    """SI: one step of 32 lattices of 64x64, and one Adam step on the pixelwise MSE; with ``blocks = b``, a
    spread field of ``b x b`` blocks."""
    generator = torch.Generator(device=device).manual_seed(0)
    frames = simulate_si(0.4, 32, 21, generator=generator, device=device).float()
    x, y = frames[:, 10], frames[:, 11]
    model = SI(beta=0.3, blocks=None if blocks is None else (blocks, blocks)).to(device)
    optimizer = torch.optim.Adam(model.parameters(), lr=0.01)

    def forward() -> None:
        with torch.no_grad():
            model(x, generator)

    def grad_step() -> None:
        optimizer.zero_grad()
        F.mse_loss(model(x, generator), y).backward()
        optimizer.step()

    steps = 50
    fwd = median_seconds(lambda: [forward() for _ in range(steps)], repeats, device) / steps
    grad = median_seconds(grad_step, repeats * 10, device)
    name = "SI" if blocks is None else f"SI field, {blocks * blocks} betas"
    return {"model": name, "lattice": "64x64", "batch": 32, "forward steps/s": f"{1 / fwd:,.0f}",
            "gradient step": f"{grad * 1e3:.2f} ms"}


def si_epoch(device: torch.device, repeats: int) -> Row:
    """SI: one epoch of the real si_noisy run (2900 transitions, batch 32) through Lightning.

    Timed as the difference of the fit times of a ``1 + repeats`` epoch run and a 1 epoch run, so
    Lightning's start-up is not counted.
    """
    def fit_seconds(epochs: int) -> float:
        cfg = compose_config(
            "experiment=si_noisy", "data.val_fraction=0", f"trainer.max_epochs={epochs}",
            f"trainer.accelerator={device.type}", "trainer.enable_progress_bar=false", "~logger",
            "~callbacks", "+trainer.enable_checkpointing=false", "+trainer.enable_model_summary=false",
            f"paths.output_dir={tempfile.mkdtemp(prefix='slm_benchmark_')}")
        return fit(cfg)[2]["seconds"]

    epoch = (fit_seconds(1 + repeats) - fit_seconds(1)) / repeats
    return {"model": "SI, Lightning epoch of 2900 transitions", "lattice": "64x64", "batch": 32,
            "epoch": f"{epoch:.2f} s"}


def prw_step(device: torch.device, repeats: int, classes: int = 1) -> Row:
    """PRW: 1500 walkers x 10 MCS with the Gumbel estimator, and one Adam step on the relative MSD loss; with
    ``classes > 1``, a mixture of that many walker classes."""
    generator = torch.Generator(device=device).manual_seed(0)
    model = PersistentRandomWalk(0.5, 0.5, estimator="gumbel", classes=classes).to(device)
    target = PersistentRandomWalk(0.2, 0.1).to(device).expected_msd(10).detach()
    optimizer = torch.optim.Adam(model.parameters(), lr=0.01)

    def forward() -> None:
        with torch.no_grad():
            model.walk(1500, 10, generator)

    def grad_step() -> None:
        optimizer.zero_grad()
        (((model.msd(1500, 10, generator) - target) / target) ** 2).sum().backward()
        optimizer.step()

    fwd = median_seconds(forward, repeats * 5, device) / 10
    grad = median_seconds(grad_step, repeats * 5, device)
    name = "PRW (10 MCS)" if classes == 1 else f"PRW mixture of {classes} classes (10 MCS)"
    return {"model": name, "lattice": "unbounded", "batch": 1500, "forward steps/s": f"{1 / fwd:,.0f}",
            "gradient step": f"{grad * 1e3:.2f} ms"}


def segmentation_step(device: torch.device, repeats: int) -> Row:
    """Segmentation: one Adam step of the default loss (local means, window 20) on a 696x520 pixel field."""
    image, _ = synthetic_cells(blur=10)
    field = PixelField(torch.tensor(image, dtype=torch.float32, device=device))
    optimizer = torch.optim.Adam(field.parameters(), lr=0.01)

    def grad_step() -> None:
        optimizer.zero_grad()
        segmentation_loss(field.mask(), field.reference, (0.0, 0.05, 0.05, 1.0), 20).backward()
        optimizer.step()

    grad = median_seconds(grad_step, repeats * 5, device)
    return {"model": "segmentation pixel field", "lattice": "696x520", "batch": 1,
            "gradient step": f"{grad * 1e3:.2f} ms"}


def cpm_step(device: torch.device, repeats: int) -> Row:
    """CPM: 4000 cells x 800 sampling steps, and one Adam step on the relative MSD loss (score estimator)."""
    generator = torch.Generator(device=device).manual_seed(0)
    model = OnePixelCPM(0.3).to(device)
    optimizer = torch.optim.Adam(model.parameters(), lr=0.05)

    def forward() -> None:
        with torch.no_grad():
            model.walk(4000, 1, generator)

    def grad_step() -> None:
        optimizer.zero_grad()
        (((model.msd(4000, 1, generator) - 3.0) / 3.0) ** 2).sum().backward()
        optimizer.step()

    fwd = median_seconds(forward, repeats, device, warmup=1) / 800
    grad = median_seconds(grad_step, repeats, device, warmup=1)
    return {"model": "1-pixel CPM (800 steps, score)", "lattice": "128x128 (coordinates)", "batch": 4000,
            "forward steps/s": f"{1 / fwd:,.0f}", "gradient step": f"{grad:.2f} s"}


def potts_case(mode: str, size: int, cells: int, volume: int, batch: int, device: torch.device, repeats: int,
               dims: int = 2) -> Row:
    """Multi-cell CPM (cellsort energies, ``cells`` cells of ``volume`` sites, half of each type) on a ``size^dims``
    torus (a square, or with ``dims=3`` a cube: 26 Moore neighbours):

    * ``random`` (the default schedule: the compiled engine's border sampling), ``uniform`` (the same schedule
      with literal uniform targets), ``kernel`` / ``torch`` (the sweep schedule on that engine): MCS/s and copy
      attempts/s, no gradient;
    * ``glazier``: the same for glazier's serial Rust engine (``pip install -e ".[bench]"``) on the same lattice
      with the same cells tiled from a corner, per MCS from the difference of two run lengths (its start-up
      excluded);
    * ``sequential``: the literal one-attempt-at-a-time reference (:mod:`slm.models.reference.potts`, one lattice);
    * ``grad`` (``grad+checkpoint``: checkpoints every 10 MCS): one Adam step on the summaries after 100 MCS of the
      default schedule, next to the same forward pass (rollout and summaries) without gradients."""
    if mode not in ("random", "uniform", "kernel", "torch", "glazier", "sequential", "grad", "grad+checkpoint"):
        raise InputError(f"unknown CPM benchmark mode {mode!r}")
    learn = ["J_1_2", "J_2_2", "lambda_volume"]
    engine = mode if mode in ("kernel", "torch") else "auto"
    schedule = "sweep" if mode in ("kernel", "torch") else "random"
    model = CellularPotts(CELLSORT, volume_target=volume, cells=cells, learn=learn, engine=engine, schedule=schedule,
                          targets="uniform" if mode == "uniform" else "border").to(device)
    generator = torch.Generator(device=device).manual_seed(0)
    start = model.initial_state(batch, (size,) * dims, device=device, generator=generator)
    sites = size**dims
    row = {"model": f"multi-cell CPM, {cells} cells of {volume}", "lattice": "x".join([str(size)] * dims),
           "batch": batch, "engine": mode if dims == 2 else f"{mode}, 3D", "sites": sites}
    if mode == "sequential":
        labels, types = start.labels[0].cpu().numpy(), start.cell_types[0].cpu().numpy()
        params = reference_parameters(model)
        rng = np.random.default_rng(0)
        seconds = median_seconds(lambda: sequential_mcs(labels, types, params, model.bonds(dims), 1, rng), repeats,
                                 device, warmup=1)
        row["model"] += ", literal sequential (Python)"
    elif mode == "glazier":
        seconds = glazier_mcs_seconds(size, cells, volume, repeats)
        row["model"] += ", glazier 0.3 serial (Rust)"
    elif mode in ("random", "uniform", "kernel", "torch"):
        steps = max(2, min(50, int(2e6 // (batch * sites))))
        with torch.no_grad():
            seconds = median_seconds(lambda: model.rollout(start, steps, generator), repeats, device, 1) / steps
        row["model"] += {"random": ", random schedule (default)", "uniform": ", random schedule, literal uniform "
                         "targets", "kernel": ", sweep schedule, compiled", "torch": ", sweep schedule, torch"}[mode]
    else:
        mcs = 100

        def forward() -> torch.Tensor:
            out = model.rollout(start, mcs, generator, 10 if mode == "grad+checkpoint" else None)
            return model.summary(out)[:, [0, 1, 2, 4]].mean(0).sum()

        grad, plain = gradient_step_seconds(forward, model.parameters(), device, repeats)
        row["model"] += f", {mcs} MCS" + (", checkpoints every 10" if mode == "grad+checkpoint" else "")
        row["gradient step"] = f"{grad:.2f} s ({grad / plain:.1f}x the forward {plain:.2f} s)"
        return row
    row["forward steps/s"] = f"{1 / seconds:,.1f} MCS"
    row["copy attempts/s"] = f"{batch * sites / seconds:,.3g}"
    return row


POTTS_CASES = {f"potts_{mode.replace('+', '_')}_{size}_b{batch}": partial(potts_case, mode, size, cells, volume, batch)
               for mode, size, cells, volume, batch in [
                   ("sequential", 64, 60, 25, 1), ("glazier", 64, 60, 25, 1), ("random", 64, 60, 25, 1),
                   ("uniform", 64, 60, 25, 1), ("torch", 64, 60, 25, 1), ("kernel", 64, 60, 25, 1),
                   ("glazier", 256, 1024, 64, 1), ("random", 256, 1024, 64, 1), ("uniform", 256, 1024, 64, 1),
                   ("torch", 256, 1024, 64, 1), ("kernel", 256, 1024, 64, 1), ("random", 256, 1024, 64, 4),
                   ("random", 256, 1024, 64, 16), ("glazier", 1024, 16384, 64, 1), ("random", 1024, 16384, 64, 1),
                   ("uniform", 1024, 16384, 64, 1), ("kernel", 1024, 16384, 64, 1), ("grad", 128, 100, 64, 8),
                   ("grad+checkpoint", 128, 100, 64, 8), ("random", 512, 512, 64, 1), ("random", 1448, 4096, 64, 1)]}
# 3D (cells of 4^3 voxels, 12.5% of the volume): the 2D rows at 512^2 and 1448^2 above have as many sites as 64^3 and
# 128^3, at the same cell size and fill.
POTTS_CASES |= {f"potts3d_{mode.replace('+', '_')}_{size}_b{batch}": partial(potts_case, mode, size, cells, 64, batch,
                                                                             dims=3)
                for mode, size, cells, batch in [
                    ("sequential", 32, 64, 1), ("random", 64, 512, 1), ("uniform", 64, 512, 1), ("torch", 64, 512, 1),
                    ("random", 64, 512, 4), ("random", 128, 4096, 1), ("grad", 64, 512, 1),
                    ("grad+checkpoint", 64, 512, 1), ("grad+checkpoint", 128, 4096, 1)]}


def act_case(mode: str, batch: int, device: torch.device, repeats: int) -> Row:
    """The act model as ``experiment=cpm_tcells`` runs it (one cell of 60 sites per 40x40 lattice, the default
    schedule): ``forward`` MCS/s and copy attempts/s (``uniform``: the same with literal uniform targets instead
    of border sampling), or ``grad``: one Adam step of the T-cell fit (50 MCS of burn-in, then 16 frames of 8
    MCS, loss on the track statistics) next to the same forward."""
    size = 40
    model = ActPotts(surface_target=160.0, targets="uniform" if mode == "uniform" else "border").to(device)
    generator = torch.Generator(device=device).manual_seed(0)
    start = model.initial_state(batch, size, device=device, generator=generator)
    row = {"model": "act model, 1 cell of 60" + (", uniform targets" if mode == "uniform" else ""),
           "lattice": f"{size}x{size}", "batch": batch}
    if mode in ("forward", "uniform"):
        with torch.no_grad():
            model.rollout(start, 50, generator)  # a moving cell, not the square at rest
            seconds = median_seconds(lambda: model.rollout(start, 5, generator), repeats, device, warmup=1) / 5
        row["forward steps/s"] = f"{1 / seconds:,.1f} MCS"
        row["copy attempts/s"] = f"{batch * size * size / seconds:,.3g}"
        return row

    def run() -> torch.Tensor:
        return track_statistics(model.tracks(start, 16, 8, generator, 50).frames.transpose(1, 2), 10).mean(0)

    grad, forward = gradient_step_seconds(run, model.parameters(), device, repeats)
    row["model"] += ", T-cell fit step (178 MCS)"
    row["gradient step"] = f"{grad:.2f} s ({grad / forward:.1f}x the forward {forward:.2f} s)"
    return row


ACT_CASES = {f"act_{mode}_40_b{batch}": partial(act_case, mode, batch)
             for mode, batch in [("forward", 1), ("uniform", 1), ("forward", 16), ("forward", 128), ("grad", 16)]}


def window_case(experiment: str, device: torch.device, repeats: int) -> Row:
    """One gradient step of ``experiment`` as it runs (its data's starting lattices and its task's loss: the
    crowded lattices, the window, the observed tracks' statistics) and the same loss without gradient; the row
    says how long its cap of steps takes at that rate."""
    cfg = compose_config(f"experiment={experiment}")
    task, data = build_task_and_data(cfg)
    task = task.to(device)
    batch = tuple(part.to(device) for part in next(iter(data.train_dataloader())))
    generator = torch.Generator(device=device)

    def loss() -> torch.Tensor:
        task.simulator.reset_estimators()
        with warnings.catch_warnings():  # the task logs its statistics; here there is no trainer to take them
            warnings.simplefilter("ignore")
            return task.loss(batch, generator.manual_seed(0))

    grad, forward = gradient_step_seconds(loss, task.parameters(), device, repeats)
    cap = cfg.trainer.max_epochs * cfg.data.steps_per_epoch
    shape = "x".join(map(str, data.size))
    return {"model": f"{experiment}: {cfg.model.cells} act cells per lattice, windowed tracks", "lattice": shape,
            "batch": cfg.data.batch_size,
            "gradient step": f"{grad:.2f} s ({grad / forward:.1f}x the forward {forward:.2f} s); "
                             f"{cap} steps: {cap * grad / 60:.1f} min"}


WINDOW_CASES = {f"window_{experiment}": partial(window_case, experiment)
                for experiment in ("cpm_tcells_mixture", "cpm_tcells_3d")}


def mk_case(implementation: str, size: int, batch: int, mode: str, device: torch.device, repeats: int,
            label: str | None = None) -> Row:
    """MK: ``forward`` steps/s, or a ``grad`` step of tau = 500 (``grad+checkpoint``: checkpoints every 50
    steps) on the log loss, by ``implementation``: ``naive`` (:class:`NaiveMK`), ``ours``
    (``MalevanetsKapral.rollout``) or ``per_call`` (``MalevanetsKapral`` called once per step, the plain
    ``nn.Module`` way). ``label``: the row's model name (default ``MK, <implementation>``)."""
    generator = torch.Generator(device=device).manual_seed(0)
    x = uniform_state(batch, size, device=device)
    if implementation == "naive":
        model = NaiveMK().to(device)

        def steps(start: torch.Tensor, n: int, checkpoint: int | None = None) -> torch.Tensor:
            for _ in range(n):
                start = model(start)
            return start
    else:
        model = MalevanetsKapral().to(device)
        with torch.no_grad():
            x = model.rollout(x, 200, generator)

        def steps(start: torch.Tensor, n: int, checkpoint: int | None = None) -> torch.Tensor:
            if implementation == "ours":
                return model.rollout(start, n, generator, checkpoint)
            for _ in range(n):
                start = model(start, generator)
            return start
    row = {"model": label or f"MK, {implementation}", "lattice": f"{size}x{size}", "batch": batch}
    if mode == "forward":
        n = 200 if size <= 64 else 20
        with torch.no_grad():
            seconds = median_seconds(lambda: steps(x, n), repeats, device, warmup=1) / n
        row["forward steps/s"] = f"{1 / seconds:,.0f}"
        return row
    optimizer = torch.optim.SGD(model.parameters(), lr=1e-9)

    def grad_step() -> None:
        optimizer.zero_grad()
        out = steps(x, 500, 50 if mode == "grad+checkpoint" else None)
        torch.log(((out - x) ** 2).sum()).backward()
        optimizer.step()

    row["gradient step"] = f"{median_seconds(grad_step, max(3, repeats // 2), device, warmup=1):.2f} s"
    row["model"] += ", checkpoints every 50" if mode == "grad+checkpoint" else ""
    return row


MK_CASES = {f"mk_{impl}_{mode.replace('+', '_')}_{size}_b{batch}": partial(mk_case, impl, size, batch, mode)
            for impl, size, batch, mode in [
                ("naive", 64, 1, "forward"), ("ours", 64, 1, "forward"), ("ours", 64, 16, "forward"),
                ("ours", 512, 1, "forward"), ("naive", 64, 1, "grad"), ("ours", 64, 1, "grad"),
                ("ours", 64, 1, "grad+checkpoint"), ("ours", 64, 16, "grad+checkpoint")]}
# One gradient step of tau = 500 at 64x64 as mk_ours_grad_64_b1: the model called once per step against its rollout.
MK_CASES["mk_step_per_call"] = partial(mk_case, "per_call", 64, 1, "grad", label="MK, called once per step")
MK_CASES["mk_step_rollout"] = partial(mk_case, "ours", 64, 1, "grad", label="MK, rollout")
#: every case by name, in the order of the table
CASES: dict[str, Callable[[torch.device, int], Row]] = {
    "si_step": si_step, "si_field_4096_step": partial(si_step, blocks=64), "si_epoch": si_epoch,
    "prw_step": prw_step, "prw_mixture_4_step": partial(prw_step, classes=4),
    "segmentation_step": segmentation_step, "cpm_step": cpm_step,
} | MK_CASES | POTTS_CASES | ACT_CASES | WINDOW_CASES
