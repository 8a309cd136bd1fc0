r"""Coverage of the intervals: read a coverage multirun (``configs/coverage/``) and measure how often the
intervals hold the truth.

Each job of the sweep fitted one data set simulated at its own truth and wrote ``results.json`` with
``truth``, ``params`` and ``uncertainty`` (:mod:`slm.uncertainty`). A job without them (a failed fit, an
uncertainty that could not be computed) counts as a miss at every level. For level ``a`` a parameter is
covered when ``|link(fit) - link(truth)| <= z_a se_link`` (the interval the job reported, at any level) and the
whole vector is covered when ``Delta' C^+ Delta <= chi2_a(rank C)`` with ``C`` the link-space covariance.
Coverage gets a Clopper-Pearson 95% band. Mixture classes are matched to the true classes first (the
labels of a mixture are arbitrary): the permutation that brings the fitted class parameters closest.
"""

from __future__ import annotations

import itertools
import json
import re
from pathlib import Path
from typing import Any

import numpy as np
from matplotlib.figure import Figure
from scipy import stats

from slm.parameters import LINKS, LOGIT, flat_values

#: Levels at which coverage is measured.
LEVELS = (0.5, 0.6, 0.7, 0.8, 0.9, 0.95)


def read_jobs(*sweeps: Path) -> list[dict[str, Any] | None]:
    """One entry per job folder of the ``sweeps`` (folders with ``.hydra``): its ``results.json`` with an
    ``uncertainty`` and a ``truth`` and its ``index`` (``coverage.index``), else ``None`` (a failed job)."""
    jobs = []
    for sweep in sweeps:
        for folder in sorted((p for p in Path(sweep).iterdir() if (p / ".hydra").is_dir()), key=_job_number):
            path = folder / "results.json"
            result = json.loads(path.read_text()) if path.is_file() else None
            ok = result is not None and result.get("uncertainty") and result.get("truth")
            jobs.append({**result, "job": str(folder), "index": _index(folder)} if ok else None)
    return jobs


def _index(folder: Path) -> int | None:
    overrides = folder / ".hydra" / "overrides.yaml"
    for line in overrides.read_text().splitlines() if overrides.is_file() else []:
        if "coverage.index=" in line:
            return int(line.split("=")[1])
    return None


def _job_number(path: Path) -> tuple[int, str]:
    match = re.match(r"\d+", path.name)
    return (int(match.group()) if match else 1 << 30, path.name)


def flatten(job: dict[str, Any]) -> dict[str, Any]:
    """A job's scalars by flat name (``p_center[0]``): ``truth``, ``fit`` (the intervals' centre, the one-step
    estimate) and ``se`` in link space, the links,
    and the link covariance (``None`` for a field)."""
    uncertainty = job["uncertainty"]
    space = uncertainty["space"]
    names = list(space)
    fit = flat_values(uncertainty.get("center", job["params"]))  # the intervals' centre
    truth = flat_values({k: v for k, v in job["truth"].items() if k in job["params"]})
    se = flat_values(uncertainty["se_link"])
    out = {"names": names, "links": [space[n] for n in names],
           "truth": np.array([LINKS[space[n]].forward(truth[n]) for n in names]),
           "fit": np.array([LINKS[space[n]].forward(fit[n]) for n in names]),
           "se": np.array([se[n] for n in names]),
           "cov": None if uncertainty.get("cov") is None else np.asarray(uncertainty["cov"], dtype=float)}
    return align_classes(out)


def align_classes(job: dict[str, Any]) -> dict[str, Any]:
    """Permute a mixture's fitted classes (names ``<p>[k]`` for ``weights`` and its siblings) to the true ones."""
    names = job["names"]
    if "weights[0]" not in names:
        return job
    classes = sum(n.startswith("weights[") for n in names)
    bases = sorted({n.split("[")[0] for n in names if "[" in n})
    index = {n: i for i, n in enumerate(names)}

    def cost(perm: tuple[int, ...]) -> float:
        return sum((job["fit"][index[f"{b}[{p}]"]] - job["truth"][index[f"{b}[{k}]"]]) ** 2
                   for b in bases if b != "weights" for k, p in enumerate(perm))

    best = min(itertools.permutations(range(classes)), key=cost)
    order = list(range(len(names)))
    for b in bases:
        for k, p in enumerate(best):
            order[index[f"{b}[{k}]"]] = index[f"{b}[{p}]"]
    out = dict(job)
    out["fit"], out["se"] = job["fit"][order], job["se"][order]
    if job["cov"] is not None:
        out["cov"] = job["cov"][np.ix_(order, order)]
    return out


def band(k: int, n: int) -> list[float]:
    """Clopper-Pearson 95% interval of a proportion ``k / n``."""
    interval = stats.binomtest(k, n).proportion_ci(0.95, method="exact")
    return [float(interval.low), float(interval.high)]


def coverage(jobs: list[dict[str, Any] | None], levels: tuple[float, ...] = LEVELS) -> dict[str, Any]:
    """Per-parameter (a field's blocks pooled) and joint coverage at each level with Clopper-Pearson bands,
    median 90% width in the parameters' units, and the jobs that failed."""
    done = [flatten(job) for job in jobs if job is not None]
    n = len(jobs)
    if not done:
        return {"jobs": n, "failed": n}
    names = done[0]["names"]
    fields = len(names) > 16
    groups = {"all blocks": list(range(len(names)))} if fields else {name: [i] for i, name in enumerate(names)}
    out: dict[str, Any] = {"jobs": n, "failed": n - len(done), "levels": list(levels), "parameters": {}}
    for group, columns in groups.items():
        per_level = {}
        for level in levels:
            z = stats.norm.ppf(0.5 + level / 2)
            hits = sum(int((np.abs(j["fit"][columns] - j["truth"][columns]) <= z * j["se"][columns]).sum())
                       for j in done)
            total = n * len(columns)
            per_level[str(level)] = {"coverage": hits / total, "band": band(hits, total)}
        z90 = stats.norm.ppf(0.95)
        widths = [LINKS[j["links"][c]].inverse(j["fit"][c] + z90 * j["se"][c]) -
                  LINKS[j["links"][c]].inverse(j["fit"][c] - z90 * j["se"][c]) for j in done for c in columns]
        out["parameters"][group] = {"coverage": per_level, "median_width_90": float(np.median(widths)),
                                    "intervals": n * len(columns)}
    if not fields and all(j["cov"] is not None for j in done):
        joint = {}
        for level in levels:
            hits = 0
            for j in done:
                delta = j["fit"] - j["truth"]
                rank = np.linalg.matrix_rank(j["cov"], hermitian=True)
                hits += int(delta @ np.linalg.pinv(j["cov"], hermitian=True) @ delta <= stats.chi2.ppf(level, rank))
            joint[str(level)] = {"coverage": hits / n, "band": band(hits, n)}
        out["joint"] = joint
    out["max_abs_error_from_nominal"] = max(
        abs(v["coverage"] - float(level)) for p in [*out["parameters"].values(), {"coverage": out.get("joint", {})}]
        for level, v in p["coverage"].items())
    out["not_converged"] = sum(j["uncertainty"].get("converged") is False for j in jobs if j)
    finished = [j for j in jobs if j]
    distances = [j["uncertainty"].get("fit_to_root_se") for j in finished]
    out["stopping"] = {"converged": sum(j.get("converged") is True for j in finished),
                       "within_1_se": sum(d is not None and d <= 1 for d in distances),
                       "fit_to_root_se_median": float(np.median([d for d in distances if d is not None] or [np.nan])),
                       "steps_median": float(np.median([j.get("steps", np.nan) for j in finished])),
                       "steps_max": max((j["steps"] for j in finished if "steps" in j), default=None)}
    out["seconds"] = {"fit_median": float(np.median([j["seconds"] for j in jobs if j])),
                      "uncertainty_median": float(np.median([j["uncertainty"]["seconds"] for j in jobs if j]))}
    return out


def si_reference(jobs: list[dict[str, Any] | None]) -> dict[str, Any]:
    """SI only: the median ratio of the 90% width to the exact posterior's (``beta_posterior_90``); how far the
    fits end from the root of their equation (``beta_lsq``, noise-free): ``mean ((fit - root) / se)^2`` in logit
    space over the fits within 2 ``se`` and the number beyond; and the 90% coverage that intervals of the same
    width would have centred on the fit instead of the one-step estimate."""
    done = [j for j in jobs if j is not None and "beta_posterior_90" in j["metrics"]]
    if not done:
        return {}
    ratios, squared, hits = [], [], 0
    z90 = stats.norm.ppf(0.95)
    for job in done:
        lo, hi = job["uncertainty"]["interval"]["beta"]
        post = job["metrics"]["beta_posterior_90"]
        ratios.append((hi - lo) / (post[1] - post[0]))
        se = job["uncertainty"]["se_link"]["beta"]
        fit = LOGIT.forward(job["params"]["beta"])
        squared.append(((fit - LOGIT.forward(job["metrics"]["beta_lsq"])) / se) ** 2)
        hits += abs(fit - LOGIT.forward(job["truth"]["beta"])) <= z90 * se
    squared = np.array(squared)
    return {"median_width_over_exact_posterior": float(np.median(ratios)),
            "fit_to_root_mean_square_se": float(squared[squared <= 4].mean()),
            "fits_more_than_2se_from_root": int((squared > 4).sum()),
            "coverage_90_centred_on_the_fit": {"coverage": hits / len(jobs), "band": band(hits, len(jobs))}}


def se_ratio(sandwich: list[dict[str, Any] | None], bootstrap: list[dict[str, Any] | None]) -> dict[str, float]:
    """Median over the truths both sweeps finished (paired by ``coverage.index``) of sandwich se / bootstrap se,
    per parameter (in the parameters' units)."""
    by_index = {job["index"]: job for job in bootstrap if job is not None}
    pairs = [(a, by_index[a["index"]]) for a in sandwich if a is not None and a["index"] in by_index]
    if not pairs:
        return {}
    names = list(flat_values(pairs[0][0]["uncertainty"]["se"]))
    ratios = {name: [] for name in names}
    for a, b in pairs:
        se_a, se_b = flat_values(a["uncertainty"]["se"]), flat_values(b["uncertainty"]["se"])
        for name in names:
            ratios[name].append(se_a[name] / se_b[name])
    return {name: float(np.median(values)) for name, values in ratios.items()} | {"truths": len(pairs)}


def coverage_figure(result: dict[str, Any], title: str) -> Figure:
    """Empirical against nominal coverage per parameter and joint, with Clopper-Pearson bands."""
    figure = Figure(figsize=(5.2, 4.6))
    ax = figure.subplots()
    levels = np.array(result["levels"])
    ax.fill_between(levels, levels - 0.05, levels + 0.05, color="0.9", label="nominal +- 0.05")
    ax.plot(levels, levels, color="0.4", lw=1)
    curves = dict(result["parameters"]) | ({"joint": {"coverage": result["joint"]}} if "joint" in result else {})
    for i, (name, values) in enumerate(curves.items()):
        cov = np.array([values["coverage"][str(level)]["coverage"] for level in levels])
        bands = np.array([values["coverage"][str(level)]["band"] for level in levels])
        shift = (i - (len(curves) - 1) / 2) * 0.004
        ax.errorbar(levels + shift, cov, yerr=[cov - bands[:, 0], bands[:, 1] - cov], fmt="o-", ms=3, capsize=2,
                    label=name)
    ax.set_xlabel("nominal level")
    ax.set_ylabel("coverage")
    ax.set_title(f"{title}: {result['jobs']} truths, {result['failed']} failed", fontsize=10)
    ax.legend(fontsize=7)
    figure.tight_layout()
    return figure
