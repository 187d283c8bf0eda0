"""Tests for minirlhf.sampling: EOS handling, keys, log-probs, greedy decoding, and compilation."""
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from scipy import stats

from minirlhf import sampling
from minirlhf.ops import token_logprobs
from minirlhf.data import response_mask
from minirlhf.sampling import Generation, SampleConfig, generate
from minirlhf.transformer import ModelConfig, forward, init_params

# A small vocabulary, so that random weights emit EOS often enough to exercise it.
CFG = ModelConfig(vocab_size=6, max_len=16, d_model=16, n_layers=2, n_heads=2, d_mlp=32)
PAD, EOS = 0, 2
P = 5  # prompt width
SAMPLE = SampleConfig(max_new_tokens=8, temperature=1.5)

forward_jit = jax.jit(forward, static_argnames="cfg")


@pytest.fixture(scope="module")
def params():
    return jax.jit(init_params, static_argnums=1)(jax.random.key(0), CFG)


@pytest.fixture(scope="module")
def prompts():
    """Left-padded prompts: row b has b pads in front (so some rows are shorter)."""
    tokens = jax.random.randint(jax.random.key(1), (4, P), 3, CFG.vocab_size)
    valid = jnp.arange(P)[None, :] >= jnp.arange(4)[:, None]  # [4, P]
    return jnp.where(valid, tokens, PAD), valid


def sample(params, prompts, seed, sample_cfg=SAMPLE) -> Generation:
    return generate(params, *prompts, jax.random.key(seed), CFG, sample_cfg, EOS, PAD)


def test_shapes_and_prompt_kept(params, prompts):
    gen = sample(params, prompts, 0)
    R = SAMPLE.max_new_tokens
    assert gen.tokens.shape == gen.valid.shape == gen.logprobs.shape == (4, P + R)
    np.testing.assert_array_equal(gen.tokens[:, :P], prompts[0], err_msg="the prompt must be copied unchanged")
    np.testing.assert_array_equal(gen.valid[:, :P], prompts[1])
    assert (gen.logprobs[:, :P] == 0).all(), "log-probs of prompt tokens should be 0 (we did not sample them)"


def test_everything_after_eos_is_invalid_padding(params, prompts):
    ended_early = 0
    for seed in range(5):
        gen = jax.device_get(sample(params, prompts, seed))
        for row_tokens, row_valid, row_logprobs in zip(gen.tokens[:, P:], gen.valid[:, P:], gen.logprobs[:, P:]):
            eos_at = np.flatnonzero(row_tokens == EOS)
            end = eos_at[0] + 1 if eos_at.size else len(row_tokens)  # one past the EOS: EOS itself is valid
            assert row_valid[:end].all(), "response tokens up to and including EOS must be valid"
            assert not row_valid[end:].any(), "tokens after EOS must be marked invalid"
            assert (row_tokens[end:] == PAD).all(), "tokens after EOS must be pad_id"
            assert (row_logprobs[end:] == 0).all(), "log-probs after EOS must be 0"
            ended_early += end < len(row_tokens)
    assert ended_early > 0, "no row emitted EOS before the end: this test checked nothing"


def test_same_key_same_output_different_key_different_output(params, prompts):
    a, b, c = sample(params, prompts, 7), sample(params, prompts, 7), sample(params, prompts, 8)
    np.testing.assert_array_equal(a.tokens, b.tokens)
    np.testing.assert_array_equal(a.logprobs, b.logprobs)
    assert (a.tokens != c.tokens).any(), "different keys gave identical samples: is the key used at all?"


def test_logprobs_match_full_forward(params, prompts):
    gen = sample(params, prompts, 3)
    logits, _ = forward_jit(params, gen.tokens, gen.valid, CFG)
    expected = token_logprobs(logits, gen.tokens, SAMPLE.temperature)
    mask = response_mask(gen.valid, P)
    np.testing.assert_allclose(
        jnp.where(mask, gen.logprobs, 0.0), jnp.where(mask, expected, 0.0), atol=1e-5,
        err_msg="sampling log-probs differ from re-scoring the sequence: temperature forgotten, or KV cache off?",
    )


def test_top_k_logprobs_use_the_full_distribution(params, prompts):
    top2 = SampleConfig(max_new_tokens=8, temperature=1.5, top_k=2)
    gen = sample(params, prompts, 4, top2)
    logits, _ = forward_jit(params, gen.tokens, gen.valid, CFG)
    mask = response_mask(gen.valid, P)
    expected = token_logprobs(logits, gen.tokens, top2.temperature)  # full vocabulary, not renormalised over 2
    np.testing.assert_allclose(jnp.where(mask, gen.logprobs, 0.0), jnp.where(mask, expected, 0.0), atol=1e-5)
    # every sampled token is among the 2 most likely ones
    chosen = jnp.take_along_axis(logits[:, :-1], gen.tokens[:, 1:, None], axis=-1)  # [B, T-1, 1]
    rank = (logits[:, :-1] > chosen).sum(-1)  # [B, T-1]: how many tokens were more likely
    assert (rank[mask[:, 1:]] < 2).all(), "top_k=2 sampled a token outside the top 2"


def pinned_logits_params(params, logits):
    """The same model with its logits pinned to `logits`, whatever it reads.

    ln_f's gain 0 and bias e_0 make every final hidden state e_0; the tied head then gives e_0 @ wte.T = wte[:, 0].
    """
    e0 = jnp.zeros(CFG.d_model).at[0].set(1.0)
    return {**params, "wte": params["wte"].at[:, 0].set(logits), "ln_f": {"g": jnp.zeros(CFG.d_model), "b": e0}}


def chi_square_p_value(samples, probs):
    counts = np.bincount(np.asarray(samples).reshape(-1), minlength=len(probs))
    return stats.chisquare(counts, counts.sum() * probs).pvalue


def test_generated_tokens_follow_softmax_over_temperature(params, prompts):
    """With pinned logits every response token is an independent draw from softmax(logits / T).

    A sampler with uniform instead of Gumbel noise, a forgotten temperature, or noise reused across
    steps or rows gives a chi-square p-value far below the threshold; the right one passes (fixed seeds).
    """
    logits = np.array([1.0, 0.2, -30.0, 2.0, -1.5, 0.7])  # EOS (id 2) is never drawn: every row runs all 8 steps
    pinned = pinned_logits_params(params, jnp.asarray(logits, jnp.float32))
    # Many calls with the shapes of the tests above reuse their compilation; 256 x 4 rows x 8 steps = 8192 draws.
    gens = jax.device_get([sample(pinned, prompts, seed) for seed in range(256)])
    response = np.concatenate([g.tokens[:, P:] for g in gens])  # [1024, 8]
    probs = np.exp(logits / SAMPLE.temperature) / np.exp(logits / SAMPLE.temperature).sum()
    p_value = chi_square_p_value(response, probs)
    assert p_value > 1e-4, (
        f"token frequencies {np.round(np.bincount(response.reshape(-1), minlength=6) / response.size, 3)} do not "
        f"follow softmax(logits / T) = {np.round(probs, 3)} (chi-square p = {p_value:.1e}): is the noise Gumbel, "
        "and are the logits divided by the temperature?")
    # Fresh noise for every row and every step: rows of one call differ, and disjoint pairs of consecutive
    # tokens follow the product distribution.
    same_rows = np.mean([(g.tokens[0, P:] == g.tokens[1, P:]).all() for g in gens])  # ~1e-5 for i.i.d. rows
    assert same_rows < 0.01, f"rows 0 and 1 drew the same response in {same_rows:.0%} of calls: noise shared by rows?"
    pairs = response[:, 0::2] * len(logits) + response[:, 1::2]
    p_value = chi_square_p_value(pairs, np.outer(probs, probs).reshape(-1))
    assert p_value > 1e-4, (
        f"consecutive tokens are not independent (chi-square p = {p_value:.1e}): is the noise reused across steps?")
    logprobs = np.concatenate([g.logprobs[:, P:] for g in gens])
    np.testing.assert_allclose(logprobs, np.log(probs)[response], atol=1e-5, err_msg=(
        "the returned log-probs must be log softmax(logits / T) of the drawn tokens"))


def greedy_reference(params, prompt_tokens, prompt_valid, max_new_tokens):
    """Plain Python loop: re-run the full forward on the whole sequence each step, take the argmax.

    The sequence lives in a fixed-width buffer (slots not yet generated are invalid padding, which
    causal attention never reads), so `forward` compiles once.
    """
    B = prompt_tokens.shape[0]
    tokens = jnp.concatenate([prompt_tokens, jnp.full((B, max_new_tokens), PAD)], axis=1)
    valid = jnp.concatenate([prompt_valid, jnp.zeros((B, max_new_tokens), bool)], axis=1)
    done = jnp.zeros(B, bool)
    for t in range(P, P + max_new_tokens):
        logits, _ = forward_jit(params, tokens, valid, CFG)
        token = jnp.where(done, PAD, jnp.argmax(logits[:, t - 1], axis=-1))  # logits at t-1 predict slot t
        tokens, valid = tokens.at[:, t].set(token), valid.at[:, t].set(~done)
        done = done | (token == EOS)
    return tokens, valid


def test_greedy_matches_plain_loop_over_full_forward(params, prompts):
    greedy = SampleConfig(max_new_tokens=8, top_k=1)
    gen = sample(params, prompts, 5, greedy)
    tokens, valid = greedy_reference(params, *prompts, greedy.max_new_tokens)
    np.testing.assert_array_equal(gen.tokens, tokens, err_msg="scan + KV cache disagrees with the plain loop")
    np.testing.assert_array_equal(gen.valid, valid)
    other_key = sample(params, prompts, 6, greedy)
    np.testing.assert_array_equal(gen.tokens, other_key.tokens, err_msg="top_k=1 should not depend on the key")
    tiny_temperature = sample(params, prompts, 5, SampleConfig(max_new_tokens=8, temperature=1e-4))
    np.testing.assert_array_equal(tiny_temperature.tokens, tokens, err_msg="temperature -> 0 should be greedy")


def test_left_padding_does_not_change_greedy_response(params, prompts):
    greedy = SampleConfig(max_new_tokens=8, top_k=1)
    gen = sample(params, prompts, 0, greedy)
    row = 2  # two pads in front; the same prompt without them should get the same response
    unpadded = (prompts[0][row : row + 1, row:], prompts[1][row : row + 1, row:])
    alone = sample(params, unpadded, 0, greedy)
    np.testing.assert_array_equal(alone.tokens[0, P - row :], gen.tokens[row, P:])


def test_no_recompilation_when_only_data_changes(params, prompts):
    sample(params, prompts, 0)
    compiled = sampling._generate._cache_size()
    new_tokens = jax.random.randint(jax.random.key(9), prompts[0].shape, 3, CFG.vocab_size)
    sample(params, (new_tokens, prompts[1]), 1)
    sample(jax.tree.map(lambda x: x + 0.01, params), (new_tokens, ~prompts[1] | True), 2)
    assert sampling._generate._cache_size() == compiled, "generate recompiled for new data: is a data argument marked static?"


def test_too_long_raises_clear_error(params, prompts):
    R = CFG.max_len - P + 1
    with pytest.raises(ValueError, match=rf"prompt width {P} \+ max_new_tokens {R} exceeds ModelConfig.max_len="):
        sample(params, prompts, 0, SampleConfig(max_new_tokens=R))


def test_sample_config_validation():
    SampleConfig(max_new_tokens=1)  # one new token is a valid request
    with pytest.raises(ValueError, match="max_new_tokens must be at least 1"):
        SampleConfig(max_new_tokens=0)
    with pytest.raises(ValueError, match="temperature"):
        SampleConfig(temperature=0.0)
    with pytest.raises(ValueError, match="top_k"):
        SampleConfig(top_k=0)


def test_response_mask():
    valid = jnp.array([[False, True, True, True, False], [True, True, True, False, False]])
    expected = jnp.array([[False, False, True, True, False], [False, False, True, False, False]])
    np.testing.assert_array_equal(response_mask(valid, 2), expected)
