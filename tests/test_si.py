import math

import numpy as np
import pytest
import torch

from slm.errors import InputError
from slm.lattice import moore_neighbour_sum
from slm.models.si import SI, infection_probability, simulate_si, transition_counts
from slm.si_likelihood import si_beta_least_squares, si_beta_mle, si_log_likelihood


def test_moore_neighbour_sum_matches_rolls_and_wraps():
    x = (torch.rand(3, 7, 5, generator=torch.Generator().manual_seed(0)) < 0.4).float()
    expected = sum(torch.roll(x, (di, dj), (-2, -1)) for di in (-1, 0, 1) for dj in (-1, 0, 1) if (di, dj) != (0, 0))
    assert torch.equal(moore_neighbour_sum(x), expected)
    corner = torch.zeros(4, 4)
    corner[0, 0] = 1
    n = moore_neighbour_sum(corner)
    assert n[3, 3] == 1 and n[1, 1] == 1 and n[0, 0] == 0 and n.sum() == 8


def test_infection_probability_formula():
    x = torch.zeros(5, 5)
    x[2, 2] = x[2, 3] = 1
    p = infection_probability(x, 0.3)
    assert p[2, 2] == 1 and p[2, 3] == 1
    assert p[0, 0] == 0
    torch.testing.assert_close(p[1, 2], torch.tensor(1 - 0.7**2))
    torch.testing.assert_close(p[1, 1], torch.tensor(1 - 0.7))


def test_step_keeps_aware_and_rate_matches_per_neighbour_count():
    model = SI(beta=0.3)
    x = (torch.rand(64, 32, 32, generator=torch.Generator().manual_seed(1)) < 0.2).float()
    y = model(x, torch.Generator().manual_seed(2))
    assert ((x == 1) <= (y == 1)).all()
    n = moore_neighbour_sum(x)
    assert (y[(x == 0) & (n == 0)] == 0).all()
    for k in (1, 2, 3):
        sites = (x == 0) & (n == k)
        rate, expected = y[sites].mean().item(), 1 - 0.7**k
        assert abs(rate - expected) < 5 * math.sqrt(expected * (1 - expected) / sites.sum().item())


def test_forward_is_differentiable_in_beta():
    model = SI(beta=0.3)
    x = torch.zeros(2, 8, 8)
    x[:, 4, 4] = 1
    model(x, torch.Generator().manual_seed(0)).sum().backward()
    # identity STE: d sum(z) / d beta = sum(dp/dbeta) = 8 neighbours * 1 per lattice
    beta_grad = model.parametrizations.beta.original.grad / (0.3 * 0.7)
    torch.testing.assert_close(beta_grad, torch.tensor(16.0))


def test_log_likelihood_matches_per_site_product():
    model = SI(beta=0.35)
    x = (torch.rand(2, 6, 6, generator=torch.Generator().manual_seed(3)) < 0.3).float()
    y = model(x, torch.Generator().manual_seed(4)).detach()
    n = moore_neighbour_sum(x)
    expected = torch.zeros(2)
    for b in range(2):
        for i in range(6):
            for j in range(6):
                if x[b, i, j] == 0:
                    p = 1 - 0.65 ** n[b, i, j].item()
                    expected[b] += math.log(p if y[b, i, j] else 1 - p)
    torch.testing.assert_close(model.log_likelihood(x, y).detach(), expected)


def test_log_likelihood_of_impossible_transitions_is_minus_inf_with_finite_gradient():
    model = SI(beta=0.35)
    x = torch.zeros(1, 6, 6)
    x[0, 2, 2] = 1
    forget = torch.zeros_like(x)
    spontaneous = x.clone()
    spontaneous[0, 5, 5] = 1
    assert model.log_likelihood(x, forget).item() == -math.inf
    assert model.log_likelihood(x, spontaneous).item() == -math.inf
    model.log_likelihood(x, x).sum().backward()
    assert model.parametrizations.beta.original.grad.isfinite().all()


def test_mle_maximises_the_exact_likelihood_and_recovers_truth():
    frames = simulate_si(0.3, 40, 20, size=(32, 32), generator=torch.Generator().manual_seed(5)).float()
    x, y = frames[:, :-1].flatten(0, 1), frames[:, 1:].flatten(0, 1)
    counts = transition_counts(x, y)
    beta = si_beta_mle(counts)
    assert abs(beta - 0.3) < 0.01
    model = SI(beta=beta)
    total = model.log_likelihood(x, y).sum()
    total.backward()
    assert abs(model.parametrizations.beta.original.grad.item()) < 1e-2 * abs(total.item()) ** 0.5
    assert si_log_likelihood(beta, counts) == pytest.approx(total.item(), rel=1e-5)
    for other in (beta - 0.01, beta + 0.01):
        assert si_log_likelihood(other, counts) < si_log_likelihood(beta, counts)
    assert abs(si_beta_least_squares(counts) - 0.3) < 0.01


def test_mle_needs_informative_sites():
    with pytest.raises(InputError, match="beta cannot be estimated"):
        si_beta_mle(np.zeros((9, 2)))


def test_simulate_shapes_start_and_noise():
    frames = simulate_si(0.4, 3, 6, size=(16, 20), generator=torch.Generator().manual_seed(0))
    assert frames.shape == (3, 6, 16, 20) and frames.dtype == torch.uint8
    assert frames[:, 0].sum() == 3 and (frames[:, 0, 8, 10] == 1).all()
    assert (frames[:, 1:] >= frames[:, :-1]).all()
    noisy = simulate_si(0.5, 50, 10, beta_sd=0.1, generator=torch.Generator().manual_seed(0))
    plain = simulate_si(0.5, 50, 10, generator=torch.Generator().manual_seed(0))
    assert not torch.equal(noisy, plain)


@pytest.mark.parametrize("beta", [0.0, 1.0, -0.2, 1.5, float("nan")])
def test_beta_outside_unit_interval_is_rejected(beta):
    with pytest.raises(InputError, match=r"model.beta: expected a probability strictly inside \(0, 1\)"):
        SI(beta=beta)
