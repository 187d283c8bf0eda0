"""Checks for DPO: a sequence's log-probability, and the DPO / cDPO / IPO losses of the margin h."""
from __future__ import annotations

import jax.numpy as jnp
import numpy as np

from minirlhf.grade.checks.common import (TINY, Mistake, check_for, expect, expect_raises, expect_traceable, f32, fast_forward,
                                    mask_of, np_token_logprobs, reference, response_layout, rng, tiny_params)
from minirlhf.data import PROMPT_WIDTH


@check_for("sequence_logprobs")
def check_sequence_logprobs(fn) -> str:
    R = TINY.max_len - PROMPT_WIDTH
    tokens, valid = response_layout(30, [2, R, 1, 3], prompt_width=PROMPT_WIDTH, response_width=R,
                                    vocab=TINY.vocab_size)
    params = tiny_params()
    with fast_forward() as forward:
        args = (params, jnp.asarray(tokens), jnp.asarray(valid), TINY)
        got = fn(*args)
        want = reference("sequence_logprobs")(*args)
        logits = np.asarray(forward(*args).logits)
        lp, unshifted = np_token_logprobs(logits, tokens), np_token_logprobs(logits, tokens, shift=False)
        response = mask_of(valid, PROMPT_WIDTH)
        after_prompt = np.broadcast_to(np.arange(tokens.shape[1]) >= PROMPT_WIDTH, valid.shape)
        expect(got, want, "4 pairs' worth of sequences with left-padded prompts", [
            Mistake("averaged: log pi(y) is the SUM of the response tokens' log-probs (a sequence's probability is "
                    "a product)", lambda: np.where(response, lp, 0).sum(1) / response.sum(1)),
            Mistake("included the prompt: sum over the response tokens only (data.response_mask)",
                    lambda: np.where(valid, lp, 0).sum(1)),
            Mistake("included the padding after EOS: sum over the VALID response tokens only (data.response_mask)",
                    lambda: np.where(after_prompt, lp, 0).sum(1)),
            Mistake("no shift: score each token with the logits of the position before it (ops.token_logprobs)",
                    lambda: np.where(response, unshifted, 0).sum(1)),
        ])
        expect_traceable(lambda p, t, v: fn(p, t, v, TINY), args[:3], caller="the DPO training step")
    return "1 batch"


def _np_pref(h, beta, loss_type, eps, use_beta=True, sign=1.0, ipo_target=None, swap=False, reduce=False,
             naive=False):
    h = np.asarray(h, np.float64)
    b = beta if use_beta else 1.0
    if naive:
        with np.errstate(all="ignore"):
            logsig = lambda x: np.log((1 / (1 + np.exp(-np.float32(x)))).astype(np.float32))
    else:
        logsig = lambda x: -np.logaddexp(0.0, -x)
    if loss_type == "dpo":
        out = -logsig(sign * b * h)
    elif loss_type == "cdpo":
        e = 1 - eps if swap else eps
        out = -(1 - e) * logsig(sign * b * h) - e * logsig(-sign * b * h)
    else:
        target = 1 / (2 * beta) if ipo_target is None else ipo_target
        out = (h - target) ** 2
    return out.mean() if reduce else out


@check_for("preference_loss")
def check_preference_loss(fn) -> str:
    h = f32(rng(31).normal(0, 3, 6))
    far = f32([150.0, -150.0, 2.0])
    cases = [("dpo, beta=0.1", h, 0.1, "dpo", 0.0), ("dpo, beta=1, margins of +-150 (no overflow)", far, 1.0, "dpo", 0.0),
             ("cdpo, beta=0.5, label_smoothing=0.2", h, 0.5, "cdpo", 0.2), ("ipo, beta=0.5", h, 0.5, "ipo", 0.0),
             ("ipo, beta=0.1", h, 0.1, "ipo", 0.0)]
    for case, hs, beta, kind, eps in cases:
        got = fn(jnp.asarray(hs), beta, kind, eps)
        want = reference("preference_loss")(jnp.asarray(hs), beta, kind, eps)
        p = lambda **kw: (lambda: _np_pref(hs, beta, kind, eps, **kw))
        expect(got, want, case, [
            Mistake("forgot beta: the DPO loss is -log sigmoid(beta * h)", p(use_beta=False)),
            Mistake("the sign is flipped: -log sigmoid(beta * h) is LOW when the chosen response wins (h > 0)",
                    p(sign=-1.0)),
            Mistake("IPO's target margin is 1 / (2 beta) (Azar et al. 2023, eq. 17)", p(ipo_target=1 / beta)),
            Mistake("conservative DPO: the eps-weighted term is the flipped label, "
                    "-(1 - eps) log sigmoid(beta h) - eps log sigmoid(-beta h)", p(swap=True)),
            Mistake("returned the mean: preference_loss gives one loss per pair, shape [batch]", p(reduce=True)),
            Mistake("log(sigmoid(x)) overflows for large margins: use jax.nn.log_sigmoid", p(naive=True)),
        ])
    expect_raises(lambda: fn(jnp.asarray(h), 0.1, "xpo", 0.0), ValueError, "loss_type 'xpo'", "an unknown loss_type")
    expect_traceable(lambda x: fn(x, 0.5, "cdpo", 0.2), (jnp.asarray(h),), caller="the DPO training step")
    return f"{len(cases)} cases and an unknown loss_type"
