"""Checks for Constitutional AI: turning the feedback model's verdicts into a preference between two replies."""
from __future__ import annotations

import jax.numpy as jnp
import numpy as np

from minirlhf.grade.checks.common import Mistake, check_for, expect, expect_traceable, f32, reference, rng


def _np_ai_preference(good_a, bad_a, good_b, bad_b, normalise=True, sign=1.0, reduce="mean", prob_mean=False):
    score_a = good_a - (bad_a if normalise else 0.0)  # [K, B]
    score_b = good_b - (bad_b if normalise else 0.0)
    sigmoid = lambda x: 1 / (1 + np.exp(-x))
    if prob_mean:
        return sigmoid(sign * (score_a - score_b)).mean(0)
    gap = (score_a - score_b).sum(0) if reduce == "sum" else (score_a - score_b).mean(0)
    return sigmoid(sign * gap)


def _verdicts(r, k, b):
    """Log-probs of 'good' and 'bad' that leave some mass for the other words, [K, B] each."""
    p = r.dirichlet(np.ones(3), size=(k, b))  # good, bad, everything else
    return np.log(p[..., 0]), np.log(p[..., 1])


@check_for("ai_preference")
def check_ai_preference(fn) -> str:
    r = rng(80)
    cases = [("3 principles, 6 pairs", 3, 6), ("1 principle, 4 pairs", 1, 4), ("2 principles, 1 pair", 2, 1)]
    for case, k, b in cases:
        good_a, bad_a = _verdicts(r, k, b)
        good_b, bad_b = _verdicts(r, k, b)
        args = tuple(jnp.asarray(f32(x)) for x in (good_a, bad_a, good_b, bad_b))
        got = fn(*args)
        want = reference("ai_preference")(*args)
        np_args = tuple(np.asarray(x, np.float64) for x in args)
        wrong = lambda **kw: (lambda: _np_ai_preference(*np_args, **kw))
        expect(got, want, case, [
            Mistake("compare log p(good) - log p(bad) for each reply, not log p(good) alone: the model puts mass on "
                    "other words too, and only the two verdicts' odds count", wrong(normalise=False)),
            Mistake("the sign is flipped: a reply judged good more confidently than the other must be PREFERRED "
                    "(P(a > b) > 1/2)", wrong(sign=-1.0)),
            Mistake("average the log-odds gaps over principles (mean over axis 0), do not sum them",
                    wrong(reduce="sum")),
            Mistake("average the log-odds gaps first, THEN apply the sigmoid (not a mean of per-principle "
                    "probabilities)", wrong(prob_mean=True)),
        ])
    expect_traceable(fn, args, caller="jax.jit")
    return f"{len(cases)} cases"
