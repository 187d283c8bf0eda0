"""Checks for reward hacking's measuring tool: best-of-n's expected gold for every n from one set of m draws."""
from __future__ import annotations

import itertools
import math

import numpy as np
from scipy.special import comb

from minirlhf.grade.checks.common import CheckFailed, Mistake, check_for, expect, expect_raises, reference, rng


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
            Mistake("the binomials overflow float64 for large m (inf / inf is nan): take each weight "
                    "C(i - 1, n - 1) / C(m, n) in logs (scipy.special.gammaln), or divide Python's exact integers "
                    "(math.comb) before multiplying by a value", lambda: overflowed),
        ])
    for n, what in [(8, "n=8 > m=7: best-of-8 needs at least 8 draws"), (0, "n=0 draws")]:
        expect_raises(lambda: fn(scores.copy(), values.copy(), n), ValueError, what, "best_of_n_mean")
    return f"{len(cases)} cases up to m=1200, and n > m, n = 0 refused"


# ---------------------------------------------------------------- Gao et al.'s functional forms


def _np_fit_rl(d, gain, sign=-1.0, log=np.log):
    """Least squares of gain on the features (d, sign * d log d), with d log d = 0 at d = 0."""
    d = np.asarray(d, float)
    xlogx = np.where(d > 0, d * log(np.where(d > 0, d, 1.0)), 0.0)
    (alpha, beta), *_ = np.linalg.lstsq(np.stack([d, sign * xlogx], axis=1), np.asarray(gain, float), rcond=None)
    return float(alpha), float(beta)


NAN_AT_ZERO = ("d log d is nan at d = 0 in floating point (0 * -inf): take it as 0, its limit, e.g. "
               "np.where(d > 0, d * np.log(np.where(d > 0, d, 1.0)), 0.0)")


@check_for("fit_rl")
def check_fit_rl(fn) -> str:
    r = rng(51)
    d = np.sqrt(np.array([0.0, 0.05, 0.2, 0.6, 1.5, 3.0, 6.0, 10.0, 16.0]))  # a curve starts at SFT, d = 0
    cases = []
    for alpha, beta in [(0.4, 0.25), (0.9, 0.3), (0.2, 0.05)]:
        gain = alpha * d - beta * np.where(d > 0, d * np.log(np.where(d > 0, d, 1.0)), 0.0)
        cases.append((d, gain + r.normal(0, 0.01, d.size), f"9 checkpoints from d=0, alpha={alpha}, beta={beta}"))
    cases.append((d[1:], cases[0][1][1:], "8 checkpoints, none at d=0"))
    for dd, gain, case in cases:
        try:
            got = fn(dd.copy(), gain.copy())
        except np.linalg.LinAlgError as e:  # lstsq on a nan feature fails to converge
            raise CheckFailed(f"{NAN_AT_ZERO}\n  ({case}: np.linalg.lstsq raised LinAlgError: {e})") from None
        want = reference("fit_rl")(dd, gain)
        expect(got, want, case, [
            Mistake("R = alpha d - beta d log d: beta's feature is -d log d (with +d log d, beta comes out with the "
                    "wrong sign)", lambda: _np_fit_rl(dd, gain, sign=1.0)),
            Mistake("use the natural log (np.log) in d log d, as Gao et al.'s form does", lambda: _np_fit_rl(
                dd, gain, log=np.log10)),
            Mistake(NAN_AT_ZERO, lambda: (float("nan"),) * 2),
        ], name="(alpha, beta)")
    return f"{len(cases)} noisy curves, with and without the point d = 0"


@check_for("form_peak")
def check_form_peak(fn) -> str:
    cases = [("bon", 0.5, 0.2), ("bon", 1.2, 0.05), ("rl", 0.4, 0.25), ("rl", 0.9, 0.3), ("rl", 0.1, 0.4),
             ("bon", 0.5, 0.0), ("rl", 0.5, -0.1)]
    for form, alpha, beta in cases:
        got = fn(form, alpha, beta)
        want = reference("form_peak")(form, alpha, beta)
        never_falls = beta <= 0
        expect(got, want, f"form={form!r}, alpha={alpha}, beta={beta}", [
            Mistake("with beta <= 0 the form never turns down, so it has no peak: return float('inf')",
                    lambda: (alpha / (2 * beta) if form == "bon" else math.exp(alpha / beta - 1))
                    if beta else float("nan")),
            Mistake("R_bon = alpha d - beta d^2 peaks where its derivative alpha - 2 beta d is 0: d* = alpha / (2 beta)",
                    lambda: alpha / beta if form == "bon" and not never_falls else want),
            Mistake("R_RL = alpha d - beta d log d has derivative alpha - beta (log d + 1) (the product rule's + 1): "
                    "d* = exp(alpha / beta - 1)",
                    lambda: math.exp(alpha / beta) if form == "rl" and not never_falls else want),
        ])
    return f"{len(cases)} (form, alpha, beta), beta <= 0 included"
