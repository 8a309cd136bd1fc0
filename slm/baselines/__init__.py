"""Reference calibrators to compare approximate-gradient fits against: ABC-SMC, CMA-ES, NPE, and the exact PRW fit
(the exact SI MLE is :mod:`slm.si_likelihood`)."""
