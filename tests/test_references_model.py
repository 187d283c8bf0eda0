"""Independent references for the model's numbers: a NumPy GPT-2, brute-force log-probs and KL, sampling frequencies.

Every value here is recomputed from its definition in plain NumPy (or Python loops), never by calling the
library on itself, so code that is self-consistent but wrong fails: attention without 1/sqrt(d_head), layer
norm with the sample variance, ReLU for GELU, no final layer norm, KL(q || p) for KL(p || q), a sampler
that ignores the temperature or is off by one in top-k. (The noise `generate` draws, which `sample_token`
takes as an argument, is checked the same way in tests/test_sampling.py.)

The model runs in float32, the references in float64 on the same numbers; the tolerances allow for that.
"""
from functools import partial

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from scipy import stats

from minirlhf.ops import exact_kl, token_logprobs
from minirlhf.sampling import SampleConfig, sample_token
from minirlhf.transformer import (
    LN_EPS,
    ModelConfig,
    attention,
    decode_step,
    ffn,
    forward,
    init_params,
    layer_norm,
    prefill,
)

# The same config and shapes as tests/test_transformer.py, so the jitted calls below reuse its compilations.
CFG = ModelConfig(vocab_size=11, max_len=12, d_model=16, n_layers=2, n_heads=2, d_mlp=32)
ATOL = 1e-4  # float32 model vs float64 reference, on logits of order 1-10

forward_jit = jax.jit(forward, static_argnames="cfg")
layer_norm_jit, attention_jit, ffn_jit = jax.jit(layer_norm), jax.jit(attention), jax.jit(ffn)  # cheaper than eager
prefill_jit = jax.jit(prefill, static_argnames=("cfg", "cache_len"))
decode_step_jit = jax.jit(decode_step, static_argnames="cfg")


# ---------------------------------------------------------------- a GPT-2 forward in NumPy (picoGPT-style)


def np_layer_norm(x, g, b):
    mean = x.mean(axis=-1, keepdims=True)
    var = ((x - mean) ** 2).mean(axis=-1, keepdims=True)  # the biased (population) variance, as GPT-2
    return (x - mean) / np.sqrt(var + LN_EPS) * g + b


def np_gelu(x):
    return 0.5 * x * (1 + np.tanh(np.sqrt(2 / np.pi) * (x + 0.044715 * x**3)))  # GPT-2's tanh approximation


def np_softmax(x):
    e = np.exp(x - x.max(axis=-1, keepdims=True))
    return e / e.sum(axis=-1, keepdims=True)


def np_attention(q, k, v, mask):
    """q [..., T, Dh], k and v [..., S, Dh], mask [..., T, S]: softmax(q k^T / sqrt(Dh)) v over the allowed keys."""
    scores = q @ np.swapaxes(k, -1, -2) / np.sqrt(q.shape[-1])
    return np_softmax(np.where(mask, scores, -np.inf)) @ v


def np_ffn(x, c_fc, c_proj):
    return np_gelu(x @ c_fc["w"] + c_fc["b"]) @ c_proj["w"] + c_proj["b"]


def np_mha(x, mask, c_attn, c_proj, n_heads):
    T, D = x.shape
    q, k, v = np.split(x @ c_attn["w"] + c_attn["b"], 3, axis=-1)  # [T, D] each
    heads = lambda a: a.reshape(T, n_heads, D // n_heads).transpose(1, 0, 2)  # [H, T, Dh]
    out = np_attention(heads(q), heads(k), heads(v), mask)  # [H, T, Dh]
    return out.transpose(1, 0, 2).reshape(T, D) @ c_proj["w"] + c_proj["b"]


def np_gpt2(params, tokens, valid, n_heads):
    """One row: (logits [T, V], hidden [T, D]). Only the valid positions are meaningful."""
    T = len(tokens)
    positions = np.maximum(np.cumsum(valid) - 1, 0)  # left padding does not shift positions
    x = params["wte"][tokens] + params["wpe"][positions]
    # Causal and padding mask; the diagonal only gives padding queries something to read (they are not compared).
    mask = (np.tril(np.ones((T, T), bool)) & valid[None, :]) | np.eye(T, dtype=bool)
    for blk in params["blocks"]:
        x = x + np_mha(np_layer_norm(x, **blk["ln_1"]), mask, **blk["attn"], n_heads=n_heads)
        x = x + np_ffn(np_layer_norm(x, **blk["ln_2"]), **blk["mlp"])
    hidden = np_layer_norm(x, **params["ln_f"])
    return hidden @ params["wte"].T, hidden  # the output head is tied to the token embedding


@pytest.fixture(scope="module")
def params():
    """Random values in every parameter, large enough that a missing scale or a wrong nonlinearity shows.

    GPT-2's init (std 0.02, gains 1, biases 0) keeps attention scores near zero, where a missing
    1/sqrt(d) or ReLU-for-GELU barely changes the output.
    """
    rng = np.random.default_rng(0)
    template = jax.eval_shape(partial(init_params, cfg=CFG), jax.random.key(0))  # shapes only: nothing to compile

    def draw(path, leaf):
        name = path[-1].key
        if name == "g":
            return 1.0 + 0.3 * rng.normal(size=leaf.shape)
        return (0.5 if name in ("wte", "wpe") else 0.3) * rng.normal(size=leaf.shape)

    return jax.tree_util.tree_map_with_path(lambda p, x: np.asarray(draw(p, x), np.float32), template)


def as_f64(tree):
    return jax.tree.map(lambda x: np.asarray(x, np.float64), tree)


@pytest.fixture(scope="module")
def batch():
    """Three rows of 12: unpadded, left-padded by 3, left-padded by 1 and ended early (padding after slot 8)."""
    tokens = np.random.default_rng(1).integers(1, CFG.vocab_size, size=(3, CFG.max_len))
    valid = np.ones((3, CFG.max_len), bool)
    valid[1, :3] = False
    valid[2, :1] = valid[2, 9:] = False
    return np.where(valid, tokens, 0), valid


# ---------------------------------------------------------------- each layer on its own


def test_layer_norm_matches_numpy():
    rng = np.random.default_rng(2)
    x = 3.0 + 2.0 * rng.normal(size=(2, 5, CFG.d_model))
    g, b = 1 + 0.3 * rng.normal(size=CFG.d_model), 0.3 * rng.normal(size=CFG.d_model)
    got = layer_norm_jit(jnp.asarray(x, jnp.float32), jnp.asarray(g, jnp.float32), jnp.asarray(b, jnp.float32))
    np.testing.assert_allclose(got, np_layer_norm(x, g, b), atol=1e-5, err_msg=(
        "layer_norm differs from (x - mean) / sqrt(var + eps) * g + b with the population variance "
        "(mean of squares, ddof=0): sample variance, eps outside the sqrt, or g and b swapped?"))


def test_attention_matches_numpy():
    rng = np.random.default_rng(3)
    B, H, T, Dh = 2, 2, 5, 8
    q, k, v = (rng.normal(size=(B, H, T, Dh)) for _ in range(3))
    mask = np.tril(np.ones((T, T), bool))[None] & (rng.random((B, 1, T)) < 0.7)  # causal, some keys invalid
    mask |= np.eye(T, dtype=bool)  # every query may read itself, so no row is empty
    got = attention_jit(*(jnp.asarray(a, jnp.float32) for a in (q, k, v)), jnp.asarray(mask))
    np.testing.assert_allclose(got, np_attention(q, k, v, mask[:, None]), atol=1e-5, err_msg=(
        "attention differs from softmax(q k^T / sqrt(d_head)) v over the allowed keys: "
        "is the 1/sqrt(d_head) scale missing, or the mask applied after the softmax?"))


def test_ffn_matches_numpy(params):
    mlp = params["blocks"][0]["mlp"]
    x = np.random.default_rng(4).normal(size=(2, 5, CFG.d_model))
    got = ffn_jit(jnp.asarray(x, jnp.float32), **mlp)
    np.testing.assert_allclose(got, np_ffn(x, **as_f64(mlp)), atol=1e-5, err_msg=(
        "ffn differs from c_proj(gelu(c_fc(x))) with GPT-2's tanh GELU: ReLU, or the exact (erf) GELU?"))


# ---------------------------------------------------------------- the whole model, and its KV-cache path


def test_forward_matches_numpy_gpt2(params, batch):
    tokens, valid = batch
    logits, hidden = forward_jit(params, jnp.asarray(tokens), jnp.asarray(valid), CFG)
    ref = as_f64(params)
    for b in range(len(tokens)):
        ref_logits, ref_hidden = np_gpt2(ref, tokens[b], valid[b], CFG.n_heads)
        np.testing.assert_allclose(hidden[b][valid[b]], ref_hidden[valid[b]], atol=ATOL, err_msg=(
            f"row {b}: hidden states differ from a NumPy GPT-2 (pre-LN blocks, then the final layer norm ln_f)"))
        np.testing.assert_allclose(logits[b][valid[b]], ref_logits[valid[b]], atol=ATOL, err_msg=(
            f"row {b}: logits differ from a NumPy GPT-2 (positions cumsum(valid) - 1, causal + padding mask, "
            "output head h @ wte.T)"))


def test_kv_cache_decode_matches_numpy_gpt2(params, batch):
    tokens, valid = batch
    prompt_len = 4
    ref = as_f64(params)
    expected = [np_gpt2(ref, tokens[b], valid[b], CFG.n_heads)[0] for b in range(len(tokens))]  # [T, V] per row
    _, _, cache = prefill_jit(params, jnp.asarray(tokens[:, :prompt_len]), jnp.asarray(valid[:, :prompt_len]), CFG,
                              cache_len=CFG.max_len)
    for t in range(prompt_len, CFG.max_len):
        valid_so_far = jnp.asarray(valid & (np.arange(CFG.max_len) <= t))
        step_logits, _, cache = decode_step_jit(params, cache, jnp.asarray(tokens[:, t]), t, valid_so_far, CFG)
        for b in np.flatnonzero(valid[:, t]):
            np.testing.assert_allclose(step_logits[b], expected[b][t], atol=ATOL, err_msg=(
                f"decode_step at slot {t}, row {b}: logits differ from a NumPy GPT-2 over the whole row"))


# ---------------------------------------------------------------- token log-probs and exact KL, by brute force


def brute_log_softmax(z):
    """log softmax of one logits vector, element by element in plain Python."""
    top = max(z)
    log_norm = top + np.log(sum(np.exp(zi - top) for zi in z))
    return [zi - log_norm for zi in z]


def test_token_logprobs_matches_brute_force():
    rng = np.random.default_rng(5)
    B, T, V, temperature = 2, 5, 7, 0.7
    logits = 2.0 * rng.normal(size=(B, T, V))
    tokens = rng.integers(0, V, size=(B, T))
    got = np.asarray(token_logprobs(jnp.asarray(logits, jnp.float32), jnp.asarray(tokens), temperature))
    for b in range(B):
        assert got[b, 0] == 0.0, "position 0 has no context: its log-prob must be 0"
        for t in range(1, T):
            expected = brute_log_softmax(logits[b, t - 1] / temperature)[tokens[b, t]]
            assert got[b, t] == pytest.approx(expected, abs=1e-5), (
                f"[{b}, {t}]: expected log softmax(logits[t-1] / T)[token t]; shift by one or temperature wrong?")


@pytest.mark.parametrize("temperature", [1.0, 0.6])
def test_exact_kl_matches_brute_force_and_has_the_right_direction(temperature):
    rng = np.random.default_rng(6)
    B, T, V = 2, 4, 6
    logits_p = 3.0 * rng.normal(size=(B, T, V))  # sharp p ...
    logits_q = 0.5 * rng.normal(size=(B, T, V))  # ... against a flat q, so KL(p||q) and KL(q||p) differ
    got = np.asarray(exact_kl(jnp.asarray(logits_p, jnp.float32), jnp.asarray(logits_q, jnp.float32), temperature))
    for b in range(B):
        assert got[b, 0] == 0.0, "position 0 gets KL 0, like token_logprobs"
        for t in range(1, T):
            logp = brute_log_softmax(logits_p[b, t - 1] / temperature)
            logq = brute_log_softmax(logits_q[b, t - 1] / temperature)
            forward_kl = sum(np.exp(lp) * (lp - lq) for lp, lq in zip(logp, logq))
            reverse_kl = sum(np.exp(lq) * (lq - lp) for lp, lq in zip(logp, logq))
            assert abs(forward_kl - reverse_kl) > 0.1, "test data too symmetric to tell KL(p||q) from KL(q||p)"
            assert got[b, t] == pytest.approx(forward_kl, abs=1e-4), (
                f"[{b}, {t}]: expected KL(p || q) = sum_v p(v) (log p(v) - log q(v)) from the logits at t-1 "
                f"divided by T={temperature}" + (" (this is KL(q || p): reversed)"
                                                 if got[b, t] == pytest.approx(reverse_kl, abs=1e-4) else ""))


# ---------------------------------------------------------------- sampling frequencies


LOGITS = np.array([1.0, 0.2, -0.5, 2.0, -1.5, 0.7])  # a fixed logits vector, not sorted (so top-k is not a prefix)
N_DRAWS = 20_000
MIN_P_VALUE = 1e-4  # a right sampler passes (fixed seeds); the wrong ones tried give p-values below 1e-30


def target_probs(temperature, top_k=None):
    """softmax(LOGITS / T), restricted to the k largest logits and renormalised when top_k is set."""
    p = np_softmax(LOGITS / temperature)
    if top_k is not None:
        p = np.where(np.argsort(np.argsort(-LOGITS)) < top_k, p, 0.0)
        p = p / p.sum()
    return p


def check_frequencies(tokens, probs, what):
    counts = np.bincount(np.asarray(tokens).reshape(-1), minlength=len(probs))
    outside = counts[probs == 0].sum()
    assert outside == 0, f"{what}: {outside} draws of tokens that should have probability 0 (outside the top k?)"
    support = probs > 0
    test = stats.chisquare(counts[support], counts.sum() * probs[support])
    assert test.pvalue > MIN_P_VALUE, (
        f"{what}: token frequencies {np.round(counts / counts.sum(), 3)} do not follow {np.round(probs, 3)} "
        f"(chi-square p = {test.pvalue:.1e}): Gumbel noise, temperature and top-k must give softmax(logits / T)")


@pytest.fixture(scope="module")
def gumbel():
    """Fresh Gumbel noise for N_DRAWS draws from the same logits row (each config below reuses it)."""
    return jax.random.gumbel(jax.random.key(10), (N_DRAWS, len(LOGITS)))


@pytest.mark.parametrize("temperature, top_k", [(1.0, None), (0.5, None), (2.0, None), (1.0, 3), (2.0, 2)])
def test_sample_token_frequencies_follow_softmax_over_temperature(gumbel, temperature, top_k):
    # Called eagerly: its few ops compile once for all five configs, a jitted call would compile five times.
    logits = jnp.broadcast_to(jnp.asarray(LOGITS, jnp.float32), gumbel.shape)
    tokens, logprobs = sample_token(logits, gumbel, SampleConfig(temperature=temperature, top_k=top_k))
    check_frequencies(tokens, target_probs(temperature, top_k), f"sample_token at T={temperature}, top_k={top_k}")
    full = np.log(np_softmax(LOGITS / temperature))  # the returned log-prob ignores top-k (SampleConfig.top_k)
    np.testing.assert_allclose(logprobs, full[np.asarray(tokens)], atol=1e-5, err_msg=(
        "the returned log-prob must be log softmax(logits / T)[token] over the full vocabulary"))
