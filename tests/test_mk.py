import json
import math

import numpy as np
import pytest
import torch

from slm.errors import InputError
from slm.models.malevanets_kapral import (
    DIRECTIONS,
    MalevanetsKapral,
    _Lookup,
    _Translate,
    direction_probabilities,
    shift_indices,
    uniform_state,
)
from slm.stats import dominant_wavelength, is_patterned, pattern_score
from slm.train import train
from tests.conftest import run_cli


def gen(seed):
    return torch.Generator().manual_seed(seed)


def test_direction_probabilities_sum_to_one_with_lighter_diagonals():
    probs = direction_probabilities(torch.tensor([0.0, 0.4, 1.0]))
    assert torch.allclose(probs.sum(-1), torch.ones(3))
    assert probs[0, 0] == 1 and probs[2, 0] == 0
    axis, diagonal = probs[1, 1], probs[1, 5]
    assert math.isclose(axis / diagonal, math.sqrt(2), rel_tol=1e-6)


def test_shift_indices_translate_the_torus():
    E = torch.zeros(5, 7)
    E[0, 0] = 1
    index = shift_indices(5, 7)
    for k, (dr, dc) in enumerate(DIRECTIONS):
        moved = E.flatten()[index[k]].view(5, 7)
        assert moved[dr % 5, dc % 7] == 1 and moved.sum() == 1


def test_translate_matches_the_weighted_sum_of_all_shifts_in_value_and_gradient():
    E = torch.rand(3, 6, 8, requires_grad=True)
    logits = torch.randn(3, 9, requires_grad=True)
    soft = logits.softmax(-1)
    z = torch.nn.functional.one_hot(soft.argmax(-1), 9).float() + soft - soft.detach()
    index = shift_indices(6, 8)
    fast = _Translate.apply(E, z, index, index.argsort(1))
    naive = sum(z[:, k, None, None] * torch.roll(E, shifts=shift, dims=(-2, -1)) for k, shift in enumerate(DIRECTIONS))
    weights = torch.randn_like(fast)
    grads_fast = torch.autograd.grad((fast * weights).sum(), (E, logits), retain_graph=True)
    grads_naive = torch.autograd.grad((naive * weights).sum(), (E, logits))
    assert torch.allclose(fast, naive)
    for a, b in zip(grads_fast, grads_naive, strict=True):
        assert torch.allclose(a, b, atol=1e-5)


def test_diffusion_conserves_every_species_in_every_lattice():
    model = MalevanetsKapral(D_A=0.7, D_B=0.3)
    x = torch.randint(0, 51, (4, 2, 16, 16)).float()
    out = x
    with torch.no_grad():
        for t in range(50):
            out = model.diffuse(out, direction_probabilities(torch.tensor([0.7, 0.3])),
                                torch.rand(x.shape, generator=gen(t)), torch.rand(4, 2, 9, generator=gen(t)))
    assert torch.equal(out.sum((-2, -1)), x.sum((-2, -1)))
    assert not torch.equal(out, x)


def test_full_sites_always_excite_and_empty_ones_never():
    model = MalevanetsKapral(D_A=1.0 - 1e-6, D_B=1.0 - 1e-6)  # always moves
    x = torch.zeros(1, 2, 8, 8)
    x[0, :, 2, 2] = 50
    with torch.no_grad():
        out = model.diffuse(x, direction_probabilities(torch.tensor([1.0, 1.0])), torch.rand(x.shape, generator=gen(0)),
                            torch.rand(1, 2, 9, generator=gen(1)))
    # exactly one particle left the full site, and it landed on a neighbour
    assert out[0, 0, 2, 2] == 49 and out[0, 0].sum() == 50 and out[0, 0, 1:4, 1:4].sum() == 50


def test_reaction_rates_against_hand_values():
    model = MalevanetsKapral(k1=0.98, k2=0.1, k3=0.2)
    A, B = torch.tensor(10.0), torch.tensor(20.0)
    p = model.reaction_probabilities(A, B)
    g = 0.005
    hand = [g * 0.98 * 10 * 9 * 40 / (49 * 48), g * 0.98 * 10 * 40 * 39 / (49 * 48), g * 0.1 * 40 * 20 / 50,
            g * 0.1 * 10 * 30 / 50, g * 0.2 * 40 * 30 / 50, g * 0.2 * 10 * 20 / 50]
    assert torch.allclose(p, torch.tensor(hand), rtol=1e-5)
    table = model.rates(model.values())[1]
    size = 52
    assert torch.allclose(table.view(6, size, size)[:, 10, 20], torch.tensor(hand), rtol=1e-5)


def test_tabulated_reaction_has_the_gradient_of_the_polynomials():
    """The table look-up and the direct polynomial give the same p and the same dp/dA, dp/dB, dp/dk."""
    model = MalevanetsKapral(k1=0.9, k2=0.3, k3=0.4, gamma=0.01)
    A = torch.randint(0, 51, (2, 8, 8)).float().requires_grad_()
    B = torch.randint(0, 51, (2, 8, 8)).float().requires_grad_()
    channel = torch.randint(0, 6, (2, 8, 8))
    direct = model.reaction_probabilities(A, B).gather(0, channel[None])[0].clamp(0, 1)
    table, slopes = model.rates(model.values())[1:]
    index = (channel * 52 + A.detach().long()) * 52 + B.detach().long()
    looked_up = _Lookup.apply(table, slopes, index, torch.stack([A, B], 1))
    weights = torch.rand_like(direct)
    params = [model.parametrizations[n].original for n in ("k1", "k2", "k3")]
    g_direct = torch.autograd.grad((direct * weights).sum(), [A, B, *params])
    g_lookup = torch.autograd.grad((looked_up * weights).sum(), [A, B, *params])
    assert torch.allclose(direct, looked_up)
    for a, b in zip(g_direct, g_lookup, strict=True):
        assert torch.allclose(a, b, rtol=1e-4, atol=1e-7)


def test_reaction_changes_one_species_by_at_most_one():
    model = MalevanetsKapral(k1=0.99, k2=0.99, k3=0.99, gamma=0.1)
    x = uniform_state(2, 16, stripe=False)
    with torch.no_grad():
        out = model.react(x, *model.rates(model.values())[1:], torch.rand(2, 16, 16, generator=gen(0)))
    change = out - x
    assert change.abs().max() == 1 and (change.abs().sum(1) <= 1).all() and change.abs().sum() > 10


def test_reaction_drift_is_the_mean_of_the_six_channels():
    """One uniform per site picks the channel and draws it: E[dA] = (p1 - p2 + p3 - p4) / 6, E[dB] = (p5 - p6) / 6."""
    model = MalevanetsKapral(k1=0.9, k2=0.6, k3=0.7, gamma=0.05)
    x = torch.stack([torch.full((4, 128, 128), 30.0), torch.full((4, 128, 128), 12.0)], 1)
    with torch.no_grad():
        change = model.react(x, *model.rates(model.values())[1:], torch.rand(4, 128, 128, generator=gen(2))) - x
        p = model.reaction_probabilities(torch.tensor(30.0), torch.tensor(12.0)).clamp(0, 1)
    expected = torch.stack([p[0] - p[1] + p[2] - p[3], p[4] - p[5]]) / 6
    mean = change.mean((0, 2, 3))
    se = change.std((0, 2, 3)) / math.sqrt(change[:, 0].numel())
    assert ((mean - expected).abs() < 5 * se).all(), (mean, expected)


def test_shapes_seeding_and_batch_independence():
    model = MalevanetsKapral()
    x = uniform_state(3, 20)
    with torch.no_grad():
        a = model.rollout(x, 30, gen(1))
        b = model.rollout(x, 30, gen(1))
        y = x.clone()
        y[2] = 0
        c = model.rollout(y, 30, gen(1))
    assert a.shape == x.shape and torch.equal(a, b)
    assert a.min() >= 0 and a.max() <= 50  # counts stay in 0..N, which the reaction table relies on
    assert not torch.equal(a[0], a[1])  # lattices of a batch draw different noise
    assert torch.equal(a[:2], c[:2])  # and do not depend on each other


def test_checkpointing_gives_the_same_values_and_gradients():
    x = uniform_state(1, 24)
    results = []
    for every in (None, 7):
        model = MalevanetsKapral(D_A=0.2, D_B=0.5, k1=0.9, k2=0.2, k3=0.3)
        out = model.rollout(x, 40, gen(3), checkpoint_every=every)
        ((out - x) ** 2).mean().backward()
        grads = torch.stack([model.parametrizations[n].original.grad for n in ("D_A", "D_B", "k1", "k2", "k3")])
        results.append((out.detach(), grads))
    assert torch.equal(results[0][0], results[1][0])
    assert torch.allclose(results[0][1], results[1][1])
    assert (results[0][1] != 0).all() and results[0][1].isfinite().all()


def test_fixed_parameters_are_not_learnable_and_bad_values_are_refused():
    model = MalevanetsKapral(fixed=["D_A", "D_B"])
    assert {n.split(".")[1] for n, _ in model.named_parameters()} == {"k1", "k2", "k3"}
    with pytest.raises(InputError, match="model.fixed: unknown"):
        MalevanetsKapral(fixed=["D_C"])
    with pytest.raises(InputError, match=r"model.k2: expected a value in \[0, 1\]"):
        MalevanetsKapral(k2=1.5)


@pytest.fixture(scope="module")
def reference_pattern():
    with torch.no_grad():
        return MalevanetsKapral().rollout(uniform_state(1, 64), 15000, gen(0))[0, 0] / 50


def test_pattern_score_separates_patterns_from_noise_and_saturation(reference_pattern):
    noise = torch.randint(0, 51, (64, 64)).float() / 50
    saturated = (50 - torch.randint(0, 3, (64, 64)).float()) / 50
    with torch.no_grad():
        washed_out = MalevanetsKapral(k1=0.3, k2=0.8, k3=0.5).rollout(uniform_state(1, 64), 5000, gen(0))[0, 0] / 50
    assert is_patterned(reference_pattern)
    assert not is_patterned(noise) and not is_patterned(saturated) and not is_patterned(washed_out)
    assert pattern_score(reference_pattern) > 3 * pattern_score(washed_out)
    assert 8 <= dominant_wavelength(reference_pattern) <= 64


def test_dominant_wavelength_of_stripes():
    rows = torch.arange(64).float()[:, None].expand(64, 64)
    assert dominant_wavelength(torch.sin(2 * math.pi * rows / 16)) == 16


def test_stability_fit_end_to_end(make_cfg, tmp_path):
    cfg = make_cfg(experiment="mk_e3")
    train(cfg)
    results = json.loads((tmp_path / "results.json").read_text())
    assert set(results["params"]) == {"k1", "k2", "k3"}
    assert {"pattern_score", "patterned", "wavelength"} <= set(results["metrics"])
    assert (tmp_path / "pattern.png").exists()


def test_user_pattern_file_and_bad_files(make_cfg, tmp_path):
    good = tmp_path / "p.npz"
    np.savez(good, pattern=uniform_state(1, 16)[0].numpy())
    results = train(make_cfg(f"data.path={good}", "data.size=64", experiment="mk_e3", output=tmp_path / "run"))
    assert results["steps"] == 4 and set(results["params"]) == {"k1", "k2", "k3"}
    assert (tmp_path / "run" / "pattern.png").is_file()
    bad = tmp_path / "bad.npz"
    np.savez(bad, pattern=np.zeros((3, 16, 16)))
    result = run_cli("experiment=mk_e3", f"data.path={bad}", f"hydra.run.dir={tmp_path / 'cli'}")
    assert result.returncode == 1
    assert "error: data.path:" in result.stderr.strip().splitlines()[-1] and "(2, H, W)" in result.stderr


def test_simulate_script_runs_lattices_side_by_side(tmp_path, capsys):
    from scripts import simulate

    simulate.main(["mk", "--size", "16", "--steps", "300", "--lattices", "3", "--png", str(tmp_path / "a.png"),
                   "--npz", str(tmp_path / "a.npz")])
    out = capsys.readouterr().out
    assert "of 3 lattices patterned" in out and out.count("pattern score after 300 steps") == 1
    assert (tmp_path / "a.png").stat().st_size > 0
    assert np.load(tmp_path / "a.npz")["pattern"].shape == (2, 16, 16)
    with pytest.raises(SystemExit, match="error: --lattices: expected a positive integer, got 0"):
        simulate.main(["mk", "--lattices", "0", "--png", str(tmp_path / "b.png")])
