"""Checks for the transformer's layers: layer norm, the attention mask, attention, the MLP."""
from __future__ import annotations

import math

import jax
import jax.numpy as jnp
import numpy as np

from minirlhf.grade.checks.common import Mistake, check_for, expect, expect_traceable, f32, reference, rng
from minirlhf.ops import NEG_INF
from minirlhf.transformer import LN_EPS


def _np_layer_norm(x, g, b, axis=-1, ddof=0, eps=LN_EPS, gain=True, power=0.5):
    x = np.asarray(x, np.float64)
    with np.errstate(all="ignore"):
        y = (x - x.mean(axis=axis, keepdims=True)) / (x.var(axis=axis, ddof=ddof, keepdims=True) + eps) ** power
    return g * y + b if gain else y


@check_for("layer_norm")
def check_layer_norm(fn) -> str:
    r = rng(0)
    x = f32(r.normal(2.0, 3.0, size=(2, 3, 5)))
    x[0, 1] = 4.0  # a constant row: its variance is 0
    g, b = f32(r.normal(1.0, 0.5, 5)), f32(r.normal(0.0, 1.0, 5))
    cases = [("a [2, 3, 5] batch with one constant row", (x, g, b)), ("a single vector", (x[1, 2], g, b))]
    for case, args in cases:
        got = fn(*map(jnp.asarray, args))
        want = reference("layer_norm")(*map(jnp.asarray, args))
        ln = lambda **kw: (lambda: _np_layer_norm(*args, **kw))
        expect(got, want, case, [
            Mistake("mean and variance must be over the last axis only (one token's features), not the whole "
                    "array: use axis=-1 with keepdims=True", ln(axis=None)),
            Mistake("mean and variance must be over the last axis (one token's features), not axis 0", ln(axis=0)),
            Mistake("forgot the gain and bias: multiply by g and add b after normalising", ln(gain=False)),
            Mistake("divided by the variance: divide by the standard deviation sqrt(var + LN_EPS)", ln(power=1.0)),
            Mistake("used the sample variance (ddof=1); layer norm divides by d, as jnp.var does by default", ln(ddof=1)),
            Mistake("a constant row has variance 0: put LN_EPS inside the square root, sqrt(var + LN_EPS), "
                    "to avoid dividing by zero", ln(eps=0.0)),
        ])
    expect_traceable(fn, tuple(map(jnp.asarray, cases[0][1])), caller="the model's forward pass")
    return f"{len(cases)} cases"


def _np_causal_valid(valid, T, start, strict=False, use_valid=True, use_start=True, transpose=False):
    S = valid.shape[1]
    slots = np.arange(S)[None, :]
    query_slot = (start if use_start else 0) + np.arange(T)[:, None]
    causal = slots < query_slot if strict else (slots >= query_slot if transpose else slots <= query_slot)
    if not use_valid:
        return np.broadcast_to(causal[None], (valid.shape[0], T, S))
    return causal[None] & valid[:, None, :]


@check_for("causal_valid")
def check_causal_valid(fn) -> str:
    left_padded = np.array([[1, 1, 1, 1, 1], [0, 0, 1, 1, 1]], bool)
    decoding = np.array([[0, 1, 1, 1, 1, 0], [1, 1, 1, 1, 1, 0]], bool)
    cases = [
        ("a full forward pass (5 queries, 5 slots, row 1 left-padded)", left_padded, 5, 0),
        ("one decoding step (1 query in slot 4 of a 6-slot cache)", decoding, 1, 4),
        ("3 queries written at slots 2..4 of a 6-slot cache", decoding, 3, 2),
    ]
    for case, valid, T, start in cases:
        got = fn(jnp.asarray(valid), T, start)
        want = reference("causal_valid")(jnp.asarray(valid), T, start)
        cv = lambda **kw: (lambda: _np_causal_valid(valid, T, start, **kw))
        expect(got, want, case, [
            Mistake("forgot the padding: a query may read slot s only if valid_keys[b, s] is True", cv(use_valid=False)),
            Mistake("a query must see its own slot: use s <= start + t, not s < start + t", cv(strict=True)),
            Mistake("ignored `start`: query t sits in slot start + t of the cache", cv(use_start=False)),
            Mistake("the mask is the wrong way round: query t may read slots s <= start + t (the past), "
                    "not later ones", cv(transpose=True)),
        ])
    # While decoding, `start` is a traced integer (the step index inside lax.scan).
    expect_traceable(lambda valid, start: fn(valid, 1, start), (jnp.asarray(decoding), jnp.int32(4)),
                     caller="decoding (inside lax.scan)")
    return f"{len(cases)} cases"


def _np_attention(q, k, v, mask, scale=None, use_mask=True, fill=NEG_INF, axis=-1, multiply=False):
    q, k, v = (np.asarray(a, np.float64) for a in (q, k, v))
    scores = q @ np.swapaxes(k, -1, -2) / (math.sqrt(q.shape[-1]) if scale is None else scale)  # [B, H, T, S]
    m = np.asarray(mask)[:, None]
    if multiply:
        scores = scores * m
    elif use_mask:
        scores = np.where(m, scores, fill)
    with np.errstate(all="ignore"):
        w = np.exp(scores - scores.max(axis=axis, keepdims=True))
        w = w / w.sum(axis=axis, keepdims=True)
    return w @ v


@check_for("attention")
def check_attention(fn) -> str:
    r = rng(1)
    B, H, T, S, D = 2, 2, 3, 5, 4
    q, k, v = (f32(r.normal(0, 1.5, size=shape)) for shape in [(B, H, T, D), (B, H, S, D), (B, H, S, D)])
    causal = np.arange(S)[None, :] <= 2 + np.arange(T)[:, None]  # queries in slots 2..4
    mask = causal[None] & np.array([[1, 1, 1, 1, 1], [0, 1, 1, 1, 1]], bool)[:, None, :]
    blind = mask.copy()
    blind[1, 0] = False  # a query that may read no slot at all
    cases = [("causal attention over a left-padded batch", mask),
             ("a batch where one query may read no slot (its output must be finite)", blind)]
    for case, m in cases:
        args = (q, k, v, m)
        got = fn(*map(jnp.asarray, args))
        want = reference("attention")(*map(jnp.asarray, args))
        at = lambda **kw: (lambda: _np_attention(*args, **kw))
        expect(got, want, case, [
            Mistake("forgot to scale: divide the scores q.k by sqrt(d_head) before the softmax", at(scale=1.0)),
            Mistake("scaled by d_head: divide the scores by sqrt(d_head)", at(scale=float(D))),
            Mistake("ignored the mask: set the scores of slots a query may not read to NEG_INF before the softmax",
                    at(use_mask=False)),
            Mistake("multiplying the scores by the mask gives masked slots a score of 0, which softmax still "
                    "weights: use jnp.where(mask, scores, NEG_INF)", at(multiply=True)),
            Mistake("softmax over the wrong axis: each query's weights over the key slots (the last axis) "
                    "must sum to 1", at(axis=-2)),
            Mistake("a query that may read no slot gets NaN when masked scores are -inf: use the large finite "
                    "NEG_INF from minirlhf.ops", at(fill=-np.inf)),
        ])
    expect_traceable(fn, tuple(map(jnp.asarray, (q, k, v, mask))), caller="the model's forward pass")
    return f"{len(cases)} cases"


@check_for("ffn")
def check_ffn(fn) -> str:
    r = rng(2)
    x = f32(r.normal(0, 1, size=(2, 3, 4)))
    c_fc = {"w": f32(r.normal(0, 0.8, (4, 8))), "b": f32(r.normal(0, 0.5, 8))}
    c_proj = {"w": f32(r.normal(0, 0.8, (8, 4))), "b": f32(r.normal(0, 0.5, 4))}
    as_jnp = lambda d: {k: jnp.asarray(v) for k, v in d.items()}
    got = fn(jnp.asarray(x), as_jnp(c_fc), as_jnp(c_proj))
    want = reference("ffn")(jnp.asarray(x), as_jnp(c_fc), as_jnp(c_proj))

    def mlp(act, bias=True):
        h = act(x @ c_fc["w"] + (c_fc["b"] if bias else 0))
        return lambda: np.asarray(h @ c_proj["w"] + (c_proj["b"] if bias else 0))

    expect(got, want, "a [2, 3, 4] batch", [
        Mistake("GPT-2's MLP uses GELU (jax.nn.gelu), not ReLU", mlp(lambda h: np.maximum(h, 0))),
        Mistake("use jax.nn.gelu's default, the tanh approximation GPT-2 used, not the exact erf GELU",
                mlp(lambda h: jax.nn.gelu(h, approximate=False))),
        Mistake("forgot the nonlinearity between the two linear layers", mlp(lambda h: h)),
        Mistake("forgot the biases: linear(x, w, b) = x @ w + b", mlp(jax.nn.gelu, bias=False)),
    ])
    expect_traceable(fn, (jnp.asarray(x), as_jnp(c_fc), as_jnp(c_proj)), caller="the model's forward pass")
    return "1 case"
