"""Best-of-n's estimator weighting the i-th smallest draw by C(i, n - 1): the weights no longer sum to 1."""
import math

import numpy as np

EXERCISE, HINT = "best_of_n_mean", "not C(i, n - 1)"


def best_of_n_mean(scores, values, n):
    m = len(scores)
    if not 1 <= n <= m:
        raise ValueError(f"need 1 <= n <= {m}")
    v = np.asarray(values, float)[np.argsort(scores)]
    return float(sum(math.comb(i, n - 1) / math.comb(m, n) * v[i - 1] for i in range(n, m + 1)))
