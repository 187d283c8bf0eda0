"""1 - C(n - c, k) / C(n, k) with floating-point binomials: inf / inf (nan) once n is in the thousands."""
from scipy.special import comb

EXERCISE, HINT = "pass_at_k", "C(n, k) overflows a float for large n"
WARNS = RuntimeWarning  # numpy warns of inf / inf, as it would the learner: expected, so the test catches it


def pass_at_k(n, c, k):
    if not 0 <= c <= n or not 1 <= k <= n:
        raise ValueError(f"bad n={n}, c={c}, k={k}")
    return float(1.0 - comb(n - c, k) / comb(n, k))
