"""Literal references of the models, written for clarity, not speed: what the fast models are tested and timed
against.

* :mod:`slm.models.reference.potts`: the sequential multi-cell CPM, one copy attempt at a time (the field's
  random order, or the sweep's classes), with the act term; the compiled engine replays it attempt for attempt.
* :mod:`slm.models.reference.mk`: the naive Malevanets-Kapral model, the baseline of its speed targets.
"""
