"""Speed benchmark: ``python scripts/benchmark.py [--device cuda] [--repeats 7]``.

Prints one Markdown table: model, lattice, batch, forward steps/s (no grad), time of one gradient
step (forward, backward, optimiser), time of one training epoch through the real Lightning loop
where it applies, and peak memory. Fixed seeds, warm-up runs, medians of ``--repeats`` runs. Each
case runs in its own process so that its peak memory (CUDA: allocated; CPU: resident set above the
process's baseline) is its own.
"""

from __future__ import annotations

import argparse
import multiprocessing as mp
import resource
import statistics
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import torch
import torch.nn.functional as F

ROOT = Path(__file__).resolve().parents[1]


def _median_seconds(fn: Callable[[], object], repeats: int, device: torch.device, warmup: int = 3) -> float:
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(repeats):
        if device.type == "cuda":
            torch.cuda.synchronize()
        start = time.perf_counter()
        fn()
        if device.type == "cuda":
            torch.cuda.synchronize()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def si_step(device: torch.device, repeats: int) -> dict[str, object]:
    """SI: one step of 32 lattices of 64x64, and one Adam step on the pixelwise MSE."""
    from slm.models.si import SI, simulate_si

    generator = torch.Generator(device=device).manual_seed(0)
    frames = simulate_si(0.4, 32, 21, generator=generator, device=device).float()
    x, y = frames[:, 10], frames[:, 11]
    model = SI(beta=0.3).to(device)
    optimizer = torch.optim.Adam(model.parameters(), lr=0.01)

    def forward() -> None:
        with torch.no_grad():
            model(x, generator)

    def grad_step() -> None:
        optimizer.zero_grad()
        F.mse_loss(model(x, generator), y).backward()
        optimizer.step()

    steps = 50
    fwd = _median_seconds(lambda: [forward() for _ in range(steps)], repeats, device) / steps
    grad = _median_seconds(grad_step, repeats * 10, device)
    return {"model": "SI", "lattice": "64x64", "batch": 32, "forward steps/s": f"{1 / fwd:,.0f}",
            "gradient step": f"{grad * 1e3:.2f} ms"}


def si_epoch(device: torch.device, repeats: int) -> dict[str, object]:
    """SI: one epoch of the real si_noisy run (2900 transitions, batch 32) through Lightning.

    Timed as the difference of the fit times of a ``1 + repeats`` epoch run and a 1 epoch run, so
    Lightning's start-up is not counted.
    """
    from hydra import compose, initialize_config_dir

    from slm.train import train

    def fit_seconds(epochs: int) -> float:
        with initialize_config_dir(version_base="1.3", config_dir=str(ROOT / "configs")):
            cfg = compose("train", overrides=[
                "experiment=si_noisy", "data.val_fraction=0", f"trainer.max_epochs={epochs}",
                f"trainer.accelerator={device.type}", "trainer.enable_progress_bar=false", "~logger",
                "~callbacks", "+trainer.enable_checkpointing=false", "+trainer.enable_model_summary=false",
                f"paths.output_dir={tempfile.mkdtemp(prefix='slm_benchmark_')}"])
        return train(cfg)["seconds"]

    epoch = (fit_seconds(1 + repeats) - fit_seconds(1)) / repeats
    return {"model": "SI, Lightning epoch of 2900 transitions", "lattice": "64x64", "batch": 32,
            "epoch": f"{epoch:.2f} s"}


def prw_step(device: torch.device, repeats: int) -> dict[str, object]:
    """PRW: 1500 walkers x 10 MCS with the Gumbel estimator, and one Adam step on the relative MSD loss."""
    from slm.models.persistent_walk import PersistentRandomWalk

    generator = torch.Generator(device=device).manual_seed(0)
    model = PersistentRandomWalk(0.5, 0.5, estimator="gumbel").to(device)
    target = PersistentRandomWalk(0.2, 0.1).to(device).expected_msd(10).detach()
    optimizer = torch.optim.Adam(model.parameters(), lr=0.01)

    def forward() -> None:
        with torch.no_grad():
            model(1500, 10, generator)

    def grad_step() -> None:
        optimizer.zero_grad()
        (((model.msd(1500, 10, generator) - target) / target) ** 2).sum().backward()
        optimizer.step()

    fwd = _median_seconds(forward, repeats * 5, device) / 10
    grad = _median_seconds(grad_step, repeats * 5, device)
    return {"model": "PRW (10 MCS)", "lattice": "unbounded", "batch": 1500, "forward steps/s": f"{1 / fwd:,.0f}",
            "gradient step": f"{grad * 1e3:.2f} ms"}


def segmentation_step(device: torch.device, repeats: int) -> dict[str, object]:
    """Segmentation: one Adam step of the default loss (local means, window 20) on a 696x520 pixel field."""
    from datamodules.images import synthetic_cells
    from slm.models.pixel_field import PixelField
    from slm.tasks.segmentation import segmentation_loss

    image, _ = synthetic_cells(blur=10)
    field = PixelField(torch.tensor(image, dtype=torch.float32, device=device))
    optimizer = torch.optim.Adam(field.parameters(), lr=0.01)

    def grad_step() -> None:
        optimizer.zero_grad()
        segmentation_loss(field(), field.reference, (0.0, 0.05, 0.05, 1.0), 20).backward()
        optimizer.step()

    grad = _median_seconds(grad_step, repeats * 5, device)
    return {"model": "segmentation pixel field", "lattice": "696x520", "batch": 1,
            "gradient step": f"{grad * 1e3:.2f} ms"}


def cpm_step(device: torch.device, repeats: int) -> dict[str, object]:
    """CPM: 4000 cells x 800 sampling steps, and one Adam step on the relative MSD loss (score estimator)."""
    from slm.models.cpm import OnePixelCPM

    generator = torch.Generator(device=device).manual_seed(0)
    model = OnePixelCPM(0.3).to(device)
    optimizer = torch.optim.Adam(model.parameters(), lr=0.05)

    def forward() -> None:
        with torch.no_grad():
            model(4000, 1, generator)

    def grad_step() -> None:
        optimizer.zero_grad()
        (((model.msd(4000, 1, generator) - 3.0) / 3.0) ** 2).sum().backward()
        optimizer.step()

    fwd = _median_seconds(forward, repeats, device, warmup=1) / 800
    grad = _median_seconds(grad_step, repeats, device, warmup=1)
    return {"model": "1-pixel CPM (800 steps, score)", "lattice": "128x128 (coordinates)", "batch": 4000,
            "forward steps/s": f"{1 / fwd:,.0f}", "gradient step": f"{grad:.2f} s"}


CASES: list[Callable[[torch.device, int], dict[str, object]]] = [si_step, si_epoch, prw_step, segmentation_step,
                                                                  cpm_step]


def _run_case(case: Callable, device_name: str, repeats: int, queue: mp.Queue) -> None:
    import lightning  # noqa: F401  (imported before the baseline so that its import is not counted)

    import slm.train  # noqa: F401

    torch.manual_seed(0)
    device = torch.device(device_name)
    baseline = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats()
    row = case(device, repeats)
    if device.type == "cuda":
        row["peak memory"] = f"{torch.cuda.max_memory_allocated() / 2**20:.1f} MiB (CUDA)"
    else:
        row["peak memory"] = f"{(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - baseline) / 1024:.1f} MiB (RSS)"
    queue.put(row)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--repeats", type=int, default=7)
    parser.add_argument("--only", nargs="*", help="case names to run (default: all)")
    args = parser.parse_args()
    ctx = mp.get_context("spawn")
    rows = []
    for case in CASES:
        if args.only and case.__name__ not in args.only:
            continue
        queue = ctx.Queue()
        process = ctx.Process(target=_run_case, args=(case, args.device, args.repeats, queue))
        process.start()
        process.join()
        if process.exitcode != 0:
            raise SystemExit(f"error: benchmark case {case.__name__} failed (exit code {process.exitcode})")
        rows.append(queue.get())
    columns = ["model", "lattice", "batch", "forward steps/s", "gradient step", "epoch", "peak memory"]
    print(f"device: {args.device}, torch {torch.__version__}, {torch.get_num_threads()} threads")
    print("| " + " | ".join(columns) + " |")
    print("|" + "---|" * len(columns))
    for row in rows:
        print("| " + " | ".join(str(row.get(c, "")) for c in columns) + " |")


if __name__ == "__main__":
    main()
