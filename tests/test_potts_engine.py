"""The compiled CPM engine (slm.models.potts_engine) against the torch reference: the same decisions for the
same noise, the same gradients for every estimator, and the one place that chooses between them."""

import re
import warnings

import pytest
import torch

from slm.errors import InputError
from slm.estimators import make_estimator
from slm.models import ActPotts, CellularPotts, potts_engine
from slm.models.potts import count_clusters

CELLSORT = [[0, 16, 16], [16, 2, 11], [16, 11, 14]]
SETTINGS = {
    "moore": dict(),
    "moore_surface": dict(lambda_surface=1.0, surface_target=20.0),
    "von_neumann_surface": dict(lambda_surface=0.5, surface_target=12.0, neighbourhood="von_neumann"),
    "learned_energies": dict(contact=[[0, 15.3, 16.1], [15.3, 2.2, 10.7], [16.1, 10.7, 13.9]], temperature=9.3,
                             lambda_volume=1.7),
}


def gen(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def potts(engine: str, estimator: str = "ste", setting: str = "moore", learn: list[str] | None = None) -> CellularPotts:
    """The sweep schedule, which both engines run."""
    options = {"contact": CELLSORT, "volume_target": 25.0, "cells": 30, **SETTINGS[setting]}
    return CellularPotts(**options, learn=learn or [], estimator=make_estimator(estimator, 0.5), engine=engine,
                         schedule="sweep")


def act(engine: str, estimator: str = "ste") -> ActPotts:
    return ActPotts(cells=2, max_act=20.4, learn=["lambda_act", "max_act", "lambda_volume", "J_medium_cell"],
                    estimator=make_estimator(estimator, 0.5), engine=engine, schedule="sweep")


@pytest.mark.parametrize("setting", list(SETTINGS))
def test_the_kernel_makes_the_torch_paths_decisions(setting):
    final = {}
    for engine in ("torch", "kernel"):
        model = potts(engine, setting=setting)
        start = model.initial_state(3, 40, generator=gen(1))
        with torch.no_grad():
            final[engine] = model.rollout(start, 12, gen(2))
    assert torch.equal(final["torch"].labels, final["kernel"].labels)
    assert torch.equal(final["torch"].volume, final["kernel"].volume)
    assert torch.equal(final["torch"].surface, final["kernel"].surface)
    assert not torch.equal(final["kernel"].labels, start.labels)


def test_the_kernel_makes_the_torch_paths_decisions_in_the_act_model():
    final = {}
    for engine in ("torch", "kernel"):
        model = act(engine)
        with torch.no_grad():
            final[engine] = model.rollout(model.initial_state(2, 40, generator=gen(3)), 25, gen(4))
    assert torch.equal(final["torch"].labels, final["kernel"].labels)
    assert torch.equal(final["torch"].age, final["kernel"].age)
    torch.testing.assert_close(final["torch"].moment, final["kernel"].moment)


def potts_gradients(engine: str, estimator: str, setting: str) -> dict[str, torch.Tensor]:
    learn = ["J_1_2", "J_2_2", "lambda_volume", "volume_target", "temperature"]
    learn += ["lambda_surface", "surface_target"] if "surface" in setting else []
    model = potts(engine, estimator, setting, learn)
    final = model.rollout(model.initial_state(3, 40, generator=gen(5)), 6, gen(6))
    model.surrogate(model.summary(final)[:, [0, 1, 2, 4]]).mean(0).sum().backward()
    return {name: p.grad for name, p in model.named_parameters()}


def act_gradients(engine: str, estimator: str) -> dict[str, torch.Tensor]:
    model = act(engine, estimator)
    with torch.no_grad():
        start = model.rollout(model.initial_state(2, 40, generator=gen(7)), 10, gen(8))
    recording = model.rollout(start, 6, gen(9), record_every=2)
    steps = ((recording.frames[:, 1:] - recording.frames[:, :-1]) ** 2).sum(-1).mean((1, 2))
    outcome = torch.stack([steps, model.summary(recording.state)[:, 1]], 1)
    model.surrogate(outcome).mean(0).sum().backward()
    return {name: p.grad for name, p in model.named_parameters()}


@pytest.mark.parametrize("estimator", ["ste", "gumbel", "score"])
@pytest.mark.parametrize("setting", ["moore", "moore_surface", "act"])
def test_the_kernels_gradients_are_the_torch_paths(estimator, setting):
    grads = {engine: act_gradients(engine, estimator) if setting == "act" else
             potts_gradients(engine, estimator, setting) for engine in ("torch", "kernel")}
    assert set(grads["torch"]) == set(grads["kernel"])
    # Gumbel's slope s (1 - s) / (tau p (1 - p)) is ill-conditioned in float32 where s is near 1 or p near 0, and
    # the two engines' sigmoid and logarithm differ in the last bit: their sums agree to ~2e-4 (act, max_act).
    rtol = 1e-3 if estimator == "gumbel" else 1e-4
    for name, expected in grads["torch"].items():
        assert expected is not None and expected.abs().sum() > 0, name
        torch.testing.assert_close(grads["kernel"][name], expected, rtol=rtol, atol=1e-6, msg=name)


def test_a_checkpointed_kernel_rollout_has_the_same_gradient():
    grads = []
    for every in (None, 2):
        model = potts("kernel", learn=["J_1_2", "temperature"])
        final = model.rollout(model.initial_state(2, 32, generator=gen(10)), 6, gen(11), checkpoint_every=every)
        model.summary(final)[:, :3].sum().backward()
        grads.append(torch.stack([p.grad for p in model.parameters()]))
    torch.testing.assert_close(grads[0], grads[1])


class WithField(CellularPotts):
    """A CPM with one more energy term: the kernel does not know it."""

    def _copy_energy(self, state, prepared, a, b, where):
        return torch.zeros_like(state.labels[:, a::2, b::2], dtype=torch.float)


class WithDeclaredField(WithField):
    """The same term, declared: the engines and the reference say which term they lack."""

    terms = (*CellularPotts.terms, "field")


def test_a_declared_term_that_an_engine_lacks_is_named():
    from slm.models.reference.potts import reference_parameters

    state = potts("auto").initial_state(1, 32, generator=gen(12))
    assert potts_engine.choose(WithDeclaredField(CELLSORT, cells=30, schedule="sweep"), state) == "torch"
    with pytest.raises(InputError, match=re.escape("kernel cannot run this model: its energy has terms the kernel "
                                                   "does not compute (field)")):
        potts_engine.choose(WithDeclaredField(CELLSORT, cells=30, engine="kernel", schedule="sweep"), state)
    with pytest.raises(InputError, match=re.escape("does not know field's changes to the MCS")):
        WithDeclaredField(CELLSORT, cells=30)
    with pytest.raises(InputError, match=re.escape("the sequential reference does not compute the term(s) ['field']")):
        reference_parameters(WithDeclaredField(CELLSORT, cells=30, schedule="sweep"))


def test_the_engine_is_chosen_in_one_place():
    state = potts("auto").initial_state(1, 32, generator=gen(12))
    assert potts_engine.choose(potts("auto"), state) == "kernel"
    assert potts_engine.choose(potts("auto", learn=["J_1_2"]), state) == "kernel"  # through a parametrisation
    assert potts_engine.choose(potts("torch"), state) == "torch"
    assert potts_engine.choose(CellularPotts(CELLSORT, cells=30), state) == "kernel"  # the field's schedule
    assert potts_engine.choose(WithField(CELLSORT, cells=30, schedule="sweep"), state) == "torch"
    with pytest.raises(InputError, match=re.escape("model.engine: kernel cannot run this model: WithField")):
        potts_engine.choose(WithField(CELLSORT, cells=30, engine="kernel", schedule="sweep"), state)
    with pytest.raises(InputError, match=re.escape("model.engine: expected one of auto, kernel, torch")):
        CellularPotts(CELLSORT, engine="fast")


@pytest.mark.parametrize("kwargs, message", [
    (dict(engine="torch"), "model.schedule: random (the field's) runs on the compiled engine; the torch engine runs "
                           "model.schedule=sweep"),
    (dict(schedule="often"), "model.schedule: expected one of random, sweep, got 'often'"),
    (dict(targets="all"), "model.targets: expected one of border, uniform, got 'all'"),
])
def test_a_schedule_that_cannot_run_is_refused_before_any_compute(kwargs, message):
    with pytest.raises(InputError, match=re.escape(message)):
        CellularPotts(CELLSORT, cells=30, **kwargs)
    with pytest.raises(InputError, match="which does not know WithField's changes to the MCS; use model.schedule="):
        WithField(CELLSORT, cells=30)


def test_the_random_schedule_never_runs_on_another_engine_silently(monkeypatch):
    model = CellularPotts(CELLSORT, cells=30)
    state = model.initial_state(1, 32, generator=gen(12))
    monkeypatch.setattr(model.estimator, "name", "reinmax")
    with pytest.raises(InputError, match="model.schedule: random runs on the compiled engine, which cannot run "
                                         "here: its backward pass does not know the estimator 'reinmax'"):
        model.rollout(state, 1, gen(1))


@pytest.fixture
def kernel_cache(monkeypatch, tmp_path):
    """A fresh kernel cache and no memory of earlier builds; the real library back afterwards."""
    monkeypatch.setenv("SLM_KERNEL_CACHE", str(tmp_path))
    monkeypatch.setattr(potts_engine, "_LOADED", {})
    potts_engine._warn_once.cache_clear()
    yield tmp_path
    potts_engine._warn_once.cache_clear()


def fallback_warnings(runs: int) -> list[str]:
    """Warnings of ``runs`` MCS of the sweep schedule under ``auto`` (the kernel cannot be had)."""
    model = potts("auto")
    state = model.initial_state(1, 32, generator=gen(13))
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        with torch.no_grad():
            model.rollout(state, runs, gen(1))
    return [str(w.message) for w in caught]


def test_without_a_compiler_auto_falls_back_once_and_kernel_and_random_say_why(kernel_cache, monkeypatch):
    monkeypatch.setenv("CXX", "no-such-compiler")
    state = potts("auto").initial_state(1, 32, generator=gen(13))
    with pytest.raises(potts_engine.KernelError, match="needs a C\\+\\+ compiler \\('no-such-compiler'"):
        potts_engine.choose(potts("kernel"), state)
    with pytest.raises(potts_engine.KernelError, match="model.schedule=sweep runs without it"):
        potts_engine.choose(CellularPotts(CELLSORT, cells=30), state)
    assert [m for m in fallback_warnings(3) if "running the torch engine" in m] != []
    assert fallback_warnings(3) == []  # once


def test_a_failed_build_is_remembered_and_never_retried(kernel_cache, monkeypatch):
    calls = kernel_cache / "calls"
    compiler = kernel_cache / "bad-g++"
    compiler.write_text(f"#!/bin/sh\necho x >> {calls}\necho 'error: no luck' >&2\nexit 1\n")
    compiler.chmod(0o755)
    monkeypatch.setenv("CXX", str(compiler))
    messages = fallback_warnings(4)
    assert sum("compiling potts_kernel.cpp failed: error: no luck" in m and "running the torch engine" in m
               for m in messages) == 1
    assert calls.read_text().count("x") == 1  # one build for four MCS
    monkeypatch.setattr(potts_engine, "_LOADED", {})  # a new process: the failure is on disk
    with pytest.raises(potts_engine.KernelError, match="failed before: error: no luck \\(delete .*\\.failed to retry"):
        potts_engine.library()
    assert calls.read_text().count("x") == 1


def test_a_library_that_does_not_load_falls_back_once(kernel_cache):
    path = potts_engine.library_path()
    path.write_bytes(b"not a shared library")
    assert sum("does not load" in m for m in fallback_warnings(3)) == 1
    with pytest.raises(potts_engine.KernelError, match="does not load .*; delete it to rebuild"):
        potts_engine.library()


def test_the_cache_key_holds_the_platform_and_the_abi_checked_on_load(kernel_cache, monkeypatch):
    import platform

    name = potts_engine.library_path().name
    assert platform.machine() in name and platform.system().lower() in name
    monkeypatch.setattr(potts_engine, "ABI_VERSION", potts_engine.ABI_VERSION + 1)
    newer = potts_engine.library_path()
    assert newer.name != name
    built = potts_engine._build(newer)  # the source still reports the old version
    with pytest.raises(potts_engine.KernelError, match=f"has ABI version {potts_engine.ABI_VERSION - 1}, expected"):
        potts_engine._load(built)


def test_compiled_cluster_counts_are_the_torch_ones():
    values = torch.randint(0, 3, (6, 12, 10), generator=gen(14))
    values[0] = 0
    values[1] = 1  # one cluster that wraps both ways
    values[2, :, 4] = 2  # a band closed around the torus
    compiled, reference = count_clusters(values), count_clusters(values, compiled=False)
    assert compiled[0] == 0 and compiled[1] == 1
    assert torch.equal(compiled, reference)
