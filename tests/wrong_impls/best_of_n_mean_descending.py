"""Best-of-n's estimator with the draws sorted from the highest score down: it weights the worst draws."""
import math

import numpy as np

EXERCISE, HINT = "best_of_n_mean", "ascending order of score"


def best_of_n_mean(scores, values, n):
    m = len(scores)
    if not 1 <= n <= m:
        raise ValueError(f"need 1 <= n <= {m}")
    v = np.asarray(values, float)[np.argsort(scores)[::-1]]  # highest first
    return float(sum(math.comb(i - 1, n - 1) / math.comb(m, n) * v[i - 1] for i in range(n, m + 1)))
