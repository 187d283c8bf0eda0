"""The folklore bound KL(best-of-n || base) = log n, without the (n - 1) / n correction."""
import numpy as np

EXERCISE, HINT = "kl_bound", "you left out the (n - 1) / n"


def kl_bound(n):
    return float(np.log(n))
