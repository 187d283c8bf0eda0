"""Right numbers, but k > n (more draws than samples) returns 1.0 instead of being refused."""
import math

EXERCISE, HINT = "pass_at_k", "k=5 > n=4: the estimator needs at least k samples"


def pass_at_k(n, c, k):
    return 1.0 - math.comb(n - c, k) / math.comb(n, k) if k <= n else 1.0
