"""Chen et al.'s product with its range one too long: i from n - c, so it computes C(n - c - 1, k) / C(n, k)."""
import numpy as np

EXERCISE, HINT = "pass_at_k", "off by one: C(n - c, k) counts the k-subsets of the n - c WRONG samples (not n - c - 1)"


def pass_at_k(n, c, k):
    if not 0 <= c <= n or not 1 <= k <= n:
        raise ValueError(f"bad n={n}, c={c}, k={k}")
    if n - c < k:
        return 1.0
    return float(1.0 - np.prod(1.0 - k / np.arange(n - c, n + 1)))
