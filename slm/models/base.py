r"""The simulator contract: what a fitting task may call on a model.

A model is an ``nn.Module`` subclass of :class:`Simulator` in one file of ``slm/models/``. Its
learnable parameters are registered with :func:`slm.parameters.register` (stored unconstrained,
exposed constrained), and every random draw goes through an :class:`slm.estimators.Estimator`
held as an attribute. A model implements:

* :meth:`Simulator.transition` ``(state, prepared, generator) -> state``: one stochastic step,
  differentiable in the parameters through the estimators;
* :meth:`Simulator.prepare` (optional): the tuple of tensors a step needs that depends on the
  parameters only (rates, probability tables), passed to ``transition`` as ``prepared``.

and gets from this base class:

* :meth:`Simulator.step` ``(state, generator) -> state`` (also ``forward``): one step, with
  ``prepare()`` cached until a parameter changes, the grad mode changes or a backward pass has
  consumed it, so calling the model once per step costs what a step of a rollout costs;
* :meth:`Simulator.rollout` ``(state, steps, generator, checkpoint_every, record_every, record)``: ``steps``
  steps whose noise depends only on one seed drawn from ``generator`` (step ``t`` draws from a generator
  seeded ``seed + t``), so activation checkpointing recomputes exactly the same steps; with
  ``record_every`` it also returns the frames ``record(state)`` (default ``positions``) every that many
  steps: the one way to get frames over time;
* :meth:`Simulator.parameter_values` and :meth:`Simulator.derived` (logged and reported);
* :meth:`Simulator.surrogate`: per-sample outcomes carrying every estimator's gradient (the
  score function's included, see :mod:`slm.estimators`).

Optional statistics that tasks use when a model has them: ``positions(state) -> (B, ..., D)`` (walkers'
or cells' positions, what :meth:`Simulator.rollout` records by default), ``msd_per_walker(n, lags, generator)
-> (n, lags)`` (:class:`WalkSimulator`, for statistics fitting), ``expected_transition(x)`` (``E[x_{t+1} | x_t]``,
differentiable: the intervals of transition fits, :mod:`slm.uncertainty`), :meth:`Simulator.reference_metrics` (exact
reference estimates from observed transitions, e.g. the SI MLE), :meth:`Simulator.observe` (the
lattice as an image), :meth:`Simulator.initial_state`, and :meth:`Simulator.state` /
:meth:`Simulator.summary` (a state from data arrays and summary statistics, for summary fitting), and
:meth:`Simulator.unit_classes` (a population of classes, one per simulated lattice, summed out by the tasks
with its weights).

Noise always comes from a ``torch.Generator`` passed by the caller (the tasks seed one per step), on
the state's device.
"""

from __future__ import annotations

from abc import abstractmethod
from collections.abc import Callable, Iterable
from typing import Any, NamedTuple

import torch
from rich.progress import Progress
from torch import Tensor, nn
from torch.utils.checkpoint import checkpoint

from slm.errors import InputError
from slm.estimators import Estimator
from slm.parameters import constrained_values

#: A model's state: a tensor, or a (named) tuple of tensors whose first dimension is the sample (lattice, walker,
#: cell).
State = Any


class Recording(NamedTuple):
    """What :meth:`Simulator.rollout` returns with ``record_every``: the final state and the recorded frames
    ``(B, frames, ...)`` (frame 0 is the starting state; a tuple of them when several quantities are recorded)."""

    state: State
    frames: Tensor | tuple[Tensor, ...]


def _rebuild(kind: type, parts: tuple[Tensor, ...]) -> tuple:
    """A tuple state of type ``kind`` (a plain tuple or a NamedTuple) from its tensors."""
    return kind(*parts) if hasattr(kind, "_fields") else kind(parts)


class Simulator(nn.Module):
    """Base class of every stochastic lattice model (see the module docstring)."""

    #: The order of the updates within a step, where a model has a choice that changes its kinetics (the Cellular
    #: Potts models' ``random`` or ``sweep``); runs log it and write it to ``results.json``.
    schedule: str | None = None

    def __init__(self) -> None:
        super().__init__()
        self._prepared = _Cache()

    # -- what a model implements ---------------------------------------------------------------

    @abstractmethod
    def transition(self, state: State, prepared: tuple[Tensor, ...], generator: torch.Generator | None) -> State:
        """One stochastic step of ``state``, given ``prepared = self.prepare()``."""

    def prepare(self) -> tuple[Tensor, ...]:
        """What :meth:`transition` needs that depends only on the parameters (nothing by default)."""
        return ()

    def derived(self) -> dict[str, Tensor]:
        """Quantities derived from the parameters, logged as ``derived/<name>`` and reported in the metrics."""
        return {}

    def unit_classes(self, n: int) -> tuple[Tensor, Tensor] | None:
        """For a population of K classes, the class of each of ``n`` simulated units ``(n,)`` long and each unit's
        weight ``(n,)``, ``w_k / share_k``: the mean of per-unit statistics times these weights is the
        expectation over the classes with their weights (the class summed out exactly, the weights' gradient
        exact). None (the default): one population, equal weights."""
        return None

    def class_weighted(self, statistics: Tensor) -> Tensor:
        """Per-unit statistics ``(n, m)`` times each unit's :meth:`unit_classes` weight, so that their mean is the
        population's ``sum_k w_k E_k[statistics]`` (unchanged for one population)."""
        classes = self.unit_classes(len(statistics))
        return statistics if classes is None else statistics * classes[1][:, None]

    def reference_metrics(self, transitions: Iterable[tuple[Tensor, Tensor]]) -> dict[str, float]:
        """Exact reference estimates from observed transitions ``(x_t, x_{t+1})`` (none by default)."""
        return {}

    def initial_state(self, batch: int, size: int | tuple[int, int], device: torch.device | None = None,
                      generator: torch.Generator | None = None) -> State:
        """A default starting state of ``batch`` lattices (for previews, pattern tests and statistics fitting),
        random ones drawn from ``generator``."""
        raise InputError(f"{type(self).__name__} has no default initial state")

    #: Names of the columns of :meth:`summary` (none by default).
    summary_names: tuple[str, ...] = ()

    def state(self, *data: Tensor) -> State:
        """A state from observed arrays (the multi-cell CPM: labels and cell types), for fits to data."""
        raise InputError(f"{type(self).__name__} cannot build a state from data arrays")

    def summary(self, state: State) -> Tensor:
        """Summary statistics per lattice, ``(B, len(summary_names))``, with the estimators' gradient."""
        raise InputError(f"{type(self).__name__} has no summary statistics")

    def observe(self, state: State) -> Tensor:
        """The lattice as images in [0, 1], ``(B, H, W)`` (the state itself by default)."""
        return state

    # -- what every model gets -----------------------------------------------------------------

    def step(self, state: State, generator: torch.Generator | None = None) -> State:
        """One stochastic step of ``state`` (:meth:`transition` with the cached :meth:`prepare`)."""
        return self.transition(state, self.prepared(), generator)

    def forward(self, state: State, generator: torch.Generator | None = None) -> State:
        return self.step(state, generator)

    def prepared(self) -> tuple[Tensor, ...]:
        """:meth:`prepare`, cached while the parameters, their devices and the grad mode stay the same and
        no backward pass has gone through the cached tensors (their graph is freed then)."""
        key = (torch.is_grad_enabled(), *((id(t), t._version, t.device) for t in (*self.parameters(), *self.buffers())))
        cache = self._prepared
        if cache.key != key:
            cache.key, cache.value = key, tuple(self.prepare())
            for tensor in cache.value:
                if tensor.requires_grad:
                    tensor.register_hook(self._forget_prepared)
        return cache.value

    def _forget_prepared(self, grad: Tensor) -> None:
        self._prepared.clear()

    def rollout(self, state: State, steps: int, generator: torch.Generator | None = None,
                checkpoint_every: int | None = None, record_every: int | None = None,
                record: Callable[[State], Tensor | tuple[Tensor, ...]] | None = None) -> State | Recording:
        """``steps`` steps from ``state``; returns the final state, or with ``record_every`` a
        :class:`Recording` of it and its frames.

        Noise: one seed ``s`` is drawn from ``generator`` per rollout and step ``t`` draws from a
        generator seeded with ``s + t``, so the result depends neither on ``checkpoint_every`` nor on
        ``record_every``. With ``checkpoint_every`` and autograd on, the activations of each segment of that
        many steps are recomputed in the backward pass instead of stored: memory ``O(steps /
        checkpoint_every + checkpoint_every)`` states instead of ``O(steps)``.

        Frames: with ``record_every = k`` (a divisor of ``steps``), ``record(state)`` (default
        :meth:`positions`) at steps ``0, k, 2k, ..., steps``, stacked along dim 1: ``(B, steps / k + 1, ...)``,
        with the estimators' gradient (a tuple of such stacks when ``record`` returns a tuple).
        """
        if checkpoint_every is not None and any(not e.pathwise for e in self.estimators()):
            raise InputError("task.checkpoint_every: the score estimator records log-probabilities during the "
                             "forward pass, which checkpointing skips; set it to null")
        if record_every is not None and not (isinstance(record_every, int) and record_every >= 1
                                             and steps % record_every == 0):
            raise InputError(f"record_every: expected a positive divisor of the {steps} steps, got {record_every}")
        device = generator.device if generator is not None else "cpu"
        base = int(torch.randint(2**62, (1,), generator=generator, device=device))
        prepared = self.prepared()
        record = record or getattr(self, "positions", None)
        if record_every and record is None:
            raise InputError(f"record: {type(self).__name__} has no positions(state); pass what to record")
        frames = [record(state)] if record_every else None
        chunk = record_every or max(steps, 1)
        for start in range(0, steps, chunk):
            state = self._chunk(state, prepared, base + start, min(chunk, steps - start), checkpoint_every)
            if frames is not None:
                frames.append(record(state))
        if frames is None:
            return state
        if isinstance(frames[0], tuple):  # several quantities recorded at once
            return Recording(state, tuple(torch.stack(parts, 1) for parts in zip(*frames, strict=True)))
        return Recording(state, torch.stack(frames, 1))

    def _chunk(self, state: State, prepared: tuple[Tensor, ...], first_seed: int, steps: int,
               checkpoint_every: int | None) -> State:
        """``steps`` steps seeded ``first_seed + t``, in checkpointed segments of ``checkpoint_every`` steps."""
        segment = checkpoint_every or max(steps, 1)
        for done in range(0, steps, segment):
            length = min(segment, steps - done)
            if checkpoint_every and torch.is_grad_enabled():
                # The prepared tensors go in as inputs, so that their gradient comes out of the recomputation.
                parts = tuple(state) if isinstance(state, tuple) else (state,)
                kind = type(state) if isinstance(state, tuple) else None
                state = checkpoint(self._segment_of_tensors, first_seed + done, length, len(parts), kind,
                                   *parts, *prepared, use_reentrant=True)
                state = state if kind is None else _rebuild(kind, tuple(state))  # autograd returns plain tuples
            else:
                state = self._segment(state, prepared, first_seed + done, length)
        return state

    def tracks(self, state: State, frames: int, frame_steps: int, generator: torch.Generator | None = None,
               burn_in: int = 0, checkpoint_every: int | None = None) -> Recording:
        """``burn_in`` steps without gradient, then ``frames`` frames of ``frame_steps`` steps recording
        ``positions(state)``: the final state and the positions ``(B, frames + 1, ..., D)``."""
        if burn_in:
            with torch.no_grad():
                state = self.rollout(state, burn_in, generator)
        return self.rollout(state, frames * frame_steps, generator, checkpoint_every, record_every=frame_steps)

    @torch.no_grad()
    def simulate(self, state: State, steps: int, generator: torch.Generator | None = None, every: int = 1000,
                 progress: bool = True, keep: bool = False) -> tuple[State, list[State]]:
        """``steps`` steps without gradients, in rollouts of ``every`` steps with a progress bar; returns the
        final state and, with ``keep``, the states after each rollout (for animations; else an empty list)."""
        snapshots = []
        with Progress(disable=not progress, transient=True) as bar:
            task = bar.add_task(f"{type(self).__name__} {steps} steps", total=steps)
            for done in range(0, steps, every):
                state = self.rollout(state, min(every, steps - done), generator)
                if keep:
                    snapshots.append(state)
                bar.update(task, completed=min(done + every, steps))
        return state, snapshots

    def _segment(self, state: State, prepared: tuple[Tensor, ...], first_seed: int, steps: int) -> State:
        device = state[0].device if isinstance(state, tuple) else state.device
        generator = torch.Generator(device=device)
        for t in range(steps):
            state = self.transition(state, prepared, generator.manual_seed(first_seed + t))
        return state

    def _segment_of_tensors(self, first_seed: int, steps: int, n_state: int, kind: type | None, *tensors: Tensor
                            ) -> State:
        state = tensors[0] if kind is None else _rebuild(kind, tensors[:n_state])
        return self._segment(state, tuple(tensors[n_state:]), first_seed, steps)

    def parameter_values(self) -> dict[str, Tensor]:
        """The constrained value of every learnable parameter, by name (detached)."""
        return constrained_values(self)

    def estimators(self) -> list[Estimator]:
        """The distinct estimators this model draws through."""
        found = {id(v): v for v in vars(self).values() if isinstance(v, Estimator)}
        return list(found.values())

    def surrogate(self, values: Tensor) -> Tensor:
        """Per-sample outcomes ``(n, ...)`` (forward unchanged) whose mean carries the gradient of every
        estimator of this model, the score function's from the draws recorded since the last call."""
        for estimator in self.estimators():
            values = estimator.surrogate(values)
        return values

    def reset_estimators(self) -> None:
        """Forget what the estimators recorded (called by the tasks before each loss)."""
        for estimator in self.estimators():
            estimator.reset()


class WalkSimulator(Simulator):
    """A simulator of walkers or cells whose positions give a mean squared displacement.

    It has ``positions(state)``, an ``initial_state(n)`` of ``n`` walkers, and :attr:`frame_steps`, the steps of
    one frame of the data."""

    @property
    @abstractmethod
    def frame_steps(self) -> int:
        """Steps of the model per frame of the data."""

    @abstractmethod
    def positions(self, state: State) -> Tensor:
        """Positions ``(n, D)`` of the walkers of ``state``, with the estimators' gradient."""

    def walk(self, n: int, frames: int, generator: torch.Generator | None = None) -> Tensor:
        """Positions ``(n, frames + 1, D)`` of ``n`` walkers from :meth:`initial_state`, one every
        :attr:`frame_steps` steps."""
        return self.tracks(self.initial_state(n, None, generator=generator), frames, self.frame_steps, generator).frames

    @abstractmethod
    def msd_per_walker(self, n: int, lags: int, generator: torch.Generator | None = None) -> Tensor:
        """Per-walker squared displacements at lags ``1..lags`` frames of ``n`` walkers, ``(n, lags)``, whose
        mean over walkers is the model's MSD (a walker's independent contribution: the unit that the
        uncertainty of an MSD fit resamples, :mod:`slm.uncertainty`)."""

    def msd(self, n: int, lags: int, generator: torch.Generator | None = None) -> Tensor:
        """Simulated MSD at lags ``1..lags`` frames of ``n`` walkers, ``(lags,)``, the mean of
        :meth:`msd_per_walker`; its gradient includes the score-function term when an estimator records
        log-probabilities."""
        return self.surrogate(self.msd_per_walker(n, lags, generator)).mean(0)


class _Cache:
    """What :meth:`Simulator.prepared` keeps: ``prepare()``'s tensors and the key they were made for. It
    copies and pickles empty, since the tensors may hold part of a graph (rebuilt on the next step)."""

    def __init__(self) -> None:
        self.key: tuple | None = None
        self.value: tuple[Tensor, ...] = ()

    def clear(self) -> None:
        self.key, self.value = None, ()

    def __deepcopy__(self, memo: dict) -> _Cache:
        return _Cache()

    def __reduce__(self) -> tuple:
        return _Cache, ()
