"""Checks for the reward model: labelers' preference probability, reading the score, Bradley-Terry."""
from __future__ import annotations

import jax.numpy as jnp
import numpy as np

from minirlhf import transformer
from minirlhf.grade.checks.common import (MODEL_BATCH, TINY, Mistake, check_for, expect, expect_traceable, f32, fast_forward,
                                    reference, response_layout, rng, tiny_params)
from minirlhf.preferences import Labeler


@check_for("preference_prob")
def check_preference_prob(fn) -> str:
    labelers = [Labeler(), Labeler(temperature=0.5, flip_prob=0.2)]
    pairs = [(0.8, -0.3), (-0.5, 0.4), (0.1, 0.1)]
    n = 0
    for labeler in labelers:
        T, f = labeler.temperature, labeler.flip_prob
        for a, b in pairs:
            case = f"Labeler(temperature={T}, flip_prob={f}), scores ({a}, {b})"
            got = fn(labeler, a, b)
            want = reference("preference_prob")(labeler, a, b)
            p = lambda d: 1 / (1 + np.exp(-d))
            expect(got, want, case, [
                Mistake("divide the score difference by labeler.temperature before the sigmoid",
                        lambda: (1 - f) * p(a - b) + f * (1 - p(a - b))),
                Mistake("forgot the flip noise: the label is flipped with probability flip_prob, so "
                        "P = (1 - flip) p + flip (1 - p)", lambda: p((a - b) / T)),
                Mistake("the flip mixes the wrong way round: P = (1 - flip) p + flip (1 - p)",
                        lambda: f * p((a - b) / T) + (1 - f) * (1 - p((a - b) / T))),
                Mistake("the sign is flipped: a higher score_a must make 'a is better' MORE likely",
                        lambda: (1 - f) * p((b - a) / T) + f * (1 - p((b - a) / T))),
            ])
            n += 1
    return f"{n} cases"


def _valid_rows() -> np.ndarray:
    """Left-padded prompts (width 10), responses of 2, 4 (cut off, no EOS), 1 and 3 tokens, then padding."""
    return response_layout(10, [2, 4, 1, 3], prompt_width=10, response_width=4, vocab=TINY.vocab_size)


@check_for("last_index")
def check_last_index(fn) -> str:
    _, valid = _valid_rows()
    odd = np.array([[0, 0, 1, 1, 1, 1], [1, 1, 1, 0, 0, 0], [0, 1, 0, 0, 0, 0]], bool)
    cases = [("left-padded prompts, responses that end early", valid), ("rows of one to four valid tokens", odd)]
    for case, v in cases:
        got = fn(jnp.asarray(v))
        want = reference("last_index")(jnp.asarray(v))
        T = v.shape[1]
        expect(got, want, case, [
            Mistake("counting valid tokens (sum - 1) gives an index only without left padding; prompts are "
                    "left-padded, so find the position of the last True", lambda: v.sum(1) - 1),
            Mistake("that is the FIRST valid token; the score is read at the LAST one", lambda: v.argmax(1)),
            Mistake("'the position before the first padding' fails when padding also sits on the left (prompts "
                    "are left-padded): find the last True", lambda: v.argmin(1) - 1),
            Mistake("the last column is padding in rows that ended early: find each row's last True",
                    lambda: np.full(len(v), T - 1)),
        ])
    expect_traceable(fn, (jnp.asarray(valid),), caller="the reward model")
    return f"{len(cases)} cases"


@check_for("reward")
def check_reward(fn) -> str:
    tokens, valid = _valid_rows()
    r = rng(11)
    rm_params = {"lm": tiny_params(), "head": {"w": jnp.asarray(f32(r.normal(0, 1, TINY.d_model))),
                                              "b": jnp.float32(0.3)}}
    assert tokens.shape[0] == MODEL_BATCH
    with fast_forward() as forward:
        args = (rm_params, jnp.asarray(tokens), jnp.asarray(valid), TINY)
        got = fn(*args)
        want = reference("reward")(*args)
        hidden = forward(rm_params["lm"], jnp.asarray(tokens), jnp.asarray(valid), TINY).hidden
        scores = np.asarray(transformer.scalar_head(rm_params["head"], hidden))  # [B, T]
        rows = np.arange(len(tokens))
        expect(got, want, "4 sequences with left-padded prompts and responses of different lengths", [
            Mistake("read at the last column, which is padding in rows that ended early: read each row's last "
                    "real token", lambda: scores[:, -1]),
            Mistake("read at sum(valid) - 1, which is not an index when prompts are left-padded: read at the last "
                    "True of valid", lambda: scores[rows, valid.sum(1) - 1]),
            Mistake("averaged the per-token scores: the reward is the head read at the last real token only",
                    lambda: np.where(valid, scores, 0).sum(1) / valid.sum(1)),
            Mistake("read at the first token: the last real token is the one that has seen the whole response",
                    lambda: scores[rows, valid.argmax(1)]),
        ])
        expect_traceable(lambda p, t, v: fn(p, t, v, TINY), args[:3], caller="the reward model's training step")
    return "1 batch"


@check_for("bradley_terry")
def check_bradley_terry(fn) -> str:
    r = rng(12)
    chosen, rejected = f32(r.normal(0, 1.5, 6)), f32(r.normal(0, 1.5, 6))
    far_c, far_r = f32([120.0, -60.0, 3.0]), f32([-10.0, 70.0, 2.0])
    cases = [("6 pairs", chosen, rejected, 0.0), ("6 pairs, centering=0.01", chosen, rejected, 0.01),
             ("pairs with margins of +-130 (no overflow allowed)", far_c, far_r, 0.0)]
    sig = lambda x: 1 / (1 + np.exp(-np.asarray(x, np.float64)))
    for case, c, rj, cen in cases:
        got = fn(jnp.asarray(c), jnp.asarray(rj), cen)
        want = reference("bradley_terry")(jnp.asarray(c), jnp.asarray(rj), cen)
        center = cen * np.mean((c + rj) ** 2)
        with np.errstate(all="ignore"):
            naive = -np.mean(np.log(sig(np.float32(c - rj)).astype(np.float32))) + center
        expect(got, want, case, [
            Mistake("the sign is flipped: the loss is -log sigmoid(r_chosen - r_rejected), low when chosen wins",
                    lambda: -np.mean(np.log(sig(rj - c))) + center),
            Mistake("forgot the log: the loss is -log sigmoid(margin), not -sigmoid(margin)",
                    lambda: -np.mean(sig(c - rj)) + center),
            Mistake("summed over pairs: take the mean", lambda: -np.sum(np.log(sig(c - rj))) + center),
            Mistake("log(sigmoid(x)) overflows for large margins: use jax.nn.log_sigmoid", lambda: naive),
            Mistake("forgot the centering term c * mean((r_chosen + r_rejected)^2)",
                    lambda: -np.mean(np.log(sig(c - rj)))),
            Mistake("the centering term uses the SUM r_chosen + r_rejected (it pins the rewards' level), "
                    "not the difference", lambda: -np.mean(np.log(sig(c - rj))) + cen * np.mean((c - rj) ** 2)),
        ])
    expect_traceable(lambda c, rj: fn(c, rj, 0.01), (jnp.asarray(chosen), jnp.asarray(rejected)),
                     caller="the reward model's training step")
    return f"{len(cases)} cases"
