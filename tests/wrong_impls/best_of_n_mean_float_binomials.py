"""Best-of-n's estimator with float binomials: right for small m, nan once C(m, n) overflows float64."""
import numpy as np
from scipy.special import comb

EXERCISE, HINT = "best_of_n_mean", "overflow float64"
WARNS = RuntimeWarning  # inf / inf


def best_of_n_mean(scores, values, n):
    m = len(scores)
    if not 1 <= n <= m:
        raise ValueError(f"need 1 <= n <= {m}")
    v = np.asarray(values, float)[np.argsort(scores)]
    i = np.arange(n, m + 1)
    return float(np.sum(comb(i - 1, n - 1) / comb(m, n) * v[n - 1:]))
