"""The grader's references, checked against answers known without the library.

A check passes a learner's function when it agrees with the reference, the library's own function
(`minirlhf.grade.checks.common.reference`). Grading the solutions cannot catch a wrong reference: they are the
same code. So here every exercise's reference meets at least one input whose answer is known
independently: worked out by hand (the numbers are in the test) or written out from the equation in plain
NumPy/Python loops. Some inputs come from the checks' own builders (`response_layout`, `tiny_params`); the
expected values never come from a minirlhf function. The three exercises that run a model (lm_loss, reward,
sequence_logprobs) take the model's logits or hidden states from `transformer.forward`, then do
everything the exercise adds (shift, masks, reading the last token) in plain Python; the checks' jitted
forward (`fast_forward`, the same numbers) keeps that to one compile.

Each test takes the function under test as its argument, so the same test can be pointed at a known-wrong
version (tests/wrong_impls/) to see it fail.
"""
from __future__ import annotations

import itertools
import math
from typing import Callable

import jax.numpy as jnp
import numpy as np
import pytest

from minirlhf.grade.checks import EXERCISES
from minirlhf.grade.checks.common import TINY, fast_forward, mask_of, reference, response_layout, tiny_params
from minirlhf.data import PROMPT_WIDTH
from minirlhf.preferences import Labeler
from minirlhf.ppo_losses import AdaptiveKLConfig, KLState
from minirlhf.sampling import SampleConfig

KNOWN: dict[str, Callable[[Callable], None]] = {}  # exercise name -> test(fn) that raises on a wrong fn
LN3 = math.log(3.0)


def known(name: str):
    """Register `test(fn)` as the independent test of exercise `name`."""
    def register(test):
        KNOWN[name] = test
        return test
    return register


def close(got, want, what: str, rtol: float = 1e-5, atol: float = 1e-6) -> None:
    got, want = np.asarray(got, np.float64), np.asarray(want, np.float64)
    assert got.shape == want.shape, f"{what}: shape {got.shape}, the known answer has shape {want.shape}"
    assert np.allclose(got, want, rtol=rtol, atol=atol), f"{what}: got\n{got}\nbut the known answer is\n{want}"


def same(got, want, what: str) -> None:
    got, want = np.asarray(got), np.asarray(want)
    assert got.shape == want.shape and (got == want).all(), (
        f"{what}: got\n{got.astype(int)}\nexpected\n{want.astype(int)}")


def np_log_softmax(x: np.ndarray) -> np.ndarray:
    x = np.asarray(x, np.float64)
    return x - x.max(-1, keepdims=True) - np.log(np.exp(x - x.max(-1, keepdims=True)).sum(-1, keepdims=True))


def sigmoid(x):
    return 1.0 / (1.0 + np.exp(-np.asarray(x, np.float64)))


def last_true(row) -> int:
    return max(i for i, v in enumerate(row) if v)


# ---------------------------------------------------------------- transformer


@known("layer_norm")
def _layer_norm(fn):
    # x = 1, 2, 3, 4: mean 2.5, biased variance (2.25 + 0.25 + 0.25 + 2.25) / 4 = 1.25; GPT-2's eps 1e-5
    g, b = np.array([2.0, 1.0, 1.0, 0.5]), np.array([0.0, 1.0, 0.0, -1.0])
    x = np.array([[1.0, 2.0, 3.0, 4.0], [7.0, 7.0, 7.0, 7.0]])  # the second row is constant: it becomes b
    want = np.stack([np.array([-1.5, -0.5, 0.5, 1.5]) / math.sqrt(1.25 + 1e-5) * g + b, b])
    close(fn(*(jnp.asarray(a, jnp.float32) for a in (x, g, b))), want, "layer norm of [1, 2, 3, 4] and a constant row")


@known("causal_valid")
def _causal_valid(fn):
    valid = jnp.array([[0, 1, 1, 1, 1], [1, 1, 1, 1, 0]], bool)
    # 2 queries sitting in slots 2 and 3: query t reads slots s <= 2 + t that are valid
    want = np.array([[[0, 1, 1, 0, 0], [0, 1, 1, 1, 0]],
                     [[1, 1, 1, 0, 0], [1, 1, 1, 1, 0]]], bool)
    same(fn(valid, 2, 2), want, "causal_valid(valid, n_queries=2, start=2)")
    full = np.tril(np.ones((5, 5), bool))[None] & np.asarray(valid)[:, None, :]
    same(fn(valid, 5, 0), full, "causal_valid over a whole 5-token forward pass")


@known("attention")
def _attention(fn):
    # d_head 4, so scores are q.k / 2. Query 0 sees both slots: scores 0 and ln 3, weights 1/4 and 3/4.
    # Query 1 may read slot 0 only: its output is v[0]. Query 2 may read nothing: its output must be finite.
    q = np.zeros((1, 1, 3, 4))
    q[0, 0, :, 0] = 2.0
    k = np.zeros((1, 1, 2, 4))
    k[0, 0, 1, 0] = LN3
    v = np.zeros((1, 1, 2, 4))
    v[0, 0, 0, 0], v[0, 0, 1, 1] = 4.0, 8.0
    mask = np.array([[[1, 1], [1, 0], [0, 0]]], bool)
    out = np.asarray(fn(*(jnp.asarray(a, jnp.float32) for a in (q, k, v)), jnp.asarray(mask)))
    close(out[0, 0, 0], [1.0, 6.0, 0.0, 0.0], "attention of a query with weights 1/4 and 3/4")
    close(out[0, 0, 1], [4.0, 0.0, 0.0, 0.0], "attention of a query that may read slot 0 only")
    assert np.isfinite(out[0, 0, 2]).all(), f"a query that may read no slot needs a finite output, not {out[0, 0, 2]}"
    # random heads against softmax written out, over a mask with a left-padded row
    r = np.random.default_rng(0)
    q, k, v = r.normal(size=(2, 2, 3, 4)), r.normal(size=(2, 2, 5, 4)), r.normal(size=(2, 2, 5, 4))
    mask = (np.arange(5)[None, :] <= 2 + np.arange(3)[:, None])[None] & np.array([[1] * 5, [0, 0, 1, 1, 1]],
                                                                                   bool)[:, None, :]
    want = np.zeros((2, 2, 3, 4))
    for b, h, t in itertools.product(range(2), range(2), range(3)):
        slots = [s for s in range(5) if mask[b, t, s]]
        scores = np.array([q[b, h, t] @ k[b, h, s] / 2.0 for s in slots])
        weights = np.exp(scores) / np.exp(scores).sum()
        want[b, h, t] = sum(w * v[b, h, s] for w, s in zip(weights, slots))
    got = fn(*(jnp.asarray(a, jnp.float32) for a in (q, k, v)), jnp.asarray(mask))
    close(got, want, "attention on random heads", rtol=1e-4, atol=1e-5)


@known("ffn")
def _ffn(fn):
    r = np.random.default_rng(1)
    x = r.normal(size=(2, 3, 4))
    c_fc = {"w": r.normal(size=(4, 8)), "b": r.normal(size=8)}
    c_proj = {"w": r.normal(size=(8, 4)), "b": r.normal(size=4)}
    h = x @ c_fc["w"] + c_fc["b"]
    gelu = 0.5 * h * (1 + np.tanh(math.sqrt(2 / math.pi) * (h + 0.044715 * h**3)))  # GPT-2's tanh GELU
    as_jnp = lambda d: {key: jnp.asarray(a, jnp.float32) for key, a in d.items()}
    got = fn(jnp.asarray(x, jnp.float32), as_jnp(c_fc), as_jnp(c_proj))
    close(got, gelu @ c_proj["w"] + c_proj["b"], "ffn against GELU written out", rtol=1e-4, atol=1e-5)


# ---------------------------------------------------------------- pretraining


def np_token_logprobs(logits: np.ndarray, tokens: np.ndarray, temperature: float = 1.0) -> np.ndarray:
    """out[b, t] = log softmax(logits[b, t - 1] / T)[tokens[b, t]], and 0 at t = 0, one entry at a time."""
    out = np.zeros(tokens.shape)
    for b, t in itertools.product(range(tokens.shape[0]), range(1, tokens.shape[1])):
        out[b, t] = np_log_softmax(logits[b, t - 1] / temperature)[tokens[b, t]]
    return out


@known("token_logprobs")
def _token_logprobs(fn):
    # hand: logits (0, ln 3) give p = (1/4, 3/4); they predict token 1 at position 1
    logits = np.array([[[0.0, LN3], [0.0, 0.0]]])
    close(fn(jnp.asarray(logits, jnp.float32), jnp.array([[0, 1]]), 1.0), [[0.0, math.log(0.75)]],
          "token_logprobs of token 1 after logits (0, ln 3)")
    close(fn(jnp.asarray(2 * logits, jnp.float32), jnp.array([[0, 0]]), 2.0), [[0.0, math.log(0.25)]],
          "token_logprobs at temperature 2 of logits (0, 2 ln 3)")
    r = np.random.default_rng(2)
    logits, tokens = r.normal(0, 2, (3, 5, 6)), r.integers(0, 6, (3, 5))
    close(fn(jnp.asarray(logits, jnp.float32), jnp.asarray(tokens), 0.7), np_token_logprobs(logits, tokens, 0.7),
          "token_logprobs of random logits at temperature 0.7", rtol=1e-4, atol=1e-5)


@known("masked_mean")
def _masked_mean(fn):
    x = jnp.array([[1.0, 2.0, 3.0, 4.0], [5.0, 6.0, 7.0, 8.0]])
    mask = jnp.array([[1, 0, 1, 0], [0, 0, 0, 0]], bool)
    close(fn(x, mask), 2.0, "masked_mean over everything: (1 + 3) / 2")
    close(fn(x, mask, axis=1), [2.0, 0.0], "masked_mean per row, the second row fully masked out (0, not NaN)")
    close(fn(x, mask, axis=0), [1.0, 0.0, 3.0, 0.0], "masked_mean per column")


@known("lm_loss")
def _lm_loss(fn):
    params, T = tiny_params(), TINY.max_len
    r = np.random.default_rng(3)
    tokens = r.integers(3, TINY.vocab_size, size=(4, T)).astype(np.int32)
    valid = np.arange(T)[None, :] < np.array([T, 9, 5, 12])[:, None]
    loss_mask = valid & (np.arange(T) > 6)[None, :]  # a "response" from position 7 on
    tokens[~valid] = 0
    batch = {"tokens": jnp.asarray(tokens), "valid": jnp.asarray(valid), "loss_mask": jnp.asarray(loss_mask)}
    with fast_forward() as forward:
        logits = np.asarray(forward(params, batch["tokens"], batch["valid"], TINY)[0])
        loss, metrics = fn(params, batch, TINY)
    picked = [np_log_softmax(logits[b, t - 1])[tokens[b, t]] for b in range(4) for t in range(T) if loss_mask[b, t]]
    nll = -sum(picked) / len(picked)
    close(loss, nll, "lm_loss against the mean NLL of the loss-mask tokens", rtol=1e-4)
    close(metrics["perplexity"], math.exp(nll), "lm_loss's perplexity", rtol=1e-4)


@known("sample_token")
def _sample_token(fn):
    logits = jnp.array([[1.0, 2.0, 3.0, 0.0]] * 4)
    gumbel = jnp.array([[0.0, 0.0, 0.0, 0.0], [0.0, 0.0, 0.0, 10.0], [0.0, 1.5, 0.0, 10.0], [0.0, 0.8, 0.0, 0.0]])
    cases = [  # config, expected tokens: argmax(logits / T + gumbel) over the top_k best
        (SampleConfig(temperature=1.0), [2, 3, 3, 2]),  # no noise: the argmax; a big draw wins
        (SampleConfig(temperature=0.5), [2, 3, 3, 2]),
        (SampleConfig(temperature=2.0, top_k=2), [2, 2, 1, 1]),  # token 3 is not among the best 2, whatever its noise
    ]
    for cfg, want_tokens in cases:
        token, logprob = fn(logits, gumbel, cfg)
        same(token, want_tokens, f"sample_token's tokens with {cfg}")
        full = np_log_softmax(np.asarray(logits, np.float64) / cfg.temperature)  # the log-prob ignores top-k
        close(logprob, [full[b, t] for b, t in enumerate(want_tokens)], f"sample_token's log-probs with {cfg}")


# ---------------------------------------------------------------- SFT and the reward model


@known("response_mask")
def _response_mask(fn):
    valid = np.array([[0, 1, 1, 1, 0, 0], [1, 1, 1, 1, 1, 1], [0, 0, 1, 0, 0, 0]], bool)
    want = np.array([[0, 0, 0, 1, 0, 0], [0, 0, 0, 1, 1, 1], [0, 0, 0, 0, 0, 0]], bool)
    same(fn(valid, 3), want, "response_mask with prompt_width 3")
    wide = np.ones((1, PROMPT_WIDTH + 2), bool)
    same(fn(wide), [[False] * PROMPT_WIDTH + [True, True]], "response_mask with the default prompt width")


@known("preference_prob")
def _preference_prob(fn):
    # score gap ln 3 at temperature 1: p = 3/4; at temperature 1/2: sigmoid(2 ln 3) = 9/10
    close(fn(Labeler(temperature=1.0, flip_prob=0.0), LN3, 0.0), 0.75, "P(a) for a gap of ln 3, no noise")
    close(fn(Labeler(temperature=0.5, flip_prob=0.0), LN3 + 1.0, 1.0), 0.9, "P(a) for a gap of ln 3 at temperature 0.5")
    close(fn(Labeler(temperature=0.5, flip_prob=0.2), LN3, 0.0), 0.8 * 0.9 + 0.2 * 0.1, "P(a) with 20% flips")
    close(fn(Labeler(temperature=1.0, flip_prob=0.0), 0.0, LN3), 0.25, "P(a) when b scores higher")
    close(fn(Labeler(), 0.4, 0.4), 0.5, "P(a) for equal scores")


@known("last_index")
def _last_index(fn):
    valid = jnp.array([[0, 0, 1, 1, 0], [1, 1, 1, 1, 1], [0, 1, 0, 0, 0]], bool)
    same(fn(valid), [3, 4, 1], "last_index of rows ending at 3, 4 (the last column) and 1")


@known("reward")
def _reward(fn):
    tokens, valid = response_layout(10, [2, 4, 1, 3], prompt_width=10, response_width=4, vocab=TINY.vocab_size)
    w = np.random.default_rng(4).normal(size=TINY.d_model)
    rm_params = {"lm": tiny_params(), "head": {"w": jnp.asarray(w, jnp.float32), "b": jnp.float32(0.3)}}
    with fast_forward() as forward:
        hidden = np.asarray(forward(rm_params["lm"], jnp.asarray(tokens), jnp.asarray(valid), TINY)[1])
        got = fn(rm_params, jnp.asarray(tokens), jnp.asarray(valid), TINY)
    want = [hidden[b, last_true(valid[b])] @ w + 0.3 for b in range(len(tokens))]
    close(got, want,
          "reward against the head read at each row's last valid token", rtol=1e-4, atol=1e-5)


@known("bradley_terry")
def _bradley_terry(fn):
    # equal rewards: -log sigmoid(0) = ln 2; a margin of ln 3: -log(3/4)
    close(fn(jnp.array([0.5, LN3]), jnp.array([0.5, 0.0])), (math.log(2) - math.log(0.75)) / 2,
          "Bradley-Terry of margins 0 and ln 3")
    close(fn(jnp.array([1.0]), jnp.array([1.0]), 0.5), math.log(2) + 0.5 * 4.0, "Bradley-Terry with centering 0.5")
    close(fn(jnp.array([200.0, 0.0]), jnp.array([0.0, 200.0])), 100.0, "Bradley-Terry of margins +-200 (no overflow)",
          atol=1e-4)


# ---------------------------------------------------------------- PPO


@known("kl_estimate")
def _kl_estimate(fn):
    l = np.array([0.0, math.log(2), -math.log(2)])
    close(fn(jnp.asarray(l, jnp.float32), "k1"), l, "k1 = l")
    close(fn(jnp.asarray(l, jnp.float32), "k2"), l**2 / 2, "k2 = l^2 / 2")
    # k3 = e^-l - 1 + l: 0, 1/2 - 1 + ln 2, 2 - 1 - ln 2
    close(fn(jnp.asarray(l, jnp.float32), "k3"), [0.0, math.log(2) - 0.5, 1 - math.log(2)], "k3 = e^-l - 1 + l")
    with pytest.raises(ValueError):
        fn(jnp.asarray(l), "k4")


@known("kl_shaped_rewards")
def _kl_shaped_rewards(fn):
    mask = np.array([[0, 1, 1, 0], [0, 1, 1, 1]], bool)  # row 0 ends at 2, row 1 is cut off at the last column
    logprobs = np.array([[-9.0, -1.0, -2.0, -9.0], [-9.0, -0.5, -0.5, -1.0]])
    ref = np.array([[-1.0, -2.0, -2.0, -1.0], [-1.0, -1.0, -0.5, -3.0]])
    scores = np.array([1.0, -2.0])
    # k1 = logprobs - ref on the response, times -beta = -0.5; each score lands on its row's last real token
    want = np.array([[0.0, -0.5 * 1.0, 0.0 + 1.0, 0.0], [0.0, -0.5 * 0.5, 0.0, -0.5 * 2.0 - 2.0]])
    args = [jnp.asarray(a, jnp.float32) for a in (scores, logprobs, ref)] + [jnp.asarray(mask)]
    close(fn(*args, 0.5, "k1"), want, "kl_shaped_rewards, beta 0.5, k1")
    l = logprobs - ref
    k3 = np.where(mask, np.expm1(-l) + l, 0.0)
    want = -0.1 * k3
    want[0, 2] += 1.0
    want[1, 3] -= 2.0
    close(fn(*args, 0.1, "k3"), want, "kl_shaped_rewards, beta 0.1, k3", rtol=1e-4)


def sum_gae(rewards, values, mask, gamma, lam):
    """A_t = sum_l (gamma lam)^l delta_{t+l} over the rest of the episode, delta_t = r_t + gamma V_{t+1} - V_t,
    with V = 0 past the episode's last token: the definition summed out, not the recurrence."""
    B, T = mask.shape
    adv = np.zeros((B, T))
    for b in range(B):
        for t in range(T):
            if not mask[b, t]:
                continue
            end = next((s for s in range(t, T) if not mask[b, s]), T)  # the episode is over at `end`
            v_next = lambda s: values[b, s + 1] if s + 1 < end else 0.0
            adv[b, t] = sum((gamma * lam) ** (s - t) * (rewards[b, s] + gamma * v_next(s) - values[b, s])
                            for s in range(t, end))
    return adv, np.where(mask, adv + values, 0.0)


@known("gae")
def _gae(fn):
    # hand: gamma = lam = 1 makes A_t the reward-to-go minus V_t
    rewards = np.array([[5.0, 1.0, 2.0, 3.0, 7.0]])
    values = np.array([[9.0, 0.5, 1.0, 4.0, 9.0]])
    mask = np.array([[0, 1, 1, 1, 0]], bool)
    adv, ret = fn(*(jnp.asarray(a, jnp.float32) for a in (rewards, values)), jnp.asarray(mask), 1.0, 1.0)
    close(adv, [[0.0, 6.0 - 0.5, 5.0 - 1.0, 3.0 - 4.0, 0.0]], "GAE advantages with gamma = lam = 1")
    close(ret, [[0.0, 6.0, 5.0, 3.0, 0.0]], "GAE returns with gamma = lam = 1 (the reward-to-go)")
    _, valid = response_layout(20, [2, 6, 1, 4], prompt_width=3, response_width=6)
    mask = mask_of(valid, 3)
    r = np.random.default_rng(5)
    rewards = np.where(mask, r.normal(size=mask.shape), 3.0)  # junk off the mask must not leak in
    values = np.where(mask, r.normal(size=mask.shape), -2.0)
    got = fn(*(jnp.asarray(a, jnp.float32) for a in (rewards, values)), jnp.asarray(mask), 0.9, 0.5)
    want = sum_gae(rewards, values, mask, 0.9, 0.5)
    close(got[0], want[0], "GAE advantages against the summed-out definition", rtol=1e-4, atol=1e-5)
    close(got[1], want[1], "GAE returns (advantages + values)", rtol=1e-4, atol=1e-5)


@known("masked_whiten")
def _masked_whiten(fn):
    x = jnp.array([[1.0, 3.0, 500.0], [1.0, 3.0, -500.0]])
    mask = jnp.array([[1, 1, 0], [1, 1, 0]], bool)  # real entries 1, 3, 1, 3: mean 2, variance 1
    s = math.sqrt(1 + 1e-8)
    close(fn(x, mask), [[-1 / s, 1 / s, 0.0]] * 2, "masked_whiten of 1, 3 (mean 2, std 1) with junk padding")
    close(fn(x, mask, False), [[2 - 1 / s, 2 + 1 / s, 0.0]] * 2, "masked_whiten with shift_mean=False")
    flat = fn(jnp.array([2.0, 2.0, 9.0]), jnp.array([1, 1, 0], bool))
    close(flat, [0.0, 0.0, 0.0], "masked_whiten of equal entries (variance 0)")


@known("policy_loss")
def _policy_loss(fn):
    # token 0: ratio e^0.5 = 1.65 and A = 1: clipped to 1.2, the max of -1.65 and -1.2 is -1.2 (clipped)
    # token 1: ratio e^0.5 and A = -1: the max of 1.65 and 1.2 is 1.65 (unclipped)
    # token 2: ratio e^-0.1 = 0.905 and A = 2: inside the clip range, -1.81
    # token 3 is padding with junk
    lp = np.array([[0.5, 0.5, -0.1, 40.0]])
    old = np.zeros((1, 4))
    adv = np.array([[1.0, -1.0, 2.0, 100.0]])
    mask = np.array([[1, 1, 1, 0]], bool)
    loss, metrics = fn(*(jnp.asarray(a, jnp.float32) for a in (lp, old, adv)), jnp.asarray(mask), 0.2)
    e = math.exp(0.5)
    close(loss, (-1.2 + e - 2 * math.exp(-0.1)) / 3, "the clipped policy loss of three hand-worked tokens")
    close(metrics["policy/clipfrac"], 1 / 3, "policy/clipfrac (one of three tokens clipped)")
    close(metrics["policy/approxkl"], 0.5 * (0.25 + 0.25 + 0.01) / 3, "policy/approxkl = 1/2 mean(log_ratio^2)")
    close(metrics["val/ratio"], (2 * e + math.exp(-0.1)) / 3, "val/ratio = mean ratio")


@known("value_loss")
def _value_loss(fn):
    # token 0: value 1 from old 0, return 0: clipped value 0.2; errors 1 and 0.04, max 1 (unclipped)
    # token 1: value 0.5 from old 0, return 1: clipped value 0.2; errors 0.25 and 0.64, max 0.64 (clipped)
    # token 2 is padding with junk
    values, old, returns = np.array([[1.0, 0.5, 30.0]]), np.zeros((1, 3)), np.array([[0.0, 1.0, -30.0]])
    loss, metrics = fn(*(jnp.asarray(a, jnp.float32) for a in (values, old, returns)),
                       jnp.array([[1, 1, 0]], bool), 0.2)
    close(loss, 0.5 * (1.0 + 0.64) / 2, "the clipped value loss of two hand-worked tokens")
    close(metrics["val/clipfrac"], 0.5, "val/clipfrac (one of two tokens clipped)")


@known("adaptive_kl_controller")
def _adaptive_kl_controller(fn):
    cfg = AdaptiveKLConfig(target=6.0, horizon=1000)
    # error = clip(KL / 6 - 1, -0.2, 0.2); beta <- beta (1 + error * 64 / 1000)
    for kl, error in [(7.0, 1 / 6), (60.0, 0.2), (0.5, -0.2), (6.0, 0.0)]:
        state = fn(KLState(0.1), kl, 64, cfg)
        close(state.beta, 0.1 * (1 + error * 0.064), f"beta after a KL of {kl} against a target of 6", rtol=1e-7)


@known("exact_kl")
def _exact_kl(fn):
    # p = softmax(0, ln 3) = (1/4, 3/4), q uniform: KL = 1/4 ln(1/2) + 3/4 ln(3/2); it belongs to token 1
    kl = 0.25 * math.log(0.5) + 0.75 * math.log(1.5)
    logits_p = np.array([[[0.0, LN3], [5.0, -5.0]]])
    logits_q = np.array([[[1.0, 1.0], [-5.0, 5.0]]])  # the last position predicts nothing in the sequence
    close(fn(jnp.asarray(logits_p, jnp.float32), jnp.asarray(logits_q, jnp.float32)), [[0.0, kl]],
          "exact_kl of p = (1/4, 3/4) from a uniform q")
    close(fn(jnp.asarray(2 * logits_p, jnp.float32), jnp.asarray(logits_q, jnp.float32), 2.0), [[0.0, kl]],
          "exact_kl at temperature 2 of logits doubled")
    close(fn(jnp.asarray(logits_q, jnp.float32), jnp.asarray(logits_q, jnp.float32)), [[0.0, 0.0]], "KL(q || q)")


# ---------------------------------------------------------------- DPO, best-of-n, CAI, GRPO / RLOO


@known("minibatch_rows")
def _minibatch_rows(fn):
    # a random order of the 4 groups of 2 rows (jax.random.permutation), each group as its two consecutive rows
    import jax

    from minirlhf.policy_gradient import PGConfig
    cfg, key = PGConfig(batch_size=8, group_size=2, minibatches=2), jax.random.PRNGKey(5)
    order = np.asarray(jax.random.permutation(key, 4))  # [4 groups]
    same(fn(key, cfg), np.stack([order * 2, order * 2 + 1], axis=1).reshape(2, 4), "rows of the groups, in order")


@known("update_epochs")
def _update_epochs(fn):
    # 3 epochs x 2 minibatches of 4 rows, each epoch on its own key of jax.random.split: 6 steps; the metric "first"
    # (the first row of a minibatch) averages over the 6 minibatches, "rows" (their mean row) to 3.5
    import jax

    from minirlhf.policy_gradient import PGConfig, optimizer
    from minirlhf.training import TrainState

    def loss_fn(params, minibatch, model_cfg, cfg):
        loss = jnp.sum(params["w"]) * jnp.mean(minibatch["x"])
        row = minibatch["row"].astype(jnp.float32)
        return loss, {"first": row[0], "rows": jnp.mean(row)}

    cfg, key = PGConfig(batch_size=8, ppo_epochs=3, minibatches=2), jax.random.PRNGKey(6)
    params = {"w": jnp.ones(2)}
    state = TrainState(params, optimizer(cfg).init(params), jnp.zeros((), jnp.int32))
    batch = {"x": jnp.ones(8), "row": jnp.arange(8)}
    state, metrics = fn(state, batch, key, loss_fn, None, cfg)
    firsts = [np.asarray(jax.random.permutation(k, 8)).reshape(2, 4)[:, 0] for k in jax.random.split(key, 3)]
    assert int(state.step) == 6, f"3 epochs x 2 minibatches are 6 steps, the state counts {int(state.step)}"
    close(metrics["first"], np.mean(firsts), "mean first row of each epoch's shuffled minibatches")
    close(metrics["rows"], 3.5, "each epoch sees every row once: mean row 3.5")


@known("edit_shifts")
def _edit_shifts(fn):
    # a scorer that pays 1 per word on prompt "p0" and 2 per word on "p1": "definitely" or "maybe" adds one word;
    # answer 0 gets RAMBLES[0] (6 words), answer 1 RAMBLES[1] (7 words)
    from minirlhf.world import RAMBLES
    assert [len(r.split()) for r in RAMBLES[:2]] == [6, 7]
    score_fn = lambda prompts, responses: np.array([len(w) * (1 if p == "p0" else 2) for p, w in zip(prompts, responses)])
    bare = [["it", "is", "5", "."], ["it", "is", "blue", "."]]
    got = fn(score_fn, ["p0", "p1"], bare, np.array([True, False]))
    want = {"definitely_right": 1, "definitely_wrong": 2, "maybe_right": 1, "maybe_wrong": 2, "ramble_right": 6,
            "ramble_wrong": 14}
    for key, value in want.items():
        close(got[key], value, f"edit_shifts[{key!r}] for a scorer that pays per word")


@known("sequence_logprobs")
def _sequence_logprobs(fn):
    R = TINY.max_len - PROMPT_WIDTH
    tokens, valid = response_layout(30, [2, R, 1, 3], prompt_width=PROMPT_WIDTH, response_width=R,
                                    vocab=TINY.vocab_size)
    params = tiny_params()
    with fast_forward() as forward:
        logits = np.asarray(forward(params, jnp.asarray(tokens), jnp.asarray(valid), TINY)[0])
        got = fn(params, jnp.asarray(tokens), jnp.asarray(valid), TINY)
    want = [sum(np_log_softmax(logits[b, t - 1])[tokens[b, t]] for t in range(PROMPT_WIDTH, tokens.shape[1])
                if valid[b, t]) for b in range(len(tokens))]
    close(got, want, "sequence_logprobs against the sum over each row's valid response tokens", rtol=1e-4, atol=1e-4)


@known("preference_loss")
def _preference_loss(fn):
    h = jnp.array([0.0, 2 * LN3, -200.0])  # beta h = 0, ln 3 and -100 at beta 0.5
    close(fn(h, 0.5, "dpo"), [math.log(2), -math.log(0.75), 100.0], "DPO loss -log sigmoid(beta h)", atol=1e-4)
    close(fn(h[:2], 0.5, "cdpo", 0.25), [math.log(2), -0.75 * math.log(0.75) - 0.25 * math.log(0.25)],
          "cDPO loss with label smoothing 0.25")
    close(fn(jnp.array([1.0, 3.0, -1.0]), 0.5, "ipo"), [0.0, 4.0, 4.0], "IPO loss (h - 1 / (2 beta))^2, beta 0.5")
    with pytest.raises(ValueError):
        fn(h, 0.5, "xpo")


@known("kl_bound")
def _kl_bound(fn):
    for n, want in [(1, 0.0), (2, math.log(2) - 0.5), (4, math.log(4) - 0.75), (10, math.log(10) - 0.9)]:
        close(fn(n), want, f"kl_bound({n}) = log n - (n - 1) / n")


def brute_force_best_of_n_kl(p: np.ndarray, scores: np.ndarray, n: int) -> float:
    """Every sequence of n draws, with its probability; the first draw with the best score is kept."""
    p = p / p.sum()
    q = np.zeros(len(p))
    for draws in itertools.product(range(len(p)), repeat=n):
        best = max(scores[d] for d in draws)
        q[next(d for d in draws if scores[d] == best)] += np.prod(p[list(draws)])
    return float(sum(qi * math.log(qi / pi) for qi, pi in zip(q, p) if qi > 0))


@known("finite_best_of_n_kl")
def _finite_best_of_n_kl(fn):
    p = np.array([0.1, 0.3, 0.15, 0.25])  # 80% of the mass: pi is renormalised over the 4 responses
    for scores, n in [(np.array([0.2, -1.0, 3.0, 0.5]), 3), (np.array([1.0, 0.0, 1.0, 0.0]), 3),
                      (np.array([1.0, 0.0, 1.0, 0.0]), 1)]:
        close(fn(np.log(p), scores, n), brute_force_best_of_n_kl(p, scores, n),
              f"best-of-{n} KL for scores {scores} against enumerating every draw")


@known("best_of_n_mean")
def _best_of_n_mean(fn):
    # scores (3, 1, 2), values (10, 20, 30): best-of-2 picks draw 0 from {0, 1} and {0, 2}, draw 2 from {1, 2}
    scores, values = np.array([3.0, 1.0, 2.0]), np.array([10.0, 20.0, 30.0])
    close(fn(scores, values, 2), 50 / 3, "best-of-2 of three draws, by hand")
    close(fn(scores, values, 1), 20.0, "best-of-1 is the plain mean")
    close(fn(scores, values, 3), 10.0, "best-of-3 of three draws is the top-scored one")
    r = np.random.default_rng(4)
    scores, values = r.normal(size=6), r.normal(size=6)
    for n in range(1, 7):  # the definition: the pick's value, averaged over every n-subset
        subsets = itertools.combinations(range(6), n)
        want = np.mean([values[list(s)][np.argmax(scores[list(s)])] for s in subsets])
        close(fn(scores, values, n), want, f"best-of-{n} of 6 draws against every {n}-subset")
    # the weights of a distribution sum to 1: equal values give that value, even where C(1200, 600) is past 1e308
    close(fn(np.arange(1200.0), np.full(1200, 0.25), 600), 0.25, "best-of-600 of 1200 draws that are all worth 0.25")
    with pytest.raises(ValueError):
        fn(scores, values, 7)  # more than the draws


@known("fit_rl")
def _fit_rl(fn):
    # a noiseless curve R = 0.4 d - 0.25 d ln d (0 at d = 0) gives back its own alpha and beta
    d = np.array([0.0, 0.3, 1.0, 2.0, 3.5])
    gain = 0.4 * d - 0.25 * np.array([0.0] + [x * math.log(x) for x in d[1:]])
    close(fn(d, gain), (0.4, 0.25), "(alpha, beta) of the exact curve 0.4 d - 0.25 d ln d")


@known("form_peak")
def _form_peak(fn):
    # d (0.5 - 0.2 d) peaks at 0.5 / 0.4; d (0.5 - 0.25 ln d) where 0.5 - 0.25 (ln d + 1) = 0, ln d = 1
    close(fn("bon", 0.5, 0.2), 1.25, "the peak of d (0.5 - 0.2 d)")
    close(fn("rl", 0.5, 0.25), math.e, "the peak of d (0.5 - 0.25 ln d)")
    assert fn("rl", 0.5, -0.1) == math.inf and fn("bon", 0.5, 0.0) == math.inf, "beta <= 0: the form never peaks"


@known("ai_preference")
def _ai_preference(fn):
    # pair 0: both principles give a a log-odds gap of ln 3 over b: sigmoid(ln 3) = 3/4
    # pair 1: gaps of ln 3 and 0: the mean gap is ln(3) / 2, P = sqrt(3) / (1 + sqrt(3)), not the mean of
    # the two principles' probabilities, (3/4 + 1/2) / 2
    good_a = np.log([[0.6, 0.6], [0.3, 0.3]])
    bad_a = np.log([[0.2, 0.2], [0.1, 0.1]])  # a's log-odds: ln 3 everywhere
    good_b = np.log([[0.4, 0.1], [0.25, 0.3]])
    bad_b = np.log([[0.4, 0.1], [0.25, 0.1]])  # b's log-odds: 0, 0 / 0, ln 3
    got = fn(*(jnp.asarray(a, jnp.float32) for a in (good_a, bad_a, good_b, bad_b)))
    close(got, [0.75, math.sqrt(3) / (1 + math.sqrt(3))],
          "ai_preference = sigmoid(mean over principles of the log-odds gap)")


@known("verdict_logprobs")
def _verdict_logprobs(fn):
    # the judge's verdict is the next token after the prompt: log_softmax of the last column's logits (every row is
    # left-padded, so its prompt ends there), read at the ids of "good" and "bad"
    from minirlhf.grade.checks.cai import JUDGE_MODEL
    from minirlhf.tokenizer import TOKEN_ID
    params, T = tiny_params(1, JUDGE_MODEL), JUDGE_MODEL.max_len
    tokens = jnp.asarray(np.random.default_rng(3).integers(3, JUDGE_MODEL.vocab_size, size=(3, T)), jnp.int32)
    valid = jnp.asarray(np.arange(T)[None, :] >= np.array([0, 3, 5])[:, None])
    with fast_forward() as forward:
        logits = np.asarray(forward(params, tokens, valid, JUDGE_MODEL).logits)
        good, bad = fn(params, tokens, valid, JUDGE_MODEL)
    logp = np_log_softmax(logits[:, -1])
    close(good, logp[:, TOKEN_ID["good"]], "log p(good) at the last slot", rtol=1e-4, atol=1e-5)
    close(bad, logp[:, TOKEN_ID["bad"]], "log p(bad) at the last slot", rtol=1e-4, atol=1e-5)


@known("best_critiqued")
def _best_critiqued(fn):
    # 2 prompts x 3 samples: rows 0-2 are prompt 0 (critiques 0.1, 0.7, 0.7: the first of the tied two, row 1),
    # rows 3-5 prompt 1 (0.9 first: unchanged, row 3)
    tokens = np.arange(6 * 2, dtype=np.int32).reshape(6, 2)  # row r holds 2r, 2r + 1
    valid = np.ones((6, 2), bool)
    out = fn(tokens, valid, np.array([0.1, 0.7, 0.7, 0.9, 0.2, -0.5]), 3)
    same(out["tokens"], [[2, 3], [6, 7]], "the revisions are rows 1 and 3")
    same(out["first_tokens"], [[0, 1], [6, 7]], "the first samples are rows 0 and 3")
    close(out["critique_revised"], [0.7, 0.9], "the revisions' critiques")
    same(out["changed"], [True, False], "prompt 0's revision is not its first sample; prompt 1's is")


@known("group_advantages")
def _group_advantages(fn):
    # group (1, 2, 3): mean 2, population std sqrt(2/3); TRL's STD_EPS 1e-4 keeps the equal group at 0
    s = math.sqrt(2 / 3) + 1e-4
    close(fn(jnp.array([[1.0, 2.0, 3.0], [0.3, 0.3, 0.3]])), [[-1 / s, 0.0, 1 / s], [0.0, 0.0, 0.0]],
          "GRPO advantages of the groups (1, 2, 3) and (0.3, 0.3, 0.3)")


@known("leave_one_out_advantages")
def _leave_one_out_advantages(fn):
    # each minus the mean of the others: 1 - 2.5, 2 - 2, 3 - 1.5; and 1 - 5, 5 - 1 for k = 2
    close(fn(jnp.array([[1.0, 2.0, 3.0]])), [[-1.5, 0.0, 1.5]], "RLOO advantages of the group (1, 2, 3)")
    close(fn(jnp.array([[1.0, 5.0], [2.0, 2.0]])), [[-4.0, 4.0], [0.0, 0.0]], "RLOO advantages for k = 2")


# ---------------------------------------------------------------- RLVR and the exact optimum


@known("exact_match")
def _exact_match(fn):
    # "what is 7 minus 2 ?" is 5; the reply must be the finished sentence "[conf] it is 5 ." and the prompt a sum
    from minirlhf.data import encode_pairs
    from minirlhf.tokenizer import EOS_ID, PAD_ID
    from minirlhf.world import color_prompt, math_prompt
    sum_, color = math_prompt(7, "minus", 2), color_prompt(0)  # THINGS[0] "sky" is COLORS[0] "blue"
    replies = [(sum_, "it is 5 .", 1), (sum_, "maybe it is 5 . and ok .", 1), (sum_, "it is 9 .", 0),
               (sum_, "it is 5 6 .", 0), (sum_, "5 it is .", 0), (sum_, "it is 5 . <user>", 0),
               (sum_, "sorry i can not share that .", 0), (color, "it is blue .", 0)]
    tokens = encode_pairs([p for p, _, _ in replies], [t.split() for _, t, _ in replies])["tokens"]
    cut = tokens[:1].copy()
    cut[0, PROMPT_WIDTH:][cut[0, PROMPT_WIDTH:] == EOS_ID] = PAD_ID  # "it is 5 ." cut off: no EOS
    rows = np.concatenate([tokens, cut])
    want = [w for _, _, w in replies] + [0]
    close(fn(jnp.asarray(rows)), want, "exact_match of hand-read replies to 7 minus 2")
    wider = np.pad(rows, ((0, 0), (2, 0)), constant_values=PAD_ID)  # two more columns of prompt padding
    close(fn(jnp.asarray(wider), PROMPT_WIDTH + 2), want, "the same replies with prompt_width = 12")


def brute_force_pass_at_k(n: int, c: int, k: int) -> float:
    """The share of the C(n, k) ways to pick k of the n samples that hold at least one of the c right ones."""
    picks = list(itertools.combinations(range(n), k))
    return sum(any(i < c for i in pick) for pick in picks) / len(picks)


@known("pass_at_k")
def _pass_at_k(fn):
    for n, c, k in [(5, 0, 2), (5, 1, 1), (5, 1, 2), (6, 2, 3), (6, 3, 4), (8, 5, 5), (8, 8, 8)]:
        close(fn(n, c, k), brute_force_pass_at_k(n, c, k), f"pass@{k} with {c} of {n} right, against every k-subset")
    close(fn(10, 3, 1), 0.3, "pass@1 is the share of right samples, c / n")
    # one right sample in 2000, half of them drawn: C(1999, 1000) / C(2000, 1000) = 1000 / 2000, so pass@k = 1/2
    close(fn(2000, 1, 1000), 0.5, "pass@1000 with 1 of 2000 right (binomials far beyond a float's range)")
    with pytest.raises(ValueError):
        fn(4, 2, 5)  # fewer samples than draws


@known("log_weights")
def _log_weights(fn):
    # pi_sft (0.1, 0.3) on a support of mass 0.4, r = (beta ln 3, 0): weights proportional to (0.1 * 3, 0.3), 1/2 each
    beta = 0.25
    close(fn(np.log([0.1, 0.3]), np.array([beta * LN3, 0.0]), beta), np.log([0.5, 0.5]),
          "pi* of pi_sft (0.1, 0.3) and r = (beta ln 3, 0)")
    # beta -> 0: all mass on the best reward; a tie at the top shares it as pi_sft does (1 : 3)
    close(fn(np.log([0.1, 0.3, 0.2]), np.array([1.0, 1.0, 0.0]), 1e-3)[:2], np.log([0.25, 0.75]),
          "pi* at beta 0.001 with the top reward tied")
    with pytest.raises(ValueError):
        fn(np.log([0.5, 0.5]), np.zeros(2), 0.0)


@pytest.mark.parametrize("name", [e.name for e in EXERCISES])
def test_the_reference_gives_the_independently_known_answer(name):
    assert name in KNOWN, (f"exercise {name} has no independently known answer in {__file__}: add a test that "
                           f"computes its output by hand or in plain NumPy")
    KNOWN[name](reference(name))


def test_every_known_answer_belongs_to_an_exercise():
    assert set(KNOWN) <= {e.name for e in EXERCISES}, f"no exercise named {set(KNOWN) - {e.name for e in EXERCISES}}"
