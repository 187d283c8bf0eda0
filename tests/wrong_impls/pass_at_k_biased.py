"""The plug-in estimate 1 - (1 - c/n)^k: k draws with replacement, biased low for small n."""
EXERCISE, HINT = "pass_at_k", "that is the biased estimate 1 - (1 - c/n)^k"


def pass_at_k(n, c, k):
    if not 0 <= c <= n or not 1 <= k <= n:
        raise ValueError(f"bad n={n}, c={c}, k={k}")
    return 1.0 - (1.0 - c / n) ** k
