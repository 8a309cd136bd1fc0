r"""Gradient estimators: how every random draw of every model is sampled and differentiated.

An estimator is a strategy object that a simulator calls for each of its discrete draws; the forward
pass is always an exact sample (hard 0/1 values or one-hot vectors), only the backward pass differs.
On the command line it is the Hydra config group ``estimator`` (``estimator=gumbel
estimator.temperature=0.5``); in Python a name or an object (``SI(estimator="ste")``,
``SI(estimator=GumbelSoftmax(0.5))``). A model may take separate estimators for separate draws.

Bernoulli draws, ``z ~ Bernoulli(p)`` with ``p`` of any shape and ``U ~ U(0, 1)`` of the same shape:

* ``ste``: ``z = H(p - U)``. Backward: ``dz/dp := 1``. Since ``E[z] = p`` the identity is the
  gradient of the expectation, which makes this estimator unbiased for losses linear in ``z``.
* ``gumbel``: Gumbel-sigmoid straight-through. With logistic noise ``L = -logit(U)`` (the
  difference of two Gumbel variables), the soft sample is ``s = sigmoid((logit(p) + L) / tau)``
  and ``z = H(logit(p) + L) = H(p - U)``, the same hard sample as ``ste``.
  Backward: ``dz/dp := ds/dp = s (1 - s) / (tau p (1 - p))``.

Categorical draws over the last dimension, ``probs`` of shape ``(..., K)`` summing to one:

* ``ste``: inverse-CDF sample, one-hot ``z``. Backward: ``dz/dprobs := I``.
* ``gumbel``: Gumbel-softmax straight-through. ``g_k = -log(E_k)``, ``E_k ~ Exp(1)``;
  ``z = onehot(argmax_k(log probs_k + g_k))``; backward through
  ``s = softmax((log probs + g) / tau)``.

Thresholds of a given value ``x`` (a pixel field, or ``X - N U`` with the noise already drawn):
``z = H(x)``; backward ``dz/dx := 1`` (``ste``), ``d sigmoid(x / tau)/dx`` (``gumbel``), none (``score``).

Score function (``score``, REINFORCE): hard samples with no pathwise gradient. Every draw adds its
log-probability, summed per sample (the first dimension of the draw is the sample: a lattice, a
walker, a cell), to an accumulator the estimator owns: it counts ones and draws per probability tensor
(in place when a model draws from the same tensor step after step) and forms ``(d log P / dp) p`` with
the slope detached, whose gradient is that of ``log P``. :meth:`Estimator.surrogate` then turns
per-sample outcomes ``f_i`` into values whose mean has the gradient ``mean_i (f_i - b_i) d log P_i``,
``b_i`` the leave-one-out mean of the others (zero for a single sample): unbiased for ``d E[f]``,
whatever ``f`` is, at the price of variance. Pathwise estimators return ``f`` unchanged, so a task
that always passes its per-sample losses through ``surrogate`` supports every estimator.

All noise comes from ``torch`` RNG on the input's device, optionally from a given
``torch.Generator``, so seeded runs repeat exactly.
"""

from __future__ import annotations

import math
from abc import ABC, abstractmethod

import torch
from torch import Tensor

from slm.errors import InputError


def _uniform(like: Tensor, generator: torch.Generator | None) -> Tensor:
    return torch.rand(like.shape, generator=generator, device=like.device, dtype=like.dtype)


def _heaviside(x: Tensor) -> Tensor:
    """1 where ``x > 0``, else 0, in the dtype of ``x`` (``sign`` and a clamp: on CPU, cheaper than a
    comparison and a bool-to-float cast). With subnormals, ``p - u > 0`` exactly when ``u < p``."""
    return torch.sign(x).clamp_min_(0)


def _one_hot(index: Tensor, like: Tensor) -> Tensor:
    """One-hot of ``index`` over the last dim of ``like``, in its dtype (a comparison: cheaper than
    ``F.one_hot``, which validates its input with a reduction on every call)."""
    return (index[..., None] == torch.arange(like.shape[-1], device=like.device)).to(like.dtype)


class _StraightThrough(torch.autograd.Function):
    """``hard`` forward, the incoming gradient passed to ``surrogate`` unchanged: ``hard + (s - stop_grad(s))``
    as one autograd node instead of three, which matters in simulators that draw every step."""

    @staticmethod
    def forward(ctx, hard: Tensor, surrogate: Tensor) -> Tensor:
        return hard

    @staticmethod
    def backward(ctx, grad: Tensor):
        return None, grad


def gradient_only(z: Tensor) -> Tensor:
    """``z - stop_grad(z)``: zero in value, ``dz`` in gradient. A simulator that keeps a quantity ``q`` changed
    by ``delta`` when a draw ``z`` is 1 adds ``gradient_only(z) * delta`` to it, so that ``q`` carries the
    estimator's answer to "had this draw gone the other way" without changing its value."""
    return z - z.detach()


def _straight_through(hard: Tensor, surrogate: Tensor) -> Tensor:
    """Forward value ``hard``, gradient of ``surrogate`` (just ``hard`` when nothing needs a gradient)."""
    if not surrogate.requires_grad:
        return hard
    return _StraightThrough.apply(hard, surrogate)


class _GumbelSoftmaxStraightThrough(torch.autograd.Function):
    """One-hot ``hard`` forward; backward through the soft sample ``s = softmax((log probs + g) / tau)``
    with Gumbel noise ``g = -log(exp)``, computed only in the backward pass.

    ``probs``: ``(..., K)``; ``ratio = probs / exp`` (the forward's argmax), so that
    ``s = (ratio / max ratio)^(1 / tau)`` normalised. Backward: ``dL/dlogits = s (g_out - <g_out, s>) / tau``
    and ``dL/dprobs = dL/dlogits / probs`` (0 where ``probs`` is below ``tiny``, as a clamp's own gradient).
    """

    @staticmethod
    def forward(ctx, probs: Tensor, ratio: Tensor, hard: Tensor, temperature: float) -> Tensor:
        ctx.save_for_backward(probs, ratio)
        ctx.temperature = temperature
        return hard

    @staticmethod
    def backward(ctx, grad: Tensor):
        probs, ratio = ctx.saved_tensors
        weights = ratio / ratio.amax(-1, keepdim=True)
        if ctx.temperature != 1.0:
            weights = weights.pow(1 / ctx.temperature)
        weights = weights / weights.sum(-1, keepdim=True)
        grad_logits = weights * (grad - (grad * weights).sum(-1, keepdim=True))
        tiny = torch.finfo(probs.dtype).tiny
        return torch.where(probs >= tiny, grad_logits / (ctx.temperature * probs), 0.0), None, None, None


class Estimator(ABC):
    """A rule for sampling discrete events and differentiating through them."""

    name: str
    #: False when the samples carry no pathwise gradient (the score function).
    pathwise: bool = True

    @abstractmethod
    def bernoulli(self, p: Tensor, generator: torch.Generator | None = None, noise: Tensor | None = None,
                  mask: Tensor | None = None, sample: tuple[Tensor, int] | None = None) -> Tensor:
        """Hard 0/1 sample of ``Bernoulli(p)`` with a surrogate gradient, in the shape of ``p`` or ``noise``.

        ``noise``: ``U(0, 1)`` draws to use instead of drawing from ``generator`` (lets a caller draw all of
        a step's noise at once), of the shape of ``p`` or of a shape ``p`` broadcasts to (one shared ``p``).
        ``mask``: where ``False`` no draw is made: ``z = 0``, with no gradient and nothing recorded.
        ``sample``: ``(index, n)`` when the draws of ``n`` samples are gathered into one flat ``p``: the sample
        of each draw, ``(N,)`` long; else the first dimension of the draw is the sample. Only estimators that
        record per sample (the score function) use it.
        """

    @abstractmethod
    def categorical(self, probs: Tensor, generator: torch.Generator | None = None,
                    noise: Tensor | None = None) -> Tensor:
        """One-hot sample of ``Categorical(probs)`` over the last dim, shape of ``probs``.

        ``noise``: ``U(0, 1)`` draws of the shape of ``probs``, as for :meth:`bernoulli`.
        """

    def categorical_index(self, probs: Tensor, generator: torch.Generator | None = None,
                          noise: Tensor | None = None) -> Tensor:
        """The category ``(...)`` (long) that :meth:`categorical` one-hot encodes for the same noise, with
        no gradient: for simulators that only need the draw."""
        u = _uniform(probs[..., :1], generator) if noise is None else noise[..., :1]
        return (u > probs.detach().cumsum(-1)).sum(-1).clamp_max(probs.shape[-1] - 1)

    def threshold(self, x: Tensor) -> Tensor:
        """``H(x)`` (1 where ``x > 0``) with the identity backward pass, ``dH/dx := 1``."""
        return _straight_through(_heaviside(x.detach()), x)

    def surrogate(self, values: Tensor) -> Tensor:
        """Per-sample outcomes ``(n, ...)`` whose mean carries this estimator's gradient (unchanged here)."""
        return values

    def record_log_prob(self, per_sample: Tensor) -> None:  # noqa: B027 (a hook, as reset)
        """Take a stand-in ``(n,)`` for ``log P`` per sample of draws made elsewhere (a compiled engine), whose
        gradient is that of ``log P``; only the score function uses it."""

    def reset(self) -> None:  # noqa: B027 (a hook: only estimators that record something override it)
        """Forget what was recorded since the last :meth:`surrogate` (nothing here)."""

    def __repr__(self) -> str:
        return f"{type(self).__name__}()"


class StraightThrough(Estimator):
    """Uniform-threshold sampling with the identity backward pass (``dz/dp := 1``)."""

    name = "ste"

    def bernoulli(self, p: Tensor, generator: torch.Generator | None = None, noise: Tensor | None = None,
                  mask: Tensor | None = None, sample: tuple[Tensor, int] | None = None) -> Tensor:
        hard = _heaviside(p.detach() - (_uniform(p, generator) if noise is None else noise))
        if mask is None:
            return _straight_through(hard, p)
        return _straight_through(hard * mask, p * mask)

    def categorical(self, probs: Tensor, generator: torch.Generator | None = None,
                    noise: Tensor | None = None) -> Tensor:
        return _straight_through(_one_hot(self.categorical_index(probs, generator, noise), probs), probs)


class GumbelSoftmax(Estimator):
    """Gumbel-softmax (categorical) and Gumbel-sigmoid (binary) straight-through at ``temperature``."""

    name = "gumbel"

    def __init__(self, temperature: float = 1.0):
        if not (isinstance(temperature, int | float) and math.isfinite(temperature) and temperature > 0):
            raise InputError(f"estimator.temperature: expected a positive temperature, got {temperature}")
        self.temperature = float(temperature)

    def bernoulli(self, p: Tensor, generator: torch.Generator | None = None, noise: Tensor | None = None,
                  mask: Tensor | None = None, sample: tuple[Tensor, int] | None = None) -> Tensor:
        u = _uniform(p, generator) if noise is None else noise
        hard = _heaviside(p.detach() - u)
        hard = hard if mask is None else hard * mask
        if not p.requires_grad:
            return hard
        # Clamping keeps logit() finite where p is exactly 0 or 1; there dp/dbeta = 0 anyway, and the
        # hard sample above is taken from the unclamped p so certain events stay certain.
        eps = torch.finfo(p.dtype).eps
        soft = torch.sigmoid((torch.logit(p.clamp(eps, 1 - eps)) - torch.logit(u.clamp(eps, 1 - eps)))
                             / self.temperature)
        return _straight_through(hard, soft if mask is None else soft * mask)

    def categorical(self, probs: Tensor, generator: torch.Generator | None = None,
                    noise: Tensor | None = None) -> Tensor:
        ratio = self._ratio(probs, generator, noise)
        hard = _one_hot(ratio.argmax(-1), probs)
        if not probs.requires_grad:
            return hard
        return _GumbelSoftmaxStraightThrough.apply(probs, ratio, hard, self.temperature)

    def categorical_index(self, probs: Tensor, generator: torch.Generator | None = None,
                          noise: Tensor | None = None) -> Tensor:
        return self._ratio(probs, generator, noise).argmax(-1)

    def threshold(self, x: Tensor) -> Tensor:
        hard = _heaviside(x.detach())
        return _straight_through(hard, torch.sigmoid(x / self.temperature)) if x.requires_grad else hard

    @staticmethod
    def _ratio(probs: Tensor, generator: torch.Generator | None, noise: Tensor | None) -> Tensor:
        """``probs / exp`` with ``exp ~ Exp(1)`` (``-log(noise)`` when given), ``(..., K)``: its argmax is the
        Gumbel-max sample ``argmax_k(log probs_k + g_k)``, ``g_k = -log exp_k``, without the logarithms."""
        exp = torch.empty_like(probs).exponential_(generator=generator) if noise is None else -torch.log(noise)
        return probs.detach() / exp.clamp_min(torch.finfo(probs.dtype).tiny)

    def __repr__(self) -> str:
        return f"GumbelSoftmax(temperature={self.temperature})"


class ScoreFunction(Estimator):
    """Exact samples without pathwise gradient; their log-probabilities are recorded per sample and
    :meth:`surrogate` gives the score-function gradient with a leave-one-out baseline."""

    name = "score"
    pathwise = False

    def __init__(self) -> None:
        #: (id of p, shape of the draws) -> (p, number of ones drawn, number of draws) from that p
        self._records: dict[tuple, tuple[Tensor, Tensor, Tensor]] = {}
        #: per-sample stand-ins of log P, ``(n,)``, of gathered draws
        self._sums: list[Tensor] = []

    def bernoulli(self, p: Tensor, generator: torch.Generator | None = None, noise: Tensor | None = None,
                  mask: Tensor | None = None, sample: tuple[Tensor, int] | None = None) -> Tensor:
        z = _heaviside(p.detach() - (_uniform(p, generator) if noise is None else noise))
        z = z if mask is None else z * mask
        if p.requires_grad:
            draws = torch.ones_like(z) if mask is None else mask.to(z.dtype)
            if sample is None:
                self._record(p, z, draws)
            else:
                index, n = sample
                term = _log_prob_term(p, z, draws)
                self._sums.append(torch.zeros(n, device=term.device, dtype=term.dtype).index_add(0, index, term))
        return z

    def categorical(self, probs: Tensor, generator: torch.Generator | None = None,
                    noise: Tensor | None = None) -> Tensor:
        index = self.categorical_index(probs, generator, noise)
        if probs.requires_grad:
            # log P = log probs[index]: the log-probability of a one drawn with probability probs[index]
            chosen = probs.gather(-1, index[..., None])[..., 0]
            ones = torch.ones_like(chosen.detach())
            self._record(chosen, ones, ones)
        return _one_hot(index, probs)

    def threshold(self, x: Tensor) -> Tensor:
        return _heaviside(x.detach())

    def _record(self, p: Tensor, ones: Tensor, draws: Tensor) -> None:
        """Count the ones and the draws made from ``p`` (elementwise). Draws from the same ``p`` tensor (a
        shared probability, step after step) add to its counts in place, without growing the graph."""
        key = (id(p), ones.shape)
        if key in self._records:
            self._records[key][1].add_(ones)
            self._records[key][2].add_(draws)
        else:
            self._records[key] = (p, ones.clone(), draws.to(ones.dtype, copy=True))

    def _log_prob(self) -> Tensor | None:
        """Per sample, ``sum slope * p`` with ``slope = ones / p - (draws - ones) / (1 - p)`` detached: a
        stand-in for ``log P`` of the recorded draws with the same gradient."""
        total = None
        for per_sample in (*(_per_sample(_log_prob_term(*record)) for record in self._records.values()), *self._sums):
            if total is not None and per_sample.shape != total.shape:
                raise InputError(f"estimator: score: draws of {per_sample.shape[0]} and {total.shape[0]} samples; "
                                 f"the first dimension of every draw must be the sample")
            total = per_sample if total is None else total + per_sample
        return total

    def record_log_prob(self, per_sample: Tensor) -> None:
        self._sums.append(per_sample)

    def surrogate(self, values: Tensor) -> Tensor:
        log_prob = self._log_prob()
        self.reset()
        if log_prob is None:
            return values
        if log_prob.shape[0] != values.shape[0]:
            raise InputError(f"estimator: score: {values.shape[0]} outcomes for {log_prob.shape[0]} recorded "
                             f"samples; the first dimension of every draw must be the sample")
        return score_surrogate(values, log_prob.view(-1, *([1] * (values.ndim - 1))))

    def reset(self) -> None:
        self._records, self._sums = {}, []


def _log_prob_term(p: Tensor, ones: Tensor, draws: Tensor) -> Tensor:
    """``slope * p`` elementwise, ``slope = ones / p - (draws - ones) / (1 - p)`` detached: the gradient of the
    log-probability of ``ones`` successes in ``draws`` Bernoulli draws from ``p``."""
    q, tiny = p.detach(), torch.finfo(p.dtype).tiny
    return (ones / q.clamp_min(tiny) - (draws - ones) / (1 - q).clamp_min(tiny)) * p


def _per_sample(term: Tensor) -> Tensor:
    """``term`` summed over all but its first (sample) dimension, ``(n,)``."""
    return term.reshape(term.shape[0], -1).sum(1) if term.ndim > 1 else term.reshape(-1)


def score_surrogate(values: Tensor, log_prob: Tensor) -> Tensor:
    r"""Per-sample ``values`` (forward unchanged) whose mean has the score-function gradient.

    ``values``: ``(n, ...)`` outcomes ``f_i`` of ``n`` independent samples; ``log_prob``: ``(n, ...)``
    (broadcastable), the log-probability of the draws that produced each ``f_i``. Returns
    ``f_i + (f_i - b_i) (log P_i - stop_grad(log P_i))`` with ``b_i = mean_{j != i} f_j`` (``0`` when
    ``n = 1``), so that ``d mean_i(out_i) = mean_i (f_i - b_i) d log P_i``, an unbiased estimate of
    ``d E[f]`` (the baseline is independent of sample ``i`` and only lowers the variance).
    """
    n = values.shape[0]
    baseline = (values.sum(0, keepdim=True) - values) / (n - 1) if n > 1 else torch.zeros_like(values)
    return values + (values - baseline).detach() * (log_prob - log_prob.detach())


ESTIMATORS = {"ste": StraightThrough, "gumbel": GumbelSoftmax, "score": ScoreFunction}


def make_estimator(estimator: Estimator | str, temperature: float = 1.0, key: str = "estimator") -> Estimator:
    """``estimator`` itself if it is an :class:`Estimator`, else the estimator of that name
    (``temperature`` is used by ``gumbel``)."""
    if isinstance(estimator, Estimator):
        return estimator
    if estimator == "gumbel":
        return GumbelSoftmax(temperature)
    if estimator in ESTIMATORS:
        return ESTIMATORS[estimator]()
    raise InputError(f"{key}: unknown estimator {estimator!r}; expected one of {', '.join(ESTIMATORS)}")
