"""Checks for reward hacking's measuring tool: best-of-n's expected gold for every n from one set of m draws."""
from __future__ import annotations

import itertools
import math

import numpy as np
from scipy.special import comb

from minirlhf.grade.checks.common import Mistake, check_for, expect, expect_raises, reference, rng


def _np_best_of_n(scores, values, n, by="scores", descending=False, rank_shift=0):
    """sum_i C(i - 1 + rank_shift, n - 1) / C(m, n) * value_(i), with the draws ordered by `by`."""
    m = len(scores)
    key = np.asarray(scores if by == "scores" else values, float)
    v = np.asarray(values, float)[np.argsort(-key if descending else key, kind="stable")]
    i = np.arange(n, m + 1)
    w = np.array([math.comb(int(k) - 1 + rank_shift, n - 1) for k in i], float) / math.comb(m, n)
    return float(np.sum(w * v[n - 1:]))


def _every_subset(scores, values, n) -> float:
    """The definition: the value of the top-scored draw, averaged over all C(m, n) subsets (small m only)."""
    return float(np.mean([values[list(s)][np.argmax(scores[list(s)])] for s in itertools.combinations(range(len(scores)), n)]))


@check_for("best_of_n_mean")
def check_best_of_n_mean(fn) -> str:
    r = rng(50)
    scores, values = r.normal(size=7), r.normal(size=7)  # distinct scores: no ties to break
    big_scores, big_values = r.normal(size=1200), r.normal(size=1200)
    cases = [(scores, values, n, f"m=7 draws, n={n}") for n in (1, 2, 3, 5, 7)]
    cases.append((big_scores, big_values, 600, "m=1200 draws, n=600"))
    for s, v, n, case in cases:
        got = fn(s.copy(), v.copy(), n)
        want = reference("best_of_n_mean")(s, v, n)
        if len(s) <= 8:  # the plain-loop definition agrees with the reference (and reads as the target)
            assert np.isclose(want, _every_subset(s, v, n))
        with np.errstate(invalid="ignore", over="ignore"):
            i = np.arange(n, len(s) + 1)
            overflowed = float(np.sum(comb(i - 1, n - 1) / comb(len(s), n) * v[np.argsort(s)][n - 1:]))
        wrong = lambda **kw: (lambda: _np_best_of_n(s, v, n, **kw))
        expect(got, want, case, [
            Mistake("sort the draws by their SCORE (the reward model's, which best-of-n picks by), then weight "
                    "their values in that order; sorting by the values themselves picks by gold",
                    wrong(by="values")),
            Mistake("sort in ascending order of score: the best of an n-subset is its HIGHEST-scored draw, the "
                    "i-th smallest with i >= n", wrong(descending=True)),
            Mistake("the weight of the i-th smallest draw is C(i - 1, n - 1) / C(m, n): the other n - 1 of the "
                    "subset come from the i - 1 draws below it (not C(i, n - 1))", wrong(rank_shift=1)),
            Mistake("that is best-of-n on the first n draws only; average over EVERY n-subset of the m draws "
                    "(the weights C(i - 1, n - 1) / C(m, n)), which is unbiased and far less noisy",
                    lambda: float(v[np.argmax(s[:n])])),
            Mistake("the binomials overflow float64 for large m (inf / inf is nan): take their ratio in logs "
                    "(scipy.special.gammaln) or with Python's exact integers (math.comb)", lambda: overflowed),
        ])
    for n, what in [(8, "n=8 > m=7: best-of-8 needs at least 8 draws"), (0, "n=0 draws")]:
        expect_raises(lambda: fn(scores.copy(), values.copy(), n), ValueError, what, "best_of_n_mean")
    return f"{len(cases)} cases up to m=1200, and n > m, n = 0 refused"
