"""Best-of-n on the first n draws only: an unbiased but noisy estimate that wastes the other m - n draws."""
import numpy as np

EXERCISE, HINT = "best_of_n_mean", "first n draws only"


def best_of_n_mean(scores, values, n):
    if not 1 <= n <= len(scores):
        raise ValueError(f"need 1 <= n <= {len(scores)}")
    return float(np.asarray(values, float)[np.argmax(np.asarray(scores)[:n])])
