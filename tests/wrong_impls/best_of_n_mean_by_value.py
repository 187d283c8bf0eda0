"""Best-of-n's estimator with the draws sorted by their values (gold) instead of by the score best-of-n picks by."""
import numpy as np
from scipy.special import gammaln

EXERCISE, HINT = "best_of_n_mean", "sort the draws by their SCORE"


def best_of_n_mean(scores, values, n):
    m = len(scores)
    if not 1 <= n <= m:
        raise ValueError(f"need 1 <= n <= {m}")
    v = np.sort(np.asarray(values, float))  # sorted by value: picks the best by gold, not by the reward model
    i = np.arange(n, m + 1)
    log_w = gammaln(i) - gammaln(n) - gammaln(i - n + 1) - (gammaln(m + 1) - gammaln(n + 1) - gammaln(m - n + 1))
    return float(np.sum(np.exp(log_w) * v[n - 1:]))
