import pytest
import torch

from slm.errors import InputError
from slm.estimators import GumbelSoftmax, ScoreFunction, StraightThrough, make_estimator

P = torch.tensor([0.0, 0.03, 0.25, 0.5, 0.9, 1.0])
PROBS = torch.tensor([0.1, 0.6, 0.0, 0.3])
ESTIMATORS = [StraightThrough(), GumbelSoftmax(0.1), GumbelSoftmax(0.5), GumbelSoftmax(1.0)]


def gen(seed: int = 0) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


@pytest.mark.parametrize("est", ESTIMATORS, ids=repr)
def test_bernoulli_forward_is_hard_and_mean_matches_p(est):
    p = P.repeat(200_000, 1)
    z = est.bernoulli(p, gen())
    assert set(z.unique().tolist()) <= {0.0, 1.0}
    assert (z[:, 0] == 0).all() and (z[:, -1] == 1).all(), "certain events must stay certain"
    se = (P * (1 - P) / p.shape[0]).sqrt()
    assert ((z.mean(0) - P).abs() <= 5 * se + 1e-12).all()


@pytest.mark.parametrize("est", ESTIMATORS, ids=repr)
def test_categorical_forward_is_one_hot_and_frequencies_match(est):
    probs = PROBS.repeat(100_000, 1)
    z = est.categorical(probs, gen(1))
    assert set(z.unique().tolist()) <= {0.0, 1.0}
    assert (z.sum(-1) == 1).all()
    se = (PROBS * (1 - PROBS) / probs.shape[0]).sqrt()
    assert ((z.mean(0) - PROBS).abs() <= 5 * se + 1e-12).all()
    assert (z[:, 2] == 0).all(), "a zero-probability category is never drawn"


@pytest.mark.parametrize("est", [*ESTIMATORS, ScoreFunction()], ids=repr)
def test_categorical_index_frequencies_match_and_carry_no_gradient(est):
    probs = PROBS.repeat(100_000, 1).requires_grad_(True)
    index = est.categorical_index(probs, gen(5))
    assert index.dtype == torch.long and not index.requires_grad
    frequencies = torch.bincount(index, minlength=4).float() / len(index)
    se = (PROBS * (1 - PROBS) / len(index)).sqrt()
    assert ((frequencies - PROBS).abs() <= 5 * se + 1e-12).all()


def test_ste_bernoulli_backward_is_identity():
    p = torch.tensor([0.2, 0.5, 0.7], requires_grad=True)
    w = torch.tensor([1.0, -2.0, 3.0])
    (w * StraightThrough().bernoulli(p, gen())).sum().backward()
    assert torch.equal(p.grad, w)


def test_ste_categorical_backward_is_identity():
    probs = PROBS.clone().requires_grad_(True)
    w = torch.tensor([1.0, 2.0, 3.0, 4.0])
    (w * StraightThrough().categorical(probs, gen())).sum().backward()
    assert torch.equal(probs.grad, w)


@pytest.mark.parametrize("tau", [0.1, 0.5, 1.0])
def test_gumbel_sigmoid_backward_matches_definition(tau):
    p = torch.tensor([0.2, 0.5, 0.7, 0.95], dtype=torch.float64, requires_grad=True)
    GumbelSoftmax(tau).bernoulli(p, gen(3)).sum().backward()
    u = torch.rand(p.shape, generator=gen(3), dtype=torch.float64)
    s = torch.sigmoid((torch.logit(p.detach()) - torch.logit(u)) / tau)
    expected = s * (1 - s) / (tau * p.detach() * (1 - p.detach()))
    torch.testing.assert_close(p.grad, expected)


@pytest.mark.parametrize("tau", [0.1, 0.5, 1.0])
def test_gumbel_softmax_backward_matches_definition(tau):
    probs = torch.tensor([[0.1, 0.6, 0.3], [0.5, 0.25, 0.25]], dtype=torch.float64, requires_grad=True)
    w = torch.tensor([1.0, -1.0, 2.0], dtype=torch.float64)
    (w * GumbelSoftmax(tau).categorical(probs, gen(4))).sum().backward()
    g = -torch.log(torch.empty_like(probs).exponential_(generator=gen(4)))
    s = torch.softmax((probs.detach().log() + g) / tau, -1)
    # d/dprobs_j of sum_k w_k s_k = (s_j / (tau probs_j)) (w_j - sum_k w_k s_k)
    expected = s / (tau * probs.detach()) * (w - (w * s).sum(-1, keepdim=True))
    torch.testing.assert_close(probs.grad, expected)


def test_gumbel_handles_certain_events_without_nan():
    p = torch.tensor([0.0, 1.0, 0.5], requires_grad=True)
    GumbelSoftmax(0.5).bernoulli(p, gen()).sum().backward()
    assert p.grad.isfinite().all()


def test_same_generator_seed_gives_same_sample():
    p = torch.full((1000,), 0.3)
    assert torch.equal(StraightThrough().bernoulli(p, gen(7)), StraightThrough().bernoulli(p, gen(7)))
    assert not torch.equal(StraightThrough().bernoulli(p, gen(7)), StraightThrough().bernoulli(p, gen(8)))


def test_make_estimator_by_name_or_object():
    assert isinstance(make_estimator("ste"), StraightThrough)
    est = make_estimator("gumbel", 0.5)
    assert isinstance(est, GumbelSoftmax) and est.temperature == 0.5
    assert isinstance(make_estimator("score"), ScoreFunction)
    assert make_estimator(est) is est


def test_unknown_estimator_is_a_one_line_error():
    with pytest.raises(InputError, match=r"^estimator: unknown estimator 'reinmax'; expected one of ste, gumbel, "
                                         r"score$"):
        make_estimator("reinmax")


@pytest.mark.parametrize("tau", [0.0, -1.0, float("nan")])
def test_bad_temperature(tau):
    with pytest.raises(InputError, match="estimator.temperature: expected a positive temperature"):
        make_estimator("gumbel", tau)


def test_thresholds():
    x = torch.tensor([-0.5, 0.0, 0.2, 3.0], dtype=torch.float64, requires_grad=True)
    w = torch.tensor([1.0, 2.0, 3.0, 4.0], dtype=torch.float64)
    for est in (StraightThrough(), GumbelSoftmax(0.5), ScoreFunction()):
        z = est.threshold(x)
        assert z.tolist() == [0.0, 0.0, 1.0, 1.0]
        if est.pathwise:
            (grad,) = torch.autograd.grad((w * z).sum(), x)
            s = torch.sigmoid(x.detach() / 0.5)
            expected = w if est.name == "ste" else w * s * (1 - s) / 0.5
            torch.testing.assert_close(grad, expected)
        else:
            assert not z.requires_grad


def test_score_records_bernoulli_draws_and_is_unbiased_where_the_straight_through_is_not():
    """E[f(z)] for z ~ Bernoulli(p) and f(z) = (z - 0.8)^2 has derivative f(1) - f(0) = -0.6 in p; the
    STE's pathwise gradient 2 (z - 0.8) has mean 2p - 1.6 = -1.0 at p = 0.3."""
    n = 200_000
    p = torch.tensor(0.3, requires_grad=True)
    score = ScoreFunction()
    z = score.bernoulli(p.expand(n), gen(1))
    assert not z.requires_grad
    f = (z - 0.8) ** 2
    surrogate = score.surrogate(f)
    assert torch.equal(surrogate.detach(), f)
    (grad,) = torch.autograd.grad(surrogate.mean(), p)
    assert abs(grad.item() + 0.6) < 0.02
    assert torch.equal(score.surrogate(f), f), "the record is consumed"
    ste = StraightThrough()
    q = torch.tensor(0.3, requires_grad=True)
    (grad,) = torch.autograd.grad(ste.surrogate((ste.bernoulli(q.expand(n), gen(1)) - 0.8) ** 2).mean(), q)
    assert abs(grad.item() + 1.0) < 0.02


def test_score_records_categorical_draws_per_sample():
    """``E[w_z]`` for ``z ~ softmax(theta)`` has gradient ``p_k (w_k - E[w])`` in ``theta_k``; two draws per
    sample (shape ``(n, 2, K)``) record one log-probability per sample."""
    theta = torch.tensor([0.2, -0.3, 0.5], requires_grad=True)
    w = torch.tensor([1.0, -2.0, 0.5])
    score = ScoreFunction()
    probs = theta.softmax(-1)
    z = score.categorical(probs.expand(100_000, 2, 3), gen(2))
    assert (z.sum(-1) == 1).all()
    values = (z * w).sum(-1).sum(-1)
    (grad,) = torch.autograd.grad(score.surrogate(values).mean(), theta)
    p = probs.detach()
    expected = 2 * p * (w - (p * w).sum())
    assert (grad - expected).abs().max() < 0.03


def test_score_surrogate_checks_the_sample_count_and_takes_a_single_sample():
    score = ScoreFunction()
    p = torch.full((4,), 0.5, requires_grad=True)
    score.bernoulli(p, gen(0))
    with pytest.raises(InputError, match="3 outcomes for 4 recorded samples"):
        score.surrogate(torch.ones(3))
    q = torch.tensor([0.5], requires_grad=True)
    z = score.bernoulli(q, gen(0))
    (grad,) = torch.autograd.grad(score.surrogate(z + 1).mean(), q)
    assert grad.item() == pytest.approx((z.item() + 1) * (2.0 if z.item() else -2.0))


@pytest.mark.parametrize("est", [*ESTIMATORS, ScoreFunction()], ids=repr)
def test_masked_draws_are_zero_and_carry_nothing(est):
    p = torch.tensor(0.7, requires_grad=True)
    noise = torch.rand(1000, generator=gen(8))
    mask = torch.arange(1000) % 2 == 0
    z = est.bernoulli(p, noise=noise, mask=mask)
    assert z.shape == (1000,) and (z[~mask] == 0).all()
    assert torch.equal(z[mask], (noise[mask] < 0.7).float())
    values = est.surrogate(z * torch.arange(1000.0))
    (grad,) = torch.autograd.grad(values[~mask].sum() + values.detach().sum(), p, allow_unused=True)
    assert grad is None or grad == 0


def test_score_draws_from_one_shared_probability_add_up_in_place():
    """Many steps drawing from the same ``p`` keep one record; the gradient of ``E[number of ones]`` over
    ``n`` masked draws per sample is ``n_live`` (the count of unmasked draws)."""
    p = torch.tensor(0.3, requires_grad=True)
    score = ScoreFunction()
    total = torch.zeros(200_000)
    for step in range(4):
        mask = torch.rand(200_000, generator=gen(10 + step)) < 0.5
        total = total + score.bernoulli(p, noise=torch.rand(200_000, generator=gen(20 + step)), mask=mask)
    assert len(score._records) == 1
    (grad,) = torch.autograd.grad(score.surrogate(total).mean(), p)
    assert abs(grad.item() - 2.0) < 0.05
