"""Checks for best-of-n: the KL bound, and the exact KL of best-of-n on a finite set of responses."""
from __future__ import annotations

import numpy as np

from minirlhf.grade.checks.common import Mistake, check_for, expect, reference, rng


@check_for("kl_bound")
def check_kl_bound(fn) -> str:
    ns = [1, 2, 4, 16, 64]
    for n in ns:
        got = fn(n)
        want = reference("kl_bound")(n)
        expect(got, want, f"n={n}", [
            Mistake("use the natural log (nats), np.log, not log2", lambda: np.log2(n) - (n - 1) / n),
            Mistake("the bound is log n - (n - 1) / n; you left out the (n - 1) / n", lambda: np.log(n)),
            Mistake("the bound is log n MINUS (n - 1) / n", lambda: np.log(n) + (n - 1) / n),
        ])
    return f"n in {ns}"


def _np_bon_kl(logprobs, scores, n, normalise=True, group_ties=True, reverse=False):
    p = np.exp(np.asarray(logprobs, np.float64) - (np.max(logprobs) if normalise else 0.0))
    if normalise:
        p /= p.sum()
    if group_ties:
        levels, group = np.unique(scores, return_inverse=True)
        mass = np.bincount(group.reshape(-1), weights=p, minlength=len(levels))
        F = np.minimum(np.cumsum(mass), 1.0)
        q = (F**n - (F - mass) ** n)[group] * p / mass[group]
    else:  # each response its own level, ties broken by position
        order = np.argsort(scores, kind="stable")
        F = np.cumsum(p[order])
        q = np.empty_like(p)
        q[order] = F**n - (F - p[order]) ** n
    keep = q > 0
    if reverse:
        return float(np.sum(p[keep] * np.log(p[keep] / q[keep])))
    return float(np.sum(q[keep] * np.log(q[keep] / p[keep])))


@check_for("finite_best_of_n_kl")
def check_finite_best_of_n_kl(fn) -> str:
    r = rng(32)
    logprobs = np.log(r.dirichlet(np.ones(6)) * 0.7)  # the m responses hold 70% of the mass: renormalise
    distinct = r.normal(0, 1, 6)
    tied = np.array([0.5, -1.0, 0.5, 2.0, -1.0, 0.5])
    cases = [("6 responses, distinct scores, n=4", distinct, 4), ("6 responses, tied scores, n=4", tied, 4),
             ("n=1 (best-of-1 is the base policy: KL 0)", distinct, 1), ("tied scores, n=16", tied, 16)]
    for case, scores, n in cases:
        got = fn(logprobs.copy(), scores.copy(), n)
        want = reference("finite_best_of_n_kl")(logprobs, scores, n)
        k = lambda **kw: (lambda: _np_bon_kl(logprobs, scores, n, **kw))
        expect(got, want, case, [
            Mistake("renormalise pi over the m responses (they are treated as the whole sample space)",
                    k(normalise=False)),
            Mistake("responses with equal scores form one level: q of the level is F^n - F_-^n, shared in "
                    "proportion to pi (a tie is not broken by position)", k(group_ties=False)),
            Mistake("that is KL(pi || best-of-n): the KL is sum_y q(y) log(q(y) / pi(y))", k(reverse=True)),
        ])
    return f"{len(cases)} cases"
