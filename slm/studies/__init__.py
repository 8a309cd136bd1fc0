"""Studies behind the ``scripts/``: library functions that the scripts wrap in a command line.

* :mod:`slm.studies.benchmark`: the speed benchmark: its cases, timers, runner and report
  (``scripts/benchmark.py``).
* :mod:`slm.studies.calibrators`: approximate gradients (AD) against ABC-SMC and CMA-ES on the same data
  (``scripts/compare_calibrators.py``; needs the ``baselines`` extra).
* :mod:`slm.studies.coverage`: the coverage of the intervals over a Hydra multirun of truths
  (``scripts/coverage.py``).
* :mod:`slm.studies.cpm_gradients`: each estimator's ``dE[MSD]/dT`` of the one-pixel CPM against the
  exact gradient and a finite difference (``scripts/cpm_gradients.py``).
* :mod:`slm.studies.estimator_study`: bias and variance of every gradient estimator on SI, where the
  exact gradients are known (``scripts/estimator_study.py``).
* :mod:`slm.studies.peers`: ABC-SMC's and NPE's intervals on the coverage study's truths
  (``scripts/coverage_peers.py``).
* :mod:`slm.studies.potts_gradients`: each estimator's gradient of the multi-cell CPM's summaries against
  finite differences (``scripts/potts_gradients.py``).
* :mod:`slm.studies.run_lengths`: every experiment's default run, its steps, time and convergence
  (``scripts/run_lengths.py``).
* :mod:`slm.studies.scaling`: the calibrators from 1 to 4096 parameters (``scripts/compare_calibrators.py
  --dims``).
* :mod:`slm.studies.segmentation_set`: segmentation of an image set against Otsu and Li
  (``scripts/segmentation_set.py``).
* :mod:`slm.studies.stability`: the expected MK stability loss at given parameters
  (``scripts/stability_loss.py``).

The literal references the fast models are tested and timed against live beside the models
(:mod:`slm.models.reference`). Import the study you need (``from slm.studies.benchmark import run_cases``): the
studies have dependencies of their own (pyabc and pycma for the calibrators) that the others do not need.
"""

__all__ = ["benchmark", "calibrators", "coverage", "cpm_gradients", "estimator_study", "peers", "potts_gradients",
           "run_lengths", "scaling", "segmentation_set", "stability"]
