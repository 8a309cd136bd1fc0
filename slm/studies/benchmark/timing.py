"""How the benchmark times: the median of repeated runs, and each third-party engine behind one function."""

from __future__ import annotations

import json
import math
import statistics
import time
from collections.abc import Callable

import torch

#: A row of the benchmark table: column name to value.
Row = dict[str, object]
#: The cellsort energies of the CPM cases, and the type names glazier's description gives them.
CELLSORT = [[0, 16, 16], [16, 2, 11], [16, 11, 14]]


class CaseError(RuntimeError):
    """A benchmark case could not run (its process failed, or a third-party engine is missing)."""


def median_seconds(fn: Callable[[], object], repeats: int, device: torch.device, warmup: int = 3) -> float:
    """Median wall-clock seconds of ``fn()`` over ``repeats`` runs after ``warmup`` runs (CUDA synchronised)."""
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


def gradient_step_seconds(loss: Callable[[], torch.Tensor], parameters, device: torch.device, repeats: int
                          ) -> tuple[float, float]:
    """Median seconds of one Adam step on ``loss().sum()`` over ``parameters``, and of the same ``loss()`` without
    gradient (each over ``max(3, repeats // 2)`` runs after one warm-up)."""
    optimizer = torch.optim.Adam(parameters, lr=0.01)

    def step() -> None:
        optimizer.zero_grad()
        loss().sum().backward()
        optimizer.step()

    with torch.no_grad():
        forward = median_seconds(loss, max(3, repeats // 2), device, 1)
    return median_seconds(step, max(3, repeats // 2), device, warmup=1), forward


def glazier_mcs_seconds(size: int, cells: int, volume: int, repeats: int) -> float:
    """Seconds per MCS of glazier's serial engine: cellsort energies, ``cells`` square cells of ``volume`` sites
    tiled from a corner, half of each type; (time of ``n`` MCS - time of 1 MCS) / (n - 1), median of ``repeats``."""
    try:
        from glazier import _native
    except ImportError:
        raise CaseError('glazier is not installed: pip install -e ".[bench]"') from None
    side = round(math.sqrt(volume))
    across = size // side
    kinds = [{"name": name, "target_volume": volume, "lambda_volume": 2.0} for name in ("dark", "light")]
    description = {
        "name": "cellsort", "width": size, "height": size, "types": kinds,
        "contact": [value for line in CELLSORT for value in line], "temperature": 10.0, "neighbour_order": 2,
        "seed": 1, "steps": 1, "dump_every": 0, "units": {"micron_per_site": 1.0, "minute_per_step": 1.0},
        "initial": {"side": side, "nx": across, "ny": -(-cells // across), "fractions": {"dark": 0.5, "light": 0.5}},
    }
    text = json.dumps(description)
    steps = max(3, min(60, int(4e6 // (size * size))))

    def run(n: int) -> float:
        start = time.perf_counter()
        _native.run(text, n)
        return time.perf_counter() - start

    return statistics.median((run(steps) - run(1)) / (steps - 1) for _ in range(repeats))
