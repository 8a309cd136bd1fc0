r"""The compiled engine of the multi-cell CPM: Monte Carlo steps in C++ (``potts_kernel.cpp``), behind an
:class:`torch.autograd.Function`, and the one place that chooses the engine for a schedule.

Schedules (``model.schedule``):

* ``random`` (default), the field's: an MCS is ``N`` copy attempts (``N`` sites, 2D or 3D) at uniform random
  targets, decided one at
  a time (CompuCell3D, Morpheus, glazier, Artistoo). Compiled engine only. The kernel draws only targets in the
  border set (sites with a Moore neighbour of another id) and skips the attempts between two of them in one
  geometric draw: the same process, exactly, as uniform targets (``targets="uniform"``, the literal draws that
  :func:`slm.models.reference.potts.sequential_mcs` replays attempt for attempt; tests and the benchmark).
  Each MCS draws one seed from the step's generator; lattice ``b`` mixes in ``b``, so noise is reproducible from
  (seed, lattice, step).
* ``sweep``: every site once per MCS in four site classes (eight in 3D; :meth:`slm.models.CellularPotts._sweep`):
  the same stationary distribution, other kinetics. The torch engine (any device and dimension) is its reference;
  in 2D the kernel makes its decisions for the same noise (a 3D sweep runs on torch).

Engines (``model.engine``): ``torch``, ``kernel`` or ``auto`` (``kernel`` where it applies: a CPU state, the
models :class:`slm.models.CellularPotts` and :class:`slm.models.ActPotts` themselves, the estimators ``ste``,
``gumbel``, ``score``; else ``torch``). A schedule that cannot run where it was asked to (``random`` with the
torch engine, on CUDA, or without a compiler) is a one-line error, never a silent change of kinetics; under
``sweep`` a kernel that cannot be built or loaded falls back to torch with one warning.

With autograd on the kernel records a tape per MCS (every decided attempt, in order) and its backward pass
walks it in reverse, giving the torch path's gradients (``sweep``) for ``ste``, ``gumbel`` and ``score``.

Build: on first use with the system's C++ compiler (``$CXX``, else ``g++``) into ``$SLM_KERNEL_CACHE`` (default
``~/.cache/slm``), about two seconds, once per machine, platform, architecture, ABI version and source. A build
that fails is remembered (in the process, and on disk for a compiler error), so it is never retried per step;
a library that does not load, or reports another :data:`ABI_VERSION`, counts as a failed build.
"""

from __future__ import annotations

import ctypes
import functools
import hashlib
import os
import platform
import shutil
import subprocess
import tempfile
import warnings
from pathlib import Path

import torch
from torch import Tensor

from slm.errors import InputError

ENGINES = ("auto", "kernel", "torch")
SCHEDULES = ("random", "sweep")
#: How the kernel draws the targets of the random schedule: ``border`` (the default) or ``uniform`` (literal).
TARGETS = {"border": 1, "uniform": 2}
SWEEP = 0
#: The terms of :data:`slm.models.potts.TERMS` the kernel computes.
KERNEL_TERMS = ("contact", "volume", "surface", "act")
#: The estimators the kernel's backward pass knows, and their codes in it.
ESTIMATOR_CODES = {"ste": 0, "gumbel": 1, "score": 2}
#: The kernel's ``ABI_VERSION``; a library that reports another is not used.
ABI_VERSION = 3
SOURCE = Path(__file__).with_name("potts_kernel.cpp")
FLAGS = ("-O3", "-std=c++17", "-shared", "-fPIC", "-ffp-contract=off", "-pthread")

_P = ctypes.c_void_p


class _Args(ctypes.Structure):
    """The kernel's ``Args`` (same order and types)."""

    _fields_ = [*((name, ctypes.c_int32) for name in ("B", "D", "H", "W", "C", "K", "nbh", "has_surface", "act",
                                                      "threads", "schedule", "estimator", "mcs")),
                ("tau", ctypes.c_float),
                *((name, _P) for name in ("labels", "types", "volume", "surface", "noise", "seeds", "params",
                                          "act_params", "age", "moment", "tape_count", "tape_cells", "tape_counts",
                                          "tape_noise", "tape_decision", "tape_extra", "g_volume", "g_surface",
                                          "g_path", "g_moment", "g_logp", "gi_volume", "gi_surface", "g_params",
                                          "g_act"))]


class KernelError(InputError):
    """The compiled CPM engine could not be built or loaded."""


#: Every library path tried in this process: the loaded library, or why it failed.
_LOADED: dict[Path, ctypes.CDLL | KernelError] = {}


def library_path() -> Path:
    """Where the kernel for this source, compiler, flags, platform, architecture and ABI version lives."""
    compiler = os.environ.get("CXX", "g++")
    tag = " ".join((compiler, *FLAGS, platform.system(), platform.machine(), f"abi{ABI_VERSION}"))
    key = hashlib.sha256(SOURCE.read_bytes() + tag.encode()).hexdigest()[:16]
    cache = Path(os.environ.get("SLM_KERNEL_CACHE", Path.home() / ".cache" / "slm"))
    return cache / f"potts_kernel_{platform.system().lower()}_{platform.machine()}_{key}.so"


def library() -> ctypes.CDLL:
    """The compiled kernel, built on first use (see the module docstring); a :class:`KernelError` says why not."""
    path = library_path()
    if path not in _LOADED:
        try:
            _LOADED[path] = _load(_build(path))
        except KernelError as error:
            _LOADED[path] = error
    found = _LOADED[path]
    if isinstance(found, KernelError):
        raise found
    return found


def _build(path: Path) -> Path:
    failed = path.with_suffix(".failed")
    if path.exists():
        return path
    if failed.exists():
        raise KernelError(f"model.engine: compiling {SOURCE.name} failed before: {failed.read_text().strip()} "
                          f"(delete {failed} to retry)")
    compiler = os.environ.get("CXX", "g++")
    if shutil.which(compiler) is None:
        raise KernelError(f"model.engine: the CPM kernel needs a C++ compiler ({compiler!r} not found; set CXX)")
    warnings.warn(f"slm: compiling the CPM kernel into {path} (once per machine)", stacklevel=3)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryDirectory(dir=path.parent) as scratch:
            built = Path(scratch) / path.name
            result = subprocess.run([compiler, *FLAGS, str(SOURCE), "-o", str(built)], capture_output=True, text=True)
            if result.returncode != 0:
                first = (result.stderr.strip().splitlines() or ["no message"])[0]
                failed.write_text(first + "\n")
                raise KernelError(f"model.engine: compiling {SOURCE.name} failed: {first}")
            os.replace(built, path)  # atomic: parallel first uses never load a half-written file
    except OSError as error:
        raise KernelError(f"model.engine: cannot build the CPM kernel in {path.parent} ({error.strerror}); set "
                          f"SLM_KERNEL_CACHE to a writable folder") from None
    return path


def _load(path: Path) -> ctypes.CDLL:
    try:
        lib = ctypes.CDLL(str(path))
        lib.slm_abi_version.restype = ctypes.c_int32
        version = lib.slm_abi_version()
    except (OSError, AttributeError) as error:
        raise KernelError(f"model.engine: the CPM kernel {path} does not load ({error}); delete it to rebuild"
                          ) from None
    if version != ABI_VERSION:
        raise KernelError(f"model.engine: the CPM kernel {path} has ABI version {version}, expected {ABI_VERSION}; "
                          f"delete it to rebuild")
    for name in ("slm_potts_mcs", "slm_potts_backward"):
        getattr(lib, name).argtypes = [ctypes.POINTER(_Args)]
        getattr(lib, name).restype = None
    lib.slm_count_clusters.argtypes = [ctypes.c_int] * 5 + [_P] * 2
    lib.slm_uniforms.argtypes = [ctypes.c_int64, ctypes.c_int, ctypes.c_int64, _P]
    for name in ("slm_count_clusters", "slm_uniforms"):
        getattr(lib, name).restype = None
    return lib


def check(model: torch.nn.Module) -> None:
    """What can be told before any compute: a schedule the chosen engine or model cannot run, one line."""
    if model.schedule not in SCHEDULES:
        raise InputError(f"model.schedule: expected one of {', '.join(SCHEDULES)}, got {model.schedule!r}")
    if model.engine not in ENGINES:
        raise InputError(f"model.engine: expected one of {', '.join(ENGINES)}, got {model.engine!r}")
    if model.schedule == "random":
        if model.engine == "torch":
            raise InputError("model.schedule: random (the field's) runs on the compiled engine; the torch engine "
                             "runs model.schedule=sweep (other kinetics)")
        unknown = [term for term in model.terms if term not in KERNEL_TERMS]
        changed = ", ".join(unknown) if unknown else _changed_by(type(model))
        if changed is not None:
            raise InputError(f"model.schedule: random runs on the compiled engine, which does not know {changed}'s "
                             f"changes to the MCS; use model.schedule=sweep")


def choose(model: torch.nn.Module, state: tuple[Tensor, ...]) -> str:
    """``"kernel"`` or ``"torch"`` for one MCS of ``model`` from ``state`` (see the module docstring); where the
    schedule or ``model.engine=kernel`` cannot run, a one-line :class:`InputError`."""
    check(model)
    if model.engine == "torch":
        return "torch"
    reason = None
    unknown = [term for term in model.terms if term not in KERNEL_TERMS]
    if unknown:
        reason = f"its energy has terms the kernel does not compute ({', '.join(unknown)})"
    elif _changed_by(type(model)) is not None:
        reason = f"{_changed_by(type(model))} changes the MCS in ways the kernel does not know"
    elif state.labels.device.type != "cpu":
        reason = f"the state is on {state.labels.device} (the kernel runs on the CPU)"
    elif model.estimator.name not in ESTIMATOR_CODES:
        reason = f"its backward pass does not know the estimator {model.estimator.name!r}"
    elif state.volume.dtype != torch.float32:
        reason = f"volumes are {state.volume.dtype}, the kernel computes in float32"
    elif model.schedule == "sweep" and state.labels.dim() == 4:
        reason = "the kernel runs the sweep in 2D only"
    if reason is None:
        try:
            library()
            return "kernel"
        except KernelError as error:
            if model.schedule == "random":
                raise KernelError(f"{error}; model.schedule=sweep runs without it (other kinetics)") from None
            if model.engine == "kernel":
                raise
            _warn_once(str(error))
            return "torch"
    if model.schedule == "random":
        raise InputError(f"model.schedule: random runs on the compiled engine, which cannot run here: {reason}; use "
                         f"model.schedule=sweep (other kinetics)")
    if model.engine == "kernel":
        raise InputError(f"model.engine: kernel cannot run this model: {reason}; use auto or torch")
    return "torch"


#: What a subclass overrides to change the MCS (see :class:`slm.models.CellularPotts`).
HOOKS = ("transition", "_sweep", "_resolve", "_copy_energy", "_copied", "_after_mcs", "_kernel_mcs")


@functools.cache
def _changed_by(kind: type) -> str | None:
    """The class that changes a hook of the MCS without declaring its ``terms`` (below the class that declared the
    model's terms; torch's parametrisation wrapper changes none), or None."""
    for cls in kind.__mro__:
        if "terms" in cls.__dict__:
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
    lib.slm_count_clusters(*_batch_shape(values), torch.get_num_threads(), values.data_ptr(), out.data_ptr())
    return out


def mcs_seed(generator: torch.Generator | None) -> int:
    """The seed of one MCS of the random schedule, drawn from the step's generator."""
    device = generator.device if generator is not None else "cpu"
    return int(torch.randint(2**62, (1,), generator=generator, device=device))


def uniforms(seed: int, lattice: int, n: int) -> Tensor:
    """The first ``n`` uniforms of lattice ``lattice``'s stream in an MCS seeded ``seed`` (float64): with
    ``targets="uniform"`` attempt ``i`` uses ``3 i`` (target), ``3 i + 1`` (direction) and ``3 i + 2``
    (acceptance)."""
    out = torch.empty(n, dtype=torch.float64)
    library().slm_uniforms(seed, lattice, n, out.data_ptr())
    return out


def _batch_shape(labels: Tensor) -> tuple[int, int, int, int]:
    """``(B, D, H, W)`` of a batch of planes ``(B, H, W)`` (``D = 1``) or cubes ``(B, D, H, W)``."""
    return (labels.shape[0], 1, *labels.shape[1:]) if labels.dim() == 3 else tuple(labels.shape)


def _copy(tensor: Tensor) -> Tensor:
    return tensor.detach().clone(memory_format=torch.contiguous_format)


def _ptr(tensor: Tensor | None) -> int | None:
    return None if tensor is None or tensor.numel() == 0 else tensor.data_ptr()


def _forward(shape: tuple[int, ...], schedule: int, labels: Tensor, cell_types: Tensor, volume: Tensor,
             surface: Tensor, draws: Tensor, params: Tensor, act: Tensor, age: Tensor, moment: Tensor, record: bool
             ) -> tuple[tuple[Tensor, ...], tuple[Tensor, ...] | None]:
    """Run the kernel on copies of the state's tensors (``draws``: the sweep's noise, or one seed per MCS);
    returns ``(labels, volume, surface, age, moment)`` and the tape of all the MCS (when ``record``)."""
    batch, depth, height, width, ids, k, neighbours, has_surface, has_act = shape
    labels, volume, surface = (_copy(t) for t in (labels, volume, surface))
    cell_types, draws = cell_types.contiguous(), draws.contiguous()  # held: the kernel reads raw pointers
    if has_act:
        age, moment, act = _copy(age), _copy(moment), act.detach().contiguous()
    tape = None
    steps = 1 if schedule == SWEEP else len(draws)
    n = steps * depth * height * width  # records per lattice at most; pages never written are never touched
    if record:
        extra = 2 + 2 * (3 if depth > 1 else 2)  # act: GM(s) - GM(t) at both memories, the site's position for s, t
        tape = (torch.zeros(batch, dtype=torch.int32), torch.empty(batch, n, 2, dtype=torch.int32),
                torch.empty(batch, n, k + 2, dtype=torch.uint8), torch.empty(batch, n),
                torch.empty(batch, n, dtype=torch.uint8), torch.empty(batch, n, extra if has_act else 0))
    args = _Args(*shape, torch.get_num_threads(), schedule, 0, steps, 1.0,
                 labels.data_ptr(), cell_types.data_ptr(), volume.data_ptr(), surface.data_ptr(),
                 _ptr(draws) if schedule == SWEEP else None, None if schedule == SWEEP else _ptr(draws),
                 params.data_ptr(), *((_ptr(act), _ptr(age), _ptr(moment)) if has_act else (None,) * 3),
                 *((_ptr(t) for t in tape) if tape else (None,) * 6))
    library().slm_potts_mcs(ctypes.byref(args))
    return (labels, volume, surface, age, moment), tape


class _MCS(torch.autograd.Function):
    """MCS by the kernel with a tape: ``(labels, volume, surface, path, moment, age, log_prob)`` (``log_prob``
    ``(B,)`` is zero, with the gradient of the decisions' log-probability) from the state's tensors, the draws,
    each lattice's parameters packed by :func:`_packed` and its ``(lambda_act, max_act)`` (act model)."""

    @staticmethod
    def forward(ctx, shape: tuple[int, ...], schedule: int, estimator: tuple[int, float], labels: Tensor,
                cell_types: Tensor, age: Tensor, draws: Tensor, volume: Tensor, surface: Tensor, path: Tensor,
                moment: Tensor, params: Tensor, act: Tensor):
        (labels, volume, surface, age, moment), tape = _forward(shape, schedule, labels, cell_types, volume, surface,
                                                                draws, params, act, age, moment, True)
        ctx.shape, ctx.estimator = shape, estimator
        ctx.save_for_backward(cell_types.contiguous(), volume.clone(), surface.clone(), params.detach().contiguous(),
                              act.detach().contiguous(), *tape)
        ctx.mark_non_differentiable(labels, age)
        return labels, volume, surface, path.detach().clone(), moment, age, volume.new_zeros(shape[0])

    @staticmethod
    def backward(ctx, g_labels, g_volume, g_surface, g_path, g_moment, g_age, g_log_prob):
        cell_types, volume, surface, params, act, *tape = ctx.saved_tensors
        batch, depth, height, width, ids, *_ = ctx.shape
        code, tau = ctx.estimator
        grads = [None if g is None else g.contiguous() for g in (g_volume, g_surface, g_path, g_moment, g_log_prob)]
        gi_volume, gi_surface = torch.empty(batch, ids), torch.empty(batch, ids)
        g_params, g_act = torch.zeros_like(params), torch.zeros_like(act)
        steps = tape[1].shape[1] // (depth * height * width)  # the tape's capacity: records per lattice and MCS
        args = _Args(*ctx.shape, torch.get_num_threads(), 0, code, steps, tau, None, cell_types.data_ptr(),
                     volume.data_ptr(), surface.data_ptr(), None, None, params.data_ptr(), _ptr(act), None, None,
                     *(_ptr(t) for t in tape), *(_ptr(g) for g in grads[:4]),
                     _ptr(grads[4] if code == ESTIMATOR_CODES["score"] else None), gi_volume.data_ptr(),
                     gi_surface.data_ptr(), g_params.data_ptr(), _ptr(g_act))
        library().slm_potts_backward(ctypes.byref(args))
        return (None, None, None, None, None, None, None, gi_volume, gi_surface, g_path, g_moment, g_params,
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


def mcs(model: torch.nn.Module, state: tuple[Tensor, ...], prepared: tuple[Tensor, ...], draws: Tensor,
        act: Tensor | None = None) -> tuple[Tensor, ...]:
    """MCS of ``state`` by the kernel; returns ``(labels, volume, surface, path, moment, age)`` (moment and age:
    empty unless ``act``, the act model's ``(lambda_act, max_act)`` of each lattice, ``(B, 2)``).

    ``draws``: under ``sweep`` the torch path's noise of one MCS; under ``random`` one seed per MCS ``(steps,)``
    int64, all run in one call (one tape, one node of the autograd graph). With ``score`` the per-lattice
    log-probability of the decisions goes to the estimator."""
    labels, cell_types, volume, surface, path = state[:5]
    batch = labels.shape[0]
    params = _packed(model, prepared, batch)
    shape = (*_batch_shape(labels), cell_types.shape[1], model.n_types + 1, model.bonds(labels.dim() - 1),
             int(model.has_surface), int(act is not None))
    schedule = SWEEP if model.schedule == "sweep" else TARGETS[model.targets]
    empty = volume.new_empty(0)
    age, moment, act = (state[5], state[6], act) if act is not None else (empty, empty, empty)
    if not (torch.is_grad_enabled() and any(t.requires_grad for t in (volume, surface, path, moment, params, act))):
        (labels, volume, surface, age, moment), _ = _forward(shape, schedule, labels, cell_types, volume, surface,
                                                             draws, params, act, age, moment, False)
        return labels, volume, surface, path, moment, age
    estimator = (ESTIMATOR_CODES[model.estimator.name], float(getattr(model.estimator, "temperature", 1.0)))
    *out, log_prob = _MCS.apply(shape, schedule, estimator, labels, cell_types, age, draws, volume, surface, path,
                                moment, params, act)
    model.estimator.record_log_prob(log_prob)
    return tuple(out)
