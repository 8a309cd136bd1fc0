"""Paper reproductions with the experiment configs as shipped. Slow: ``python -m pytest -m slow``."""

import pytest

from slm.train import train

pytestmark = pytest.mark.slow


@pytest.mark.parametrize("beta", [0.05, 0.2, 0.4, 0.8])
def test_si_transition_recovers_paper_betas(make_cfg, beta):
    results = train(make_cfg(f"model.beta_true={beta}", shrink=False))
    fitted = results["params"]["beta"]
    assert abs(fitted - results["metrics"]["beta_mle"]) < 0.01
    assert abs(fitted - beta) < 0.02


def test_si_noisy_matches_the_mle(make_cfg):
    results = train(make_cfg(experiment="si_noisy", shrink=False))
    assert abs(results["params"]["beta"] - results["metrics"]["beta_mle"]) < 0.01
