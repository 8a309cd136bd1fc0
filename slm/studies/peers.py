r"""The intervals of the peers on the truths of a coverage study: ABC-SMC's and NPE's 90% credible intervals on
exactly the data each job of the sweep fitted (its config is composed again from the job's overrides), at the
wall clock AD spent on that job (fit plus uncertainty) or at the peer's own converged budget.

Per method: 90% coverage of each parameter and of all of them at once (every marginal interval holds its truth;
for AD the same box of its marginal intervals), Clopper-Pearson bands, median width and median seconds. A run
that fails counts as a miss. ABC-SMC's prior and NPE's are uniform on the problem's ``bounds``, the box the
coverage study draws its truths from (``coverage.prior``).
"""

from __future__ import annotations

import json
import logging
import tempfile
from pathlib import Path
from typing import Any

import numpy as np
import yaml

from slm.baselines.abc_smc import abc_smc
from slm.baselines.npe import npe
from slm.config import build, compose_config
from slm.parameters import flat_values
from slm.studies.calibrators import make_problem
from slm.studies.coverage import band, read_jobs

log = logging.getLogger(__name__)

#: ABC-SMC's settings at its own converged budget (the calibrator comparison's full setting), and NPE's seconds.
OWN_BUDGET = {"abc": {"population_size": 500, "max_generations": 12}, "npe_seconds": 600.0}
METHODS = ("abc", "npe")


def peer_interval(job_dir: Path, method: str, seconds: float | None, procs: int) -> dict[str, Any]:
    """The ``method``'s 90% interval, estimate and seconds on the data of one coverage job."""
    overrides = yaml.safe_load((job_dir / ".hydra" / "overrides.yaml").read_text())
    with tempfile.TemporaryDirectory() as out:
        cfg = compose_config(*overrides, f"paths.output_dir={out}")
        datamodule = build(cfg.data)
        datamodule.setup("fit")
        problem = make_problem(cfg, datamodule)
        problem.bounds = {name: tuple(map(float, box)) for name, box in cfg.coverage.prior.items()}
        if method == "abc":
            settings = {"max_generations": 100, "population_size": 200} if seconds else OWN_BUDGET["abc"]
            trace = abc_smc(problem, n_procs=procs, max_seconds=seconds, **settings)
        else:
            trace = npe(problem, max_seconds=seconds or OWN_BUDGET["npe_seconds"])
    return {"interval": trace.intervals[-1], "estimate": trace.estimates[-1], "seconds": trace.seconds[-1],
            "stopped": trace.stopped}


def compare(sweep: Path, methods: tuple[str, ...], budget: str, count: int, procs: int, out: Path) -> dict[str, Any]:
    """AD's intervals (from the sweep) and each peer's on the first ``count`` jobs; rows are appended to
    ``out`` (JSON lines) as they finish, and a summary per method is returned."""
    jobs = read_jobs(sweep)[:count]
    folders = sorted((p for p in sweep.iterdir() if (p / ".hydra").is_dir()), key=lambda p: int(p.name))[:count]
    rows = []
    for folder, job in zip(folders, jobs, strict=True):
        if job is None:
            continue
        truth = flat_values(job["truth"])
        ad = _flat_intervals(job["uncertainty"]["interval"])
        ad_seconds = job["seconds"] + job["uncertainty"]["seconds"]
        rows.append({"job": folder.name, "method": "AD", "interval": ad, "truth": truth, "seconds": ad_seconds})
        for method in methods:
            seconds = ad_seconds if budget == "ad" else None
            try:
                row = peer_interval(folder, method, seconds, procs)
            except Exception as error:  # a failed run is a miss, recorded with its reason
                log.warning("%s on job %s failed: %s", method, folder.name, error)
                row = {"interval": None, "stopped": f"{type(error).__name__}: {error}", "seconds": seconds}
            rows.append({"job": folder.name, "method": method, "truth": truth, **row})
        with open(out, "a") as file:
            for row in rows[-1 - len(methods):]:
                file.write(json.dumps(row) + "\n")
    return summarize(rows)


def _flat_intervals(interval: dict[str, Any]) -> dict[str, list[float]]:
    low = flat_values({name: np.asarray(lohi[0], dtype=float) for name, lohi in interval.items()})
    high = flat_values({name: np.asarray(lohi[1], dtype=float) for name, lohi in interval.items()})
    return {name: [low[name], high[name]] for name in low}


def summarize(rows: list[dict[str, Any]]) -> dict[str, Any]:
    """Per method: coverage of each parameter and of all at once (with bands), median width, median seconds."""
    out = {}
    for method in dict.fromkeys(row["method"] for row in rows):
        mine = [row for row in rows if row["method"] == method]
        names = list(mine[0]["truth"])
        hits = {name: 0 for name in names} | {"all": 0}
        widths = {name: [] for name in names}
        for row in mine:
            if row["interval"] is None:
                continue
            inside = [row["interval"][n][0] <= row["truth"][n] <= row["interval"][n][1] for n in names]
            for name, hit in zip(names, inside, strict=True):
                hits[name] += hit
                widths[name].append(row["interval"][name][1] - row["interval"][name][0])
            hits["all"] += all(inside)
        n = len(mine)
        out[method] = {"truths": n, "failed": sum(row["interval"] is None for row in mine),
                       "coverage_90": {k: {"coverage": v / n, "band": band(v, n)} for k, v in hits.items()},
                       "median_width_90": {k: float(np.median(v)) if v else None for k, v in widths.items()},
                       "median_seconds": float(np.median([row["seconds"] for row in mine if row["seconds"]]))}
    return out
