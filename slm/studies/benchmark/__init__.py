"""The speed benchmark (``scripts/benchmark.py``): its cases, timers, runner and report.

A case is a function ``(device, repeats) -> row``: a dict with the columns of :data:`COLUMNS` that
apply (model, lattice, batch, forward steps/s with no grad, time of one gradient step of forward,
backward and optimiser, time of one training epoch through the real Lightning loop). Fixed seeds,
warm-up runs, medians of ``repeats`` runs. :func:`run_cases` runs each case in its own spawned process
so that its peak memory (CUDA: allocated; CPU: resident set above the process's baseline) is its own.

Modules: :mod:`~slm.studies.benchmark.cases` (the cases, :data:`CASES`), :mod:`~slm.studies.benchmark.timing` (the
median timer, glazier's engine behind one function), :mod:`~slm.studies.benchmark.runner` (one process per case)
and :mod:`~slm.studies.benchmark.report` (the table and the figure). The naive MK it times against is
:class:`slm.models.reference.mk.NaiveMK`.
"""

from slm.studies.benchmark.cases import CASES, mk_case, potts_case, si_step
from slm.studies.benchmark.report import COLUMNS, markdown, throughput_figure
from slm.studies.benchmark.runner import run_cases
from slm.studies.benchmark.timing import CELLSORT, CaseError, Row

__all__ = ["CASES", "CELLSORT", "COLUMNS", "CaseError", "Row", "markdown", "mk_case", "potts_case", "run_cases",
           "si_step", "throughput_figure"]
