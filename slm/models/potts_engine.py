r"""The compiled engine of the multi-cell CPM: one MCS in C++ (``potts_kernel.cpp``), behind an
:class:`torch.autograd.Function`, and the one place that chooses between it and the torch reference.

Engines (``model.engine``):

* ``torch``: :meth:`slm.models.CellularPotts._sweep`, vectorised over a class's sites, with rounds of
  tensor operations per class; the reference, on any device.
* ``kernel``: the same MCS as a compiled loop over the sites (CPU). For the same noise it makes the same
  decisions as the torch path (``tests/test_potts_engine.py``): each class's active proposals are decided
  one at a time in decreasing priority, the order the torch path's rounds reproduce. With autograd on it
  records a tape per MCS (for every decided proposal: its cells, its neighbour counts and the decision)
  and its backward pass walks the tape in reverse, giving the torch path's gradients for ``ste``,
  ``gumbel`` and ``score``.
* ``auto`` (default): ``kernel`` where it applies (a CPU state, the models :class:`slm.models.CellularPotts`
  and :class:`slm.models.ActPotts` themselves, these three estimators), else ``torch``.

The kernel compiles on first use with the system's C++ compiler (``$CXX``, else ``g++``) into
``$SLM_KERNEL_CACHE`` (default ``~/.cache/slm``), about two seconds, once per machine and source version.
Without a compiler ``auto`` falls back to torch with one warning and ``kernel`` stops with one line.
"""

from __future__ import annotations

import ctypes
import functools
import hashlib
import os
import shutil
import subprocess
import tempfile
import warnings
from pathlib import Path

import torch
from torch import Tensor

from slm.errors import InputError

ENGINES = ("auto", "kernel", "torch")
#: The estimators the kernel's backward pass knows, and their codes in it.
ESTIMATOR_CODES = {"ste": 0, "gumbel": 1, "score": 2}
SOURCE = Path(__file__).with_name("potts_kernel.cpp")
FLAGS = ("-O3", "-std=c++17", "-shared", "-fPIC", "-ffp-contract=off", "-pthread")

_P, _I32, _I = ctypes.c_void_p, ctypes.c_int, ctypes.c_int


class KernelError(InputError):
    """The compiled CPM engine could not be built or loaded."""


@functools.cache
def library() -> ctypes.CDLL:
    """The compiled kernel, built on first use (see the module docstring)."""
    source = SOURCE.read_bytes()
    compiler = os.environ.get("CXX", "g++")
    key = hashlib.sha256(source + " ".join((compiler, *FLAGS)).encode()).hexdigest()[:16]
    cache = Path(os.environ.get("SLM_KERNEL_CACHE", Path.home() / ".cache" / "slm"))
    path = cache / f"potts_kernel_{key}.so"
    if not path.exists():
        if shutil.which(compiler) is None:
            raise KernelError(f"model.engine: the CPM kernel needs a C++ compiler ({compiler!r} not found; set "
                                    f"CXX or use model.engine=torch)")
        warnings.warn(f"slm: compiling the CPM kernel into {path} (once per machine)", stacklevel=2)
        try:
            cache.mkdir(parents=True, exist_ok=True)
            with tempfile.TemporaryDirectory(dir=cache) as scratch:
                built = Path(scratch) / path.name
                result = subprocess.run([compiler, *FLAGS, str(SOURCE), "-o", str(built)], capture_output=True,
                                        text=True)
                if result.returncode != 0:
                    first = (result.stderr.strip().splitlines() or ["no message"])[0]
                    raise KernelError(f"model.engine: compiling {SOURCE.name} failed: {first}")
                os.replace(built, path)  # atomic: parallel first uses never load a half-written file
        except OSError as error:
            raise KernelError(f"model.engine: cannot build the CPM kernel in {cache} ({error.strerror}); set "
                                    f"SLM_KERNEL_CACHE to a writable folder or use model.engine=torch") from None
    lib = ctypes.CDLL(str(path))
    lib.slm_potts_mcs.argtypes = [_I] * 9 + [_P] * 15
    lib.slm_potts_mcs.restype = None
    lib.slm_potts_backward.argtypes = [_I] * 9 + [_P] * 12 + [_I, ctypes.c_float] + [_P] * 9
    lib.slm_potts_backward.restype = None
    lib.slm_count_clusters.argtypes = [_I] * 4 + [_P] * 2
    lib.slm_count_clusters.restype = None
    return lib


def choose(model: torch.nn.Module, state: tuple[Tensor, ...]) -> str:
    """``"kernel"`` or ``"torch"`` for one MCS of ``model`` from ``state``: ``model.engine`` resolved (see the
    module docstring); ``kernel`` where it cannot run is a one-line :class:`InputError`."""
    if model.engine == "torch":
        return "torch"
    reason = None
    changed = _changed_by(type(model))
    if changed is not None:
        reason = f"{changed} changes the MCS in ways the kernel does not know"
    elif state.labels.device.type != "cpu":
        reason = f"the state is on {state.labels.device} (the kernel runs on the CPU)"
    elif model.estimator.name not in ESTIMATOR_CODES:
        reason = f"its backward pass does not know the estimator {model.estimator.name!r}"
    elif state.volume.dtype != torch.float32:
        reason = f"volumes are {state.volume.dtype}, the kernel computes in float32"
    if reason is None:
        try:
            library()
        except KernelError as error:
            if model.engine == "kernel":
                raise
            _warn_once(str(error))
            return "torch"
        return "kernel"
    if model.engine == "kernel":
        raise InputError(f"model.engine: kernel cannot run this model: {reason}; use auto or torch")
    return "torch"


#: What a subclass overrides to change the MCS (see :class:`slm.models.CellularPotts`).
HOOKS = ("transition", "_sweep", "_resolve", "_copy_energy", "_copied", "_after_mcs", "_kernel_mcs")


@functools.cache
def _changed_by(kind: type) -> str | None:
    """The class that changes a hook of the MCS below the class that declared its ``kernel_terms`` (a subclass of
    a kernel model; torch's parametrisation wrapper changes none), or None."""
    for cls in kind.__mro__:
        if "kernel_terms" in cls.__dict__:
            return None
        if any(hook in cls.__dict__ for hook in HOOKS):
            return cls.__name__
    return kind.__name__


@functools.cache
def _warn_once(message: str) -> None:
    warnings.warn(f"{message}; running the torch engine", stacklevel=3)


def compiled_clusters(values: Tensor) -> Tensor | None:
    """:func:`slm.models.potts.count_clusters` by the kernel (``(B,)`` long), or None where it cannot run (not
    on the CPU, or no compiler: the torch version then counts)."""
    if values.device.type != "cpu":
        return None
    try:
        lib = library()
    except KernelError:
        return None
    values = values.to(torch.int64).contiguous()
    out = torch.empty(values.shape[0], dtype=torch.int64)
    lib.slm_count_clusters(*values.shape, torch.get_num_threads(), values.data_ptr(), out.data_ptr())
    return out


def _copy(tensor: Tensor) -> Tensor:
    return tensor.detach().clone(memory_format=torch.contiguous_format)


def _ptr(tensor: Tensor | None) -> int | None:
    return None if tensor is None else tensor.data_ptr()


def _forward(shape: tuple[int, ...], labels: Tensor, cell_types: Tensor, volume: Tensor, surface: Tensor,
             noise: Tensor, params: Tensor, act: Tensor, age: Tensor, moment: Tensor, record: bool
             ) -> tuple[Tensor, Tensor, Tensor, Tensor, Tensor, tuple[Tensor, ...] | None]:
    """Run the kernel on copies of the state's tensors; returns them and the tape (when ``record``)."""
    batch, height, width, _, k, _, _, has_act = shape
    labels, volume, surface = (_copy(t) for t in (labels, volume, surface))
    cell_types, noise = cell_types.contiguous(), noise.contiguous()  # held: the kernel reads raw pointers
    if has_act:
        age, moment, act = _copy(age), _copy(moment), _copy(act)
    tape, pointers = None, [None] * 6
    if record:
        n = height * width // 4
        tape = (torch.empty(4, batch, n, dtype=torch.int32), torch.zeros(4, batch, dtype=torch.int32),
                torch.empty(4, batch, n, 2, dtype=torch.int32), torch.empty(4, batch, n, k + 2, dtype=torch.uint8),
                torch.empty(4, batch, n, dtype=torch.uint8), torch.empty(4, batch, n, 6 if has_act else 0))
        pointers = [_ptr(t) if t.numel() else None for t in tape]
    library().slm_potts_mcs(*shape, torch.get_num_threads(), labels.data_ptr(), cell_types.data_ptr(),
                            volume.data_ptr(), surface.data_ptr(), noise.data_ptr(), params.data_ptr(),
                            *((_ptr(act), _ptr(age), _ptr(moment)) if has_act else (None,) * 3), *pointers)
    return labels, volume, surface, age, moment, tape


class _MCS(torch.autograd.Function):
    """One MCS by the kernel with a tape: ``(labels, volume, surface, path, moment, age, log_prob)`` (``log_prob``
    ``(B,)`` is zero, with the gradient of the decisions' log-probability) from the state's tensors, the noise,
    each lattice's parameters packed by :func:`_packed` and its ``(lambda_act, max_act)`` (act model)."""

    @staticmethod
    def forward(ctx, shape: tuple[int, ...], estimator: tuple[int, float], labels: Tensor, cell_types: Tensor,
                age: Tensor, noise: Tensor, volume: Tensor, surface: Tensor, path: Tensor, moment: Tensor,
                params: Tensor, act: Tensor):
        labels, volume, surface, age, moment, tape = _forward(shape, labels, cell_types, volume, surface, noise,
                                                              params, act, age, moment, True)
        ctx.shape, ctx.estimator = shape, estimator
        ctx.save_for_backward(cell_types.contiguous(), volume.clone(), surface.clone(), noise, params.detach(),
                              _copy(act), *tape)
        ctx.mark_non_differentiable(labels, age)
        return labels, volume, surface, path.detach().clone(), moment, age, volume.new_zeros(shape[0])

    @staticmethod
    def backward(ctx, g_labels, g_volume, g_surface, g_path, g_moment, g_age, g_log_prob):
        cell_types, volume, surface, noise, params, act, *tape = ctx.saved_tensors
        batch, _, _, ids, *_ = ctx.shape
        code, tau = ctx.estimator
        grads = [None if g is None else g.contiguous() for g in (g_volume, g_surface, g_path, g_moment, g_log_prob)]
        gi_volume, gi_surface = torch.empty(batch, ids), torch.empty(batch, ids)
        g_params, g_act = torch.zeros_like(params), torch.zeros_like(act)
        library().slm_potts_backward(*ctx.shape, torch.get_num_threads(), cell_types.data_ptr(), volume.data_ptr(),
                                     surface.data_ptr(), noise.data_ptr(), params.data_ptr(), _ptr(act) if act.numel()
                                     else None,
                                     *(_ptr(t) if t.numel() else None for t in tape), code, tau,
                                     *(_ptr(g) for g in grads[:4]), _ptr(grads[4] if code == 2 else None),
                                     gi_volume.data_ptr(), gi_surface.data_ptr(), g_params.data_ptr(),
                                     _ptr(g_act) if act.numel() else None)
        return (None, None, None, None, None, None, gi_volume, gi_surface, g_path, g_moment, g_params,
                g_act if act.numel() else None)


def _packed(model: torch.nn.Module, prepared: tuple[Tensor, ...], batch: int) -> Tensor:
    """Each lattice's parameters in the kernel's layout, ``(B, P)``: ``J`` (flattened), ``V_t, lambda_V, S_t,
    lambda_S`` per type, ``T`` (:meth:`slm.models.CellularPotts.lattice_params`); packed once per ``prepared``
    and batch size (once per rollout)."""
    cache = model._kernel_params
    if cache.key is not prepared or len(cache.value) != batch:
        contact, *per_type, temperature = model.lattice_params(prepared, batch)
        cache.key = prepared
        cache.value = torch.cat([contact, *per_type, temperature[:, None]], 1).contiguous()
    return cache.value


def mcs(model: torch.nn.Module, state: tuple[Tensor, ...], prepared: tuple[Tensor, ...], noise: Tensor,
        act: Tensor | None = None) -> tuple[Tensor, ...]:
    """One MCS of ``state`` by the kernel with the torch path's ``noise``; returns ``(labels, volume, surface,
    path, moment, age)`` (moment and age: empty unless ``act``, the act model's ``(lambda_act, max_act)`` of each
    lattice, ``(B, 2)``). With ``score`` the per-lattice log-probability of the decisions goes to the estimator."""
    labels, cell_types, volume, surface, path = state[:5]
    batch, height, width = labels.shape
    params = _packed(model, prepared, batch)
    shape = (batch, height, width, cell_types.shape[1], model.n_types + 1, model.neighbours, int(model.has_surface),
             int(act is not None))
    empty = volume.new_empty(0)
    age, moment, act = (state[5], state[6], act) if act is not None else (empty, empty, empty)
    if not (torch.is_grad_enabled() and any(t.requires_grad for t in (volume, surface, path, moment, params, act))):
        labels, volume, surface, age, moment, _ = _forward(shape, labels, cell_types, volume, surface, noise, params,
                                                           act, age, moment, False)
        return labels, volume, surface, path, moment, age
    estimator = (ESTIMATOR_CODES[model.estimator.name], float(getattr(model.estimator, "temperature", 1.0)))
    *out, log_prob = _MCS.apply(shape, estimator, labels, cell_types, age, noise, volume, surface, path, moment,
                                params, act)
    model.estimator.record_log_prob(log_prob)
    return tuple(out)
