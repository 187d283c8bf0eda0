"""Best-of-n KL that uses the raw probabilities of the m responses without renormalising them."""
import numpy as np

EXERCISE, HINT = "finite_best_of_n_kl", "renormalise"


def finite_best_of_n_kl(logprobs, scores, n):
    p = np.exp(np.asarray(logprobs, np.float64))
    levels, group = np.unique(np.asarray(scores), return_inverse=True)
    mass = np.bincount(group.reshape(-1), weights=p, minlength=len(levels))
    F = np.cumsum(mass)
    q = (F**n - (F - mass) ** n)[group] * p / mass[group]
    keep = q > 0
    return float(np.sum(q[keep] * np.log(q[keep] / p[keep])))
