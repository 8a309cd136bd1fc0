"""Reference calibrators to compare approximate-gradient fits against."""

from slm.baselines.mle import si_beta_least_squares, si_beta_mle, si_least_squares, si_log_likelihood

__all__ = ["si_beta_least_squares", "si_beta_mle", "si_least_squares", "si_log_likelihood"]
