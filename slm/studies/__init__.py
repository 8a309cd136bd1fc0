"""Studies behind the ``scripts/``: library functions that the scripts wrap in a command line.

* :mod:`slm.studies.calibrators`: approximate gradients (AD) against ABC-SMC and CMA-ES on the same
  SI and PRW data (``scripts/compare_calibrators.py``; needs the ``baselines`` extra).
* :mod:`slm.studies.estimator_study`: bias and variance of every gradient estimator on SI, where the
  exact gradients are known (``scripts/estimator_study.py``).
* :mod:`slm.studies.cpm_gradients`: each estimator's ``dE[MSD]/dT`` of the one-pixel CPM against the
  exact gradient and a finite difference (``scripts/cpm_gradients.py``).
* :mod:`slm.studies.potts_gradients`: each estimator's gradient of the multi-cell CPM's summaries against
  finite differences (``scripts/potts_gradients.py``).
* :mod:`slm.studies.potts_reference`: the literal sequential multi-cell CPM, the reference of the
  vectorised one (tests, benchmark).
* :mod:`slm.studies.stability`: the expected MK stability loss at given parameters
  (``scripts/stability_loss.py``).
* :mod:`slm.studies.benchmark`: the speed benchmark's cases, the naive MK reference :class:`NaiveMK`,
  and their runner (``scripts/benchmark.py``).

Import the module you need (``from slm.studies.benchmark import NaiveMK``): the studies have
dependencies of their own (pyabc and pycma for the calibrators) that the others do not need.
"""

__all__ = ["benchmark", "calibrators", "cpm_gradients", "estimator_study", "potts_gradients", "potts_reference",
           "stability"]
