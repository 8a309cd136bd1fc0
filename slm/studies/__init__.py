"""Studies behind the ``scripts/``: library functions that the scripts wrap in a command line.

* :mod:`slm.studies.calibrators`: approximate gradients (AD) against ABC-SMC and CMA-ES on the same
  SI and PRW data (``scripts/compare_calibrators.py``; needs the ``baselines`` extra).
* :mod:`slm.studies.estimator_study`: bias and variance of every gradient estimator on SI, where the
  exact gradients are known (``scripts/estimator_study.py``).
* :mod:`slm.studies.cpm_gradients`: each estimator's ``dE[MSD]/dT`` of the one-pixel CPM against the
  exact gradient and a finite difference (``scripts/cpm_gradients.py``).
* :mod:`slm.studies.stability`: the expected MK stability loss at given parameters
  (``scripts/stability_loss.py``).
* :mod:`slm.studies.benchmark`: the speed benchmark's cases, the naive MK reference :class:`NaiveMK`,
  and their runner (``scripts/benchmark.py``).

The names below are imported from their modules on first use (``from slm.studies import run_cases``),
so that one study does not import the others' dependencies (pyabc, TensorBoard, Lightning). Where a
module's own name is generic (``study``, ``plot``) the package name says which study it is.
"""

from __future__ import annotations

import importlib
from typing import Any

#: package name -> (module, name in the module)
_ORIGIN = {
    "run_comparison": ("calibrators", "run_comparison"),
    "compare": ("calibrators", "compare"),
    "compose_experiment": ("calibrators", "compose"),
    "make_problem": ("calibrators", "make_problem"),
    "run_ad": ("calibrators", "run_ad"),
    "seconds_to": ("calibrators", "seconds_to"),
    "plot_comparison": ("calibrators", "plot"),
    "si_estimator_study": ("estimator_study", "study"),
    "plot_si_estimator_study": ("estimator_study", "plot"),
    "cpm_gradient_study": ("cpm_gradients", "study"),
    "cpm_exact_temperature": ("cpm_gradients", "exact_temperature"),
    "plot_cpm_gradients": ("cpm_gradients", "plot"),
    "stability_loss": ("stability", "stability_loss"),
    "CASES": ("benchmark", "CASES"),
    "NaiveMK": ("benchmark", "NaiveMK"),
    "run_cases": ("benchmark", "run_cases"),
    "markdown": ("benchmark", "markdown"),
}

__all__ = list(_ORIGIN)


def __getattr__(name: str) -> Any:
    if name not in _ORIGIN:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    module, attribute = _ORIGIN[name]
    value = getattr(importlib.import_module(f"{__name__}.{module}"), attribute)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted({*globals(), *__all__})
