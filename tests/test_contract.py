"""The simulator contract (:mod:`slm.models.base`), checked on every model the same way."""

from __future__ import annotations

from collections.abc import Callable

import pytest
import torch
from torch import Tensor

from slm.models import (
    SI,
    ActPotts,
    CellularPotts,
    MalevanetsKapral,
    OnePixelCPM,
    PersistentRandomWalk,
    PixelField,
    Simulator,
    uniform_state,
)

CELLSORT = [[0, 16, 16], [16, 2, 11], [16, 11, 14]]


def gen(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


#: name -> (a model with learnable parameters and a pathwise estimator, a batch of 3 starting states)
MODELS: dict[str, Callable[[], tuple[Simulator, object]]] = {
    "si": lambda: (SI(beta=0.05), (torch.rand(3, 32, 32, generator=gen(0)) < 0.01).float()),
    "prw": lambda: (lambda m: (m, m.initial_state(3, generator=gen(0))))(
        PersistentRandomWalk(0.3, 0.4, estimator="gumbel")),
    "pixel_cpm": lambda: (lambda m: (m, m.initial_state(3)))(OnePixelCPM(2.0, estimator="ste")),
    "mk": lambda: (MalevanetsKapral(), uniform_state(3, 16)),
    "potts": lambda: (lambda m: (m, m.initial_state(3, 16, generator=gen(0))))(
        CellularPotts(CELLSORT, volume_target=9, lambda_surface=0.2, cells=8, learn=["J_1_2", "temperature"])),
    "act": lambda: (lambda m: (m, m.initial_state(3, 16, generator=gen(0))))(
        ActPotts(volume_target=16, surface_target=40, cells=1)),
}


def tensors(state: object) -> list[Tensor]:
    return list(state) if isinstance(state, tuple) else [state]


def assert_same(a: object, b: object) -> None:
    assert type(a) is type(b), "a rollout keeps the state's type"
    for x, y in zip(tensors(a), tensors(b), strict=True):
        torch.testing.assert_close(x, y, rtol=0, atol=1e-5)


def lattice(state: object, i: int) -> list[Tensor]:
    return [t[i] for t in tensors(state)]


@pytest.fixture(params=list(MODELS))
def model_and_state(request):
    return MODELS[request.param]()


def test_seeded_rollouts_repeat_and_seeds_differ(model_and_state):
    model, state = model_and_state
    with torch.no_grad():
        a, b, c = (model.rollout(state, 4, gen(seed)) for seed in (1, 1, 2))
    assert_same(a, b)
    assert any(not torch.equal(x, y) for x, y in zip(tensors(a), tensors(c), strict=True))


def test_lattices_of_a_batch_are_independent(model_and_state):
    """Lattice 0's run does not depend on what the other lattices hold, and equal lattices draw their own noise."""
    model, state = model_and_state
    same = type(state)(*(t[[0, 0, 0]] for t in tensors(state))) if isinstance(state, tuple) else state[[0, 0, 0]]
    with torch.no_grad():
        mixed, copies = model.rollout(state, 30, gen(3)), model.rollout(same, 30, gen(3))
    for x, y in zip(lattice(mixed, 0), lattice(copies, 0), strict=True):
        torch.testing.assert_close(x, y, rtol=0, atol=1e-5)
    assert any(not torch.equal(x, y) for x, y in zip(lattice(copies, 0), lattice(copies, 1), strict=True))


def test_rollout_is_repeated_steps_seeded_per_step(model_and_state):
    model, state = model_and_state
    base = int(torch.randint(2**62, (1,), generator=gen(5)))
    with torch.no_grad():
        stepped = state
        for t in range(3):
            stepped = model.step(stepped, gen(base + t))
        assert_same(model.rollout(state, 3, gen(5)), stepped)


def test_recorded_frames_and_checkpointed_rollouts_match_the_plain_rollout(model_and_state):
    model, state = model_and_state
    plain = model.rollout(state, 4, gen(7))
    recorded = model.rollout(state, 4, gen(7), checkpoint_every=1, record_every=2,
                             record=lambda s: tensors(s)[0].float())
    assert_same(plain, recorded.state)
    assert recorded.frames.shape[:2] == (3, 3)
    torch.testing.assert_close(recorded.frames[:, 0], tensors(state)[0].float())
    torch.testing.assert_close(recorded.frames[:, -1], tensors(plain)[0].float())

    def gradient(final: object) -> list[Tensor | None]:
        model.zero_grad()
        sum(t.float().sum() for t in tensors(final) if t.requires_grad).backward(retain_graph=True)
        return [None if p.grad is None else p.grad.clone() for p in model.parameters()]

    for a, b in zip(gradient(plain), gradient(recorded.state), strict=True):
        assert (a is None) == (b is None)
        if a is not None:
            torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("name", [*MODELS, "pixel_field"])
def test_every_tensor_of_a_model_moves_with_it(name):
    """Every tensor a model holds is a parameter or a buffer, so ``model.to(device)`` moves all of it."""
    model = PixelField(torch.rand(6, 6)) if name == "pixel_field" else MODELS[name]()[0]
    registered = {id(t) for t in (*model.parameters(), *model.buffers())}
    loose = [key for key, value in vars(model).items() if isinstance(value, Tensor) and id(value) not in registered]
    assert not loose, f"tensors outside parameters and buffers: {loose}"
    moved = model.to(torch.float64)
    assert all(t.dtype == torch.float64 for t in moved.parameters()), "the parameters moved"
