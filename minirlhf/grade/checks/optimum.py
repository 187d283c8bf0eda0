"""Checks for the exact KL-regularised optimum: pi*_beta reweights SFT's responses by exp(r / beta)."""
from __future__ import annotations

import numpy as np

from minirlhf.grade.checks.common import Mistake, check_for, expect, expect_raises, reference, rng


def _np_log_weights(logprobs, rewards, beta, *, sft=True, sign=1.0, times_beta=False, normalise=True,
                    renormalise=True, naive=None):
    """log pi* the long way in float64, with one mistake per keyword. naive: "ratio" exponentiates and divides,
    "log_sum" takes log(sum(exp)) of the raw logits: both overflow once r / beta passes ~709."""
    lp = np.asarray(logprobs, np.float64)
    if renormalise:
        lp = lp - np.log(np.sum(np.exp(lp)))
    r = np.asarray(rewards, np.float64)
    logits = (lp if sft else 0.0) + sign * (r * beta if times_beta else r / beta)
    with np.errstate(over="ignore", invalid="ignore", divide="ignore"):  # the overflow is the point of `naive`
        if naive == "ratio":
            return np.log(np.exp(logits) / np.sum(np.exp(logits)))
        if naive == "log_sum":
            return logits - np.log(np.sum(np.exp(logits)))
    if not normalise:
        return logits
    return logits - (logits.max() + np.log(np.sum(np.exp(logits - logits.max()))))


@check_for("log_weights")
def check_log_weights(fn) -> str:
    r = rng(70)
    logprobs = np.log(r.dirichlet(np.ones(5)) * 0.6)  # 5 responses holding 60% of SFT's mass
    rewards = r.normal(0, 1, 5)
    tied = np.array([1.0, 0.3, 1.0, -0.5, 0.3])  # two responses share the top reward
    cases = [("5 responses, beta=0.5", logprobs, rewards, 0.5), ("beta=3", logprobs, rewards, 3.0),
             ("beta=0.001: r / beta is in the thousands", logprobs, rewards, 1e-3),
             ("two responses tied at the top reward, beta=0.002", logprobs, tied, 2e-3)]
    for case, lp, rew, beta in cases:
        got = fn(lp.copy(), rew.copy(), beta)
        want = reference("log_weights")(lp, rew, beta)
        k = lambda **kw: (lambda: _np_log_weights(lp, rew, beta, **kw))
        overflow = ("subtract the largest logit before exponentiating (log-sum-exp): exp(r / beta) overflows "
                    "float64 once r / beta passes ~709, at small beta")
        expect(got, want, case, [
            Mistake(overflow, k(naive="ratio")),
            Mistake(overflow, k(naive="log_sum")),
            Mistake("pi* reweights pi_SFT: log pi* = log pi_sft + r / beta - log Z, not r / beta alone",
                    k(sft=False)),
            Mistake("the sign of r / beta: a higher reward must get MORE weight, exp(+r / beta)", k(sign=-1.0)),
            Mistake("divide the reward by beta (r / beta), do not multiply", k(times_beta=True)),
            Mistake("normalise: subtract log Z = logsumexp(log pi_sft + r / beta), so the weights sum to 1",
                    k(normalise=False)),
            Mistake("normalise: subtract log Z = logsumexp(log pi_sft + r / beta), so the weights sum to 1",
                    k(normalise=False, renormalise=False)),
            Mistake("return the LOG-weights log pi*, not the probabilities", lambda: np.exp(want)),
        ])
    for beta in (0.0, -1.0):
        expect_raises(lambda: fn(logprobs.copy(), rewards.copy(), beta), ValueError,
                      f"beta={beta} (the optimum needs beta > 0)", "log_weights")
    return f"{len(cases)} cases, beta from 3 down to 0.001, and beta <= 0 refused"
