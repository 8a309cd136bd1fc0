"""Running the benchmark's cases, each in its own spawned process so that its peak memory is its own."""

from __future__ import annotations

import multiprocessing as mp
import resource
from collections.abc import Iterable

import torch

from slm.errors import InputError
from slm.studies.benchmark.cases import CASES
from slm.studies.benchmark.timing import CaseError, Row


def _run_case(name: str, device_name: str, repeats: int, queue: mp.Queue) -> None:
    # Everything a case imports was imported with this module (by the spawned process), before the baseline.
    torch.manual_seed(0)
    device = torch.device(device_name)
    baseline = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats()
    row = CASES[name](device, repeats)
    if device.type == "cuda":
        row["peak memory"] = f"{torch.cuda.max_memory_allocated() / 2**20:.1f} MiB (CUDA)"
    else:
        row["peak memory"] = f"{(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - baseline) / 1024:.1f} MiB (RSS)"
    queue.put(row)


def run_cases(names: Iterable[str] | None, device: str, repeats: int) -> list[Row]:
    """Run the cases ``names`` (``None``: all), in the order of :data:`CASES`, each in its own spawned
    process on ``device`` (``cpu``, ``cuda``) with ``repeats`` timed runs; their rows, with peak memory."""
    chosen = set(CASES if names is None else names)
    unknown = chosen - set(CASES)
    if unknown:
        raise InputError(f"--only: unknown case(s) {sorted(unknown)}; expected some of {', '.join(CASES)}")
    ctx = mp.get_context("spawn")
    rows = []
    for name in (name for name in CASES if name in chosen):
        queue = ctx.Queue()
        process = ctx.Process(target=_run_case, args=(name, device, repeats, queue))
        process.start()
        process.join()
        if process.exitcode != 0:
            raise CaseError(f"benchmark case {name} failed (exit code {process.exitcode})")
        rows.append(queue.get())
    return rows
