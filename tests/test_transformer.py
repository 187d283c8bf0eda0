"""Tests for minirlhf.transformer: shapes, causality, padding, the KV cache, and clear errors."""
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from minirlhf.transformer import (
    ModelConfig,
    check_tokens,
    decode_step,
    forward,
    init_params,
    init_scalar_head,
    prefill,
    scalar_head,
)

CFG = ModelConfig(vocab_size=11, max_len=12, d_model=16, n_layers=2, n_heads=2, d_mlp=32)
PAD = 0
ATOL = 1e-5

# Jitted once here: run eagerly, every primitive would be compiled on its own and the tests would crawl.
forward_jit = jax.jit(forward, static_argnames="cfg")
prefill_jit = jax.jit(prefill, static_argnames=("cfg", "cache_len"))
decode_step_jit = jax.jit(decode_step, static_argnames="cfg")


@pytest.fixture(scope="module")
def params():
    return jax.jit(init_params, static_argnums=1)(jax.random.key(0), CFG)


def random_tokens(seed, batch, seq):
    return jax.random.randint(jax.random.key(seed), (batch, seq), 1, CFG.vocab_size)


def left_pad(tokens, n_pad):
    """Shift a row right by n_pad, filling the front with padding."""
    padded = jnp.concatenate([jnp.full((tokens.shape[0], n_pad), PAD), tokens[:, : tokens.shape[1] - n_pad]], axis=1)
    valid = jnp.arange(tokens.shape[1])[None, :] >= n_pad
    return padded, jnp.broadcast_to(valid, tokens.shape)


def test_param_shapes(params):
    D, V = CFG.d_model, CFG.vocab_size
    assert params["wte"].shape == (V, D)
    assert params["wpe"].shape == (CFG.max_len, D)
    assert len(params["blocks"]) == CFG.n_layers
    block = params["blocks"][0]
    assert block["attn"]["c_attn"]["w"].shape == (D, 3 * D)
    assert block["attn"]["c_proj"]["w"].shape == (D, D)
    assert block["mlp"]["c_fc"]["w"].shape == (D, CFG.d_mlp)
    assert block["mlp"]["c_proj"]["w"].shape == (CFG.d_mlp, D)
    assert block["ln_1"]["g"].shape == block["ln_2"]["b"].shape == params["ln_f"]["g"].shape == (D,)
    assert "lm_head" not in params, "the output projection is tied to wte; there is no separate head"


def test_forward_shapes_and_scalar_head(params):
    tokens = random_tokens(1, 3, 7)
    logits, hidden = forward_jit(params, tokens, jnp.ones_like(tokens, bool), CFG)
    assert logits.shape == (3, 7, CFG.vocab_size) and hidden.shape == (3, 7, CFG.d_model)
    assert logits.dtype == jnp.float32, "activations should stay float32 (is jax_enable_x64 on?)"
    head = init_scalar_head(jax.random.key(1), CFG)
    assert head["w"].shape == (CFG.d_model,) and head["b"].shape == ()
    head = {**head, "b": jnp.array(0.5)}  # a nonzero bias, so leaving it out shows
    expected = np.asarray(hidden, np.float64) @ np.asarray(head["w"], np.float64) + 0.5
    np.testing.assert_allclose(scalar_head(head, hidden), expected, atol=1e-6,
                               err_msg="scalar_head is hidden . w + b at every position")


def test_init_scales(params):
    """GPT-2's init: weights N(0, init_std^2), the two projections into the residual stream scaled by
    1/sqrt(2 n_layers), biases 0, layer-norm gains 1 (GPT-2 paper, sec. 2.3)."""
    out_std = CFG.init_std / np.sqrt(2 * CFG.n_layers)
    block = params["blocks"][0]
    for name, w, std in [("wte", params["wte"], CFG.init_std), ("c_attn.w", block["attn"]["c_attn"]["w"], CFG.init_std),
                         ("mlp.c_fc.w", block["mlp"]["c_fc"]["w"], CFG.init_std),
                         ("attn.c_proj.w", block["attn"]["c_proj"]["w"], out_std),
                         ("mlp.c_proj.w", block["mlp"]["c_proj"]["w"], out_std)]:
        assert np.std(np.asarray(w)) == pytest.approx(std, rel=0.15), f"{name} should have std {std:.4f}"
    for name, b in [("c_attn.b", block["attn"]["c_attn"]["b"]), ("mlp.c_proj.b", block["mlp"]["c_proj"]["b"])]:
        assert not np.asarray(b).any(), f"{name}: biases start at 0"
    assert (np.asarray(params["ln_f"]["g"]) == 1).all() and not np.asarray(params["ln_f"]["b"]).any(), (
        "layer norms start as the identity: gain 1, bias 0")


def test_causal_future_tokens_do_not_change_past_logits(params):
    tokens = random_tokens(2, 2, 10)
    valid = jnp.ones_like(tokens, bool).at[1, :3].set(False)  # row 1 left-padded: padding must be causal too
    logits, _ = forward_jit(params, tokens, valid, CFG)
    for t in range(1, 10):
        changed = tokens.at[:, t].set((tokens[:, t] + 1) % CFG.vocab_size)
        changed_logits, _ = forward_jit(params, changed, valid, CFG)
        np.testing.assert_allclose(
            changed_logits[:, :t], logits[:, :t], atol=ATOL,
            err_msg=f"changing the token at position {t} changed earlier logits: "
            "is the causal mask missing or off by one?",
        )


def test_left_padding_does_not_change_logits_of_real_tokens(params):
    tokens = random_tokens(3, 2, 10)
    logits, _ = forward_jit(params, tokens, jnp.ones_like(tokens, bool), CFG)
    for n_pad in (1, 4):
        padded, valid = left_pad(tokens, n_pad)
        padded_logits, _ = forward_jit(params, padded, valid, CFG)
        np.testing.assert_allclose(
            padded_logits[:, n_pad:], logits[:, : 10 - n_pad], atol=ATOL,
            err_msg="left padding changed the logits: are positions counted over valid tokens, and pads masked?",
        )


def test_kv_cache_decode_matches_full_forward(params):
    tokens = random_tokens(4, 3, CFG.max_len)
    valid = jnp.ones_like(tokens, bool)
    valid = valid.at[1, :2].set(False)  # left-padded prompt
    valid = valid.at[2, 8:].set(False)  # a response that ended: padding after it
    full_logits, full_hidden = forward_jit(params, tokens, valid, CFG)

    prompt_len = 4
    prompt, prompt_valid = tokens[:, :prompt_len], valid[:, :prompt_len]
    logits, hidden, cache = prefill_jit(params, prompt, prompt_valid, CFG, cache_len=CFG.max_len)
    np.testing.assert_allclose(logits, full_logits[:, :prompt_len], atol=ATOL, err_msg="prefill differs from forward")
    for t in range(prompt_len, CFG.max_len):
        valid_so_far = valid & (jnp.arange(CFG.max_len) <= t)
        step_logits, step_hidden, cache = decode_step_jit(params, cache, tokens[:, t], t, valid_so_far, CFG)
        np.testing.assert_allclose(
            step_logits, full_logits[:, t], atol=ATOL, err_msg=f"decode step at slot {t} differs from forward"
        )
        np.testing.assert_allclose(step_hidden, full_hidden[:, t], atol=ATOL)
    assert cache[0].k.shape == (3, CFG.n_heads, CFG.max_len, CFG.d_model // CFG.n_heads)


def test_all_padding_rows_give_no_nan(params):
    tokens = jnp.full((2, 6), PAD)
    valid = jnp.zeros((2, 6), bool)
    logits, hidden = forward_jit(params, tokens, valid, CFG)
    assert jnp.isfinite(logits).all() and jnp.isfinite(hidden).all(), "all-padding rows gave NaN/inf (finite NEG_INF?)"
    grads = jax.jit(jax.grad(lambda p: forward(p, tokens, valid, CFG)[0].sum()))(params)
    assert all(jnp.isfinite(g).all() for g in jax.tree.leaves(grads)), "gradients through all-padding rows not finite"


@pytest.mark.parametrize(
    "tokens, valid, message",
    [
        (jnp.ones(5, int), jnp.ones(5, bool), "2-D"),
        (jnp.ones((1, 5)), jnp.ones((1, 5), bool), "integer"),
        (jnp.ones((1, CFG.max_len + 1), int), jnp.ones((1, CFG.max_len + 1), bool), "max_len"),
        (jnp.ones((1, 5), int), jnp.ones((1, 4), bool), "valid"),
        (jnp.ones((1, 5), int), jnp.ones((1, 5), int), "valid"),
    ],
    ids=["1-D tokens", "float tokens", "too long", "valid shape", "valid not bool"],
)
def test_bad_inputs_raise_clear_errors(params, tokens, valid, message):
    with pytest.raises(ValueError, match=message):
        forward(params, tokens, valid, CFG)


@pytest.mark.parametrize("bad_id", [CFG.vocab_size, -1])
def test_out_of_vocab_ids_are_reported(params, bad_id):
    tokens = jnp.array([[1, 2, bad_id, 3]])
    with pytest.raises(ValueError, match=rf"token id {bad_id} .*vocab_size={CFG.vocab_size}"):
        check_tokens(tokens, CFG)
    with pytest.raises(ValueError, match="out of range"):  # forward checks concrete ids itself
        forward(params, tokens, jnp.ones_like(tokens, bool), CFG)
    check_tokens(jnp.array([[0, CFG.vocab_size - 1]]), CFG)  # the edges are fine


def test_config_validation():
    with pytest.raises(ValueError, match="divisible"):
        ModelConfig(vocab_size=8, d_model=10, n_heads=4)
    with pytest.raises(ValueError, match="positive"):
        ModelConfig(vocab_size=0)
    with pytest.raises(ValueError, match="cache_len"):
        tokens = jnp.ones((1, 4), int)
        prefill({}, tokens, tokens > 0, CFG, cache_len=CFG.max_len + 1)
