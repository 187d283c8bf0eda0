"""Checks for Constitutional AI: reading the feedback model's verdict on a reply, and turning the verdicts into a
preference between two replies."""
from __future__ import annotations

import jax.numpy as jnp
import numpy as np

from minirlhf import transformer
from minirlhf.cai import BAD_ID, GOOD_ID
from minirlhf.grade.checks.common import (Mistake, check_for, expect, expect_traceable, f32, fast_forward,
                                          np_log_softmax, reference, rng, tiny_params)
from minirlhf.tokenizer import VOCAB_SIZE


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


# ---------------------------------------------------------------- reading a verdict from the model

JUDGE_MODEL = transformer.ModelConfig(vocab_size=VOCAB_SIZE, max_len=9, d_model=8, n_layers=1, n_heads=2, d_mlp=16)


def _np_verdicts(logits, slot=-1, normalise="log_softmax", swap=False):
    """(log p(good), log p(bad)) read from logits [B, T, V] at `slot`, with a mistake's normalisation or order."""
    at = np.asarray(logits, np.float64)[:, slot]  # [B, V]
    read = {"log_softmax": np_log_softmax(at), "softmax": np.exp(np_log_softmax(at)), "none": at,
            "batch_axis": np_log_softmax(at, axis=0)}[normalise]
    good, bad = read[:, GOOD_ID], read[:, BAD_ID]
    return (bad, good) if swap else (good, bad)


@check_for("verdict_logprobs")
def check_verdict_logprobs(fn) -> str:
    params, B, T = tiny_params(1, JUDGE_MODEL), 5, JUDGE_MODEL.max_len
    r = rng(81)
    tokens = jnp.asarray(r.integers(3, VOCAB_SIZE, size=(B, T)).astype(np.int32))
    starts = np.array([0, 2, 4, 1, 6])  # left padding of different widths; every prompt ends in the last column
    valid = jnp.asarray(np.arange(T)[None, :] >= starts[:, None])
    with fast_forward() as forward:
        got = fn(params, tokens, valid, JUDGE_MODEL)
        want = reference("verdict_logprobs")(params, tokens, valid, JUDGE_MODEL)
        logits = np.asarray(forward(params, tokens, valid, JUDGE_MODEL).logits)  # [B, T, V]
    wrong = lambda **kw: (lambda: _np_verdicts(logits, **kw))
    first_valid = lambda: tuple(x[np.arange(B), starts] for x in (
        np_log_softmax(logits)[..., GOOD_ID], np_log_softmax(logits)[..., BAD_ID]))
    expect(got, want, f"{B} left-padded judge prompts of {T} slots", [
        *[Mistake("the prompts are LEFT-padded, so every row's prompt ends in the last column: read the next-token "
                  "distribution at logits[:, -1]", read) for read in (first_valid, wrong(slot=0))],
        Mistake("read the distribution at the last slot, logits[:, -1]: the word after the prompt is predicted at "
                "the prompt's own last position (no shift, since nothing follows it yet)", wrong(slot=-2)),
        Mistake("those are probabilities: return LOG-probabilities (jax.nn.log_softmax over the vocabulary)",
                wrong(normalise="softmax")),
        Mistake("raw logits are log-probabilities only up to a constant per row: normalise them with "
                "jax.nn.log_softmax over the vocabulary (the last axis)", wrong(normalise="none")),
        Mistake("log_softmax over the vocabulary (axis=-1), not over the batch", wrong(normalise="batch_axis")),
        Mistake("good and bad are swapped: return (log p(good), log p(bad)), GOOD_ID first", wrong(swap=True)),
    ], name="(logp_good, logp_bad)")
    expect_traceable(lambda t, v: fn(params, t, v, JUDGE_MODEL), (tokens, valid), caller="the judge (jitted)")
    return f"{B} prompts, left padding of 0 to 6 slots"


# ---------------------------------------------------------------- SL-CAI's revision step


def _np_best_critiqued(tokens, valid, scores, k, layout="prompt_major", pick="first_max"):
    """best_critiqued with a mistake: the rows read sample-major, the lowest critique kept, ties to the last."""
    n = len(scores) // k
    split = (lambda x: x.reshape(n, k, *x.shape[1:])) if layout == "prompt_major" else (
        lambda x: np.swapaxes(x.reshape(k, n, *x.shape[1:]), 0, 1))
    tokens, valid, scores = split(tokens), split(valid), split(np.asarray(scores))
    best = {"first_max": lambda s: np.argmax(s, axis=1), "min": lambda s: np.argmin(s, axis=1),
            "last_max": lambda s: k - 1 - np.argmax(s[:, ::-1], axis=1)}[pick](scores)
    rows = np.arange(n)
    return {"tokens": tokens[rows, best], "valid": valid[rows, best], "first_tokens": tokens[:, 0],
            "first_valid": valid[:, 0], "critique_first": scores[:, 0], "critique_revised": scores[rows, best],
            "changed": best != 0}


@check_for("best_critiqued")
def check_best_critiqued(fn) -> str:
    r = rng(82)
    n, k, T = 4, 3, 5
    tokens = r.integers(3, VOCAB_SIZE, size=(n * k, T)).astype(np.int32)
    valid = r.random((n * k, T)) > 0.2
    scores = np.array([0.1, 0.7, 0.3,  # prompt 0: sample 1 is the best
                       0.9, 0.2, -0.5,  # prompt 1: the first sample is already the best
                       -0.4, 0.6, 0.6,  # prompt 2: a tie, the first of the two wins
                       -2.0, -1.0, -3.0])  # prompt 3
    case = f"{n} prompts x {k} samples (rows i*k .. i*k + {k - 1} are prompt i's), one tie"
    got = fn(tokens.copy(), valid.copy(), scores.copy(), k)
    want = reference("best_critiqued")(tokens, valid, scores, k)
    wrong = lambda **kw: (lambda: _np_best_critiqued(tokens, valid, scores, k, **kw))
    expect(got, want, case, [
        Mistake("prompt i's k samples are the consecutive rows i*k .. i*k + k - 1 (the prompts were repeated k "
                "times in a row): reshape to [N, k, ...], not [k, N, ...]", wrong(layout="sample_major")),
        Mistake("keep the sample the critique scores HIGHEST (log p(good) - log p(bad): higher is better)",
                wrong(pick="min")),
        Mistake("between equally critiqued samples keep the first (np.argmax does), so an unchanged first "
                "sample stays unless another is strictly better", wrong(pick="last_max")),
    ])
    return case
