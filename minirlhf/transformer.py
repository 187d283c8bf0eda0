"""A GPT-2 style decoder in plain JAX: parameters are a nested dict, every layer a pure function.

    x = wte[token] + wpe[position]
    x = x + attn(ln_1(x));  x = x + mlp(ln_2(x))      (n_layers times, "pre-LN")
    logits = ln_f(x) @ wte.T                            (output embedding tied to the input one)

Padding: a batch is `tokens [B, T]` with `valid [B, T]` (False on padding). Prompts are left-padded,
so positions are counted over valid tokens only (`cumsum(valid) - 1`): a row with pads in front
sees exactly what the unpadded row sees. A query attends to a key iff the key is not in its future
AND the key is valid.

One function, `transformer`, serves three callers. It writes the new keys/values into a KV cache
at slot `start` and attends over the whole cache:
  forward      the cache is empty and exactly as long as the sequence (training, scoring);
  prefill      the cache is longer than the prompt, with room for the tokens to be generated;
  decode_step  one new token per row, written at slot `start` (sampling).
"""
from __future__ import annotations

import functools
import math
from dataclasses import dataclass
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
from jaxtyping import Array, Bool, Float, Int

from minirlhf.ops import NEG_INF

LN_EPS = 1e-5  # layer norm's variance floor, as in GPT-2


@dataclass(frozen=True)
class ModelConfig:
    vocab_size: int = 64
    """Number of token ids; ids must lie in [0, vocab_size)."""
    max_len: int = 48
    """Number of learned positions: the longest sequence (prompt + response) the model can read."""
    d_model: int = 64
    """Width of the residual stream."""
    n_layers: int = 2
    """Number of transformer blocks."""
    n_heads: int = 4
    """Attention heads per block; each head has d_model // n_heads dimensions."""
    d_mlp: int = 256
    """Hidden width of each block's MLP (GPT-2 uses 4 * d_model)."""
    init_std: float = 0.02
    """Standard deviation of the normal initialisation of weight matrices (GPT-2's value)."""

    def __post_init__(self):
        for name in ("vocab_size", "max_len", "d_model", "n_layers", "n_heads", "d_mlp"):
            if getattr(self, name) <= 0:
                raise ValueError(f"ModelConfig.{name} must be positive, got {getattr(self, name)}")
        if self.d_model % self.n_heads:
            raise ValueError(f"d_model={self.d_model} must be divisible by n_heads={self.n_heads}")
        if self.init_std <= 0:
            raise ValueError(f"ModelConfig.init_std must be positive, got {self.init_std}")


class KVCache(NamedTuple):
    """One layer's keys and values for every slot of the sequence; a model's cache is a list of these."""

    k: Float[Array, "batch heads cache_len head_dim"]
    v: Float[Array, "batch heads cache_len head_dim"]


# ---------------------------------------------------------------- parameters


def init_linear(key, d_in: int, d_out: int, std: float) -> dict:
    return {"w": std * jax.random.normal(key, (d_in, d_out)), "b": jnp.zeros(d_out)}


def init_layer_norm(d: int) -> dict:
    return {"g": jnp.ones(d), "b": jnp.zeros(d)}


def init_block(key, cfg: ModelConfig) -> dict:
    k_qkv, k_attn_out, k_fc, k_mlp_out = jax.random.split(key, 4)
    # The two projections that write into the residual stream are scaled down (GPT-2 paper, sec. 2.3),
    # so the stream's variance does not grow with depth.
    out_std = cfg.init_std / math.sqrt(2 * cfg.n_layers)
    D = cfg.d_model
    return {
        "ln_1": init_layer_norm(D),
        "attn": {
            "c_attn": init_linear(k_qkv, D, 3 * D, cfg.init_std),  # q, k, v side by side
            "c_proj": init_linear(k_attn_out, D, D, out_std),
        },
        "ln_2": init_layer_norm(D),
        "mlp": {
            "c_fc": init_linear(k_fc, D, cfg.d_mlp, cfg.init_std),
            "c_proj": init_linear(k_mlp_out, cfg.d_mlp, D, out_std),
        },
    }


def init_params(key, cfg: ModelConfig) -> dict:
    k_wte, k_wpe, *k_blocks = jax.random.split(key, 2 + cfg.n_layers)
    return {
        "wte": cfg.init_std * jax.random.normal(k_wte, (cfg.vocab_size, cfg.d_model)),  # [V, D]
        "wpe": cfg.init_std * jax.random.normal(k_wpe, (cfg.max_len, cfg.d_model)),  # [max_len, D]
        "blocks": [init_block(k, cfg) for k in k_blocks],
        "ln_f": init_layer_norm(cfg.d_model),
    }


def init_scalar_head(key, cfg: ModelConfig) -> dict:
    """A linear map from the final hidden state to one number per token (value or reward)."""
    return {"w": cfg.init_std * jax.random.normal(key, (cfg.d_model,)), "b": jnp.zeros(())}


def scalar_head(head: dict, hidden: Float[Array, "batch seq d_model"]) -> Float[Array, "batch seq"]:
    return hidden @ head["w"] + head["b"]


# ---------------------------------------------------------------- layers


def linear(
    x: Float[Array, "... d_in"], w: Float[Array, "d_in d_out"], b: Float[Array, " d_out"]
) -> Float[Array, "... d_out"]:
    # Flattened to one matrix product: the weight gradient then sums over a single axis. With
    # [B, T, d_in] it sums over two, and XLA on CPU copies transposed activations to do that
    # (measured at the bench size: the whole training step ~35% slower).
    y = x.reshape(-1, x.shape[-1]) @ w  # [B*T, d_out]
    return y.reshape(*x.shape[:-1], w.shape[-1]) + b


def layer_norm(x: Float[Array, "... d"], g: Float[Array, " d"], b: Float[Array, " d"]) -> Float[Array, "... d"]:
    centered = x - jnp.mean(x, axis=-1, keepdims=True)  # [..., d]
    var = jnp.mean(centered * centered, axis=-1, keepdims=True)  # [..., 1]
    return centered * jax.lax.rsqrt(var + LN_EPS) * g + b


def ffn(x: Float[Array, "batch seq d_model"], c_fc: dict, c_proj: dict) -> Float[Array, "batch seq d_model"]:
    return linear(jax.nn.gelu(linear(x, **c_fc)), **c_proj)  # [B, T, d_mlp] -> [B, T, D]; GPT-2's tanh GELU


def embed(tokens: Int[Array, "batch seq"], positions: Int[Array, "batch seq"], wte, wpe) -> Float[Array, "batch seq d"]:
    # A plain lookup. Its gradient is a scatter-add, which on XLA:CPU used to be slow enough that
    # `one_hot(tokens) @ wte` was the faster way. Measured with jax 0.10 on CPU, the lookup wins:
    # embedding forward+backward 0.3 ms vs 1.2 ms for the one-hot product; the training step ~9% faster.
    return wte[tokens] + wpe[positions]  # [B, T, D]


def causal_valid(valid_keys: Bool[Array, "batch slots"], n_queries: int, start) -> Bool[Array, "batch seq slots"]:
    """[b, t, s]: query t, sitting in slot start + t, may read slot s (s <= start + t, and slot s is valid)."""
    slots = jnp.arange(valid_keys.shape[1])  # [S]
    causal = slots[None, :] <= start + jnp.arange(n_queries)[:, None]  # [T, S]
    return causal[None] & valid_keys[:, None, :]  # [B, T, S]


def attention(q, k, v, mask: Bool[Array, "batch seq slots"]) -> Float[Array, "batch heads seq head_dim"]:
    """softmax(q k^T / sqrt(d_head)) v over the allowed slots (Vaswani et al. 2017, eq. 1)."""
    scores = jnp.einsum("bhtd,bhsd->bhts", q, k) / math.sqrt(q.shape[-1])  # [B, H, T, S]
    scores = jnp.where(mask[:, None], scores, NEG_INF)  # finite, so a fully masked row is no NaN
    # softmax, with the division moved after the product with v: it then touches [.., T, Dh]
    # instead of [.., T, S] (training step ~9% faster than jax.nn.softmax). The max only guards exp
    # against overflow; it cancels out of the result, so it needs no gradient.
    weights = jnp.exp(scores - jax.lax.stop_gradient(jnp.max(scores, axis=-1, keepdims=True)))  # [B, H, T, S]
    return jnp.einsum("bhts,bhsd->bhtd", weights, v) / jnp.sum(weights, axis=-1)[..., None]  # [B, H, T, Dh]


def mha(x, mask, cache: KVCache, start, c_attn: dict, c_proj: dict, n_heads: int):
    """Multi-head self-attention whose new keys/values are written into `cache` at slot `start`."""
    B, T, D = x.shape
    heads = lambda a: a.reshape(B, T, n_heads, D // n_heads).transpose(0, 2, 1, 3)  # [B, T, D] -> [B, H, T, Dh]
    q, k, v = map(heads, jnp.split(linear(x, **c_attn), 3, axis=-1))  # [B, H, T, Dh] each
    k = jax.lax.dynamic_update_slice_in_dim(cache.k, k, start, axis=2)  # [B, H, S, Dh]
    v = jax.lax.dynamic_update_slice_in_dim(cache.v, v, start, axis=2)  # [B, H, S, Dh]
    out = attention(q, k, v, mask).transpose(0, 2, 1, 3).reshape(B, T, D)  # [B, T, D]
    return linear(out, **c_proj), KVCache(k, v)


def block(x, mask, cache: KVCache, start, ln_1, attn, ln_2, mlp, n_heads: int):
    h, cache = mha(layer_norm(x, **ln_1), mask, cache, start, **attn, n_heads=n_heads)
    x = x + h  # [B, T, D]
    x = x + ffn(layer_norm(x, **ln_2), **mlp)  # [B, T, D]
    return x, cache


def transformer(params: dict, tokens, valid_keys, cache: list[KVCache], start, cfg: ModelConfig):
    """Run `tokens [B, T]`, sitting in slots start..start+T-1 of a sequence whose validity is `valid_keys [B, S]`."""
    B, T = tokens.shape
    sees = causal_valid(valid_keys, T, start)  # [B, T, S]
    # Position = number of valid tokens up to here, minus one (i.e. cumsum(valid) - 1): left padding
    # does not shift positions.
    positions = jnp.maximum(jnp.sum(sees, axis=-1) - 1, 0)  # [B, T]
    # Each query may also read its own slot. Nothing changes for valid tokens, but a padding query
    # with no valid slot in view would otherwise spread its softmax over all slots, future included.
    itself = jnp.arange(valid_keys.shape[1])[None, :] == start + jnp.arange(T)[:, None]  # [T, S]
    mask = sees | itself[None]  # [B, T, S]
    x = embed(tokens, positions, params["wte"], params["wpe"])  # [B, T, D]
    new_cache = []
    for block_params, layer_cache in zip(params["blocks"], cache):
        x, layer_cache = block(x, mask, layer_cache, start, **block_params, n_heads=cfg.n_heads)
        new_cache.append(layer_cache)
    hidden = layer_norm(x, **params["ln_f"])  # [B, T, D]
    return hidden @ params["wte"].T, hidden, new_cache  # logits [B, T, V]: the output embedding is wte


# ---------------------------------------------------------------- entry points


def check_shapes(tokens, valid, cfg: ModelConfig) -> None:
    """Shape and dtype checks; these work under jit because shapes and dtypes are static."""
    if tokens.ndim != 2:
        raise ValueError(f"tokens must be 2-D [batch, seq], got shape {tokens.shape}")
    if not jnp.issubdtype(tokens.dtype, jnp.integer):
        raise ValueError(f"tokens must be integer token ids, got dtype {tokens.dtype}")
    if tokens.shape[1] > cfg.max_len:
        raise ValueError(f"sequence length {tokens.shape[1]} exceeds ModelConfig.max_len={cfg.max_len}")
    if valid.shape != tokens.shape or valid.dtype != jnp.bool_:
        raise ValueError(f"valid must be a bool array shaped like tokens {tokens.shape}, "
                         f"got {valid.dtype} {valid.shape}")


def check_tokens(tokens, cfg: ModelConfig) -> None:
    """Raise if any id is outside [0, vocab_size). Needs concrete values, so call it outside jit.

    Inside jit nothing would complain: the lookup clamps ids >= vocab_size to the last row and
    wraps negative ids around, so the model would quietly read the wrong token.
    """
    ids = np.asarray(tokens)
    bad = ids[(ids < 0) | (ids >= cfg.vocab_size)]
    if bad.size:
        raise ValueError(f"token id {int(bad[0])} is out of range for vocab_size={cfg.vocab_size}")


@functools.cache
def param_shapes(cfg: ModelConfig) -> dict[str, tuple]:
    """{"blocks/0/attn/c_attn/w": shape, ...}: every parameter `init_params(key, cfg)` makes (shapes only, no compute)."""
    shapes = jax.eval_shape(lambda: init_params(jax.random.PRNGKey(0), cfg))
    return {_keypath(p): s.shape for p, s in jax.tree_util.tree_leaves_with_path(shapes)}


def _keypath(path) -> str:
    return "/".join(str(getattr(k, "key", getattr(k, "idx", k))) for k in path)


def _sizes(params: dict) -> dict[str, int]:
    """The ModelConfig sizes a transformer's params were made with, read off their shapes ({} if unreadable)."""
    try:
        vocab_size, d_model = np.shape(params["wte"])
        return {"vocab_size": vocab_size, "d_model": d_model, "max_len": np.shape(params["wpe"])[0],
                "n_layers": len(params["blocks"]), "d_mlp": np.shape(params["blocks"][0]["mlp"]["c_fc"]["w"])[-1]}
    except (KeyError, TypeError, ValueError, IndexError):
        return {}


def check_params(tree, cfg: ModelConfig, what: str = "params") -> None:
    """Raise unless every transformer in `tree` (each dict holding "wte") and every scalar head (a "head" entry)
    has exactly the parameters and shapes `cfg` implies.

    Call it on the host where a stage starts, not inside jit. Params of another config would otherwise fail
    deep inside a layer, or not at all: a smaller vocabulary makes the embedding lookup clamp the ids it lacks.
    """
    found = _check_tree(tree, cfg, what)
    if not found:
        raise ValueError(f"{what}: no transformer in them (no dict with a token embedding 'wte'): pass the model's params")


def _check_tree(tree, cfg: ModelConfig, what: str) -> int:
    """check_params on every transformer and head below `tree`; returns how many transformers it found."""
    if isinstance(tree, dict) and "wte" in tree:
        _check_transformer(tree, cfg, what)
        return 1
    head = tree.get("head") if isinstance(tree, dict) else None
    if isinstance(head, dict) and np.shape(head.get("w")) != (cfg.d_model,):  # a scalar head: [d_model] -> 1
        raise ValueError(f"{what}/head/w has shape {np.shape(head.get('w'))}, but d_model={cfg.d_model} implies "
                         f"({cfg.d_model},): the head belongs to a model of another width")
    items = tree.items() if isinstance(tree, dict) else enumerate(tree) if isinstance(tree, (list, tuple)) else ()
    return sum(_check_tree(v, cfg, f"{what}/{k}") for k, v in items)


def _check_transformer(params: dict, cfg: ModelConfig, what: str) -> None:
    want = param_shapes(cfg)
    got = {_keypath(p): np.shape(x) for p, x in jax.tree_util.tree_leaves_with_path(params)}
    differ = [k for k in want if got.get(k, want[k]) != want[k]]
    missing, extra = [k for k in want if k not in got], [k for k in got if k not in want]
    if not (differ or missing or extra):
        return
    mismatch = [f"{k}={v} (the config says {getattr(cfg, k)})" for k, v in _sizes(params).items()
                if v != getattr(cfg, k)]
    detail = (f"parameter {differ[0]} has shape {got[differ[0]]}, the config implies {want[differ[0]]}" if differ
              else f"missing {missing[:3]}" if missing else f"unexpected {extra[:3]}")
    made = f"; they were made with {', '.join(mismatch)}" if mismatch else ""
    raise ValueError(f"{what}: the params do not fit {cfg}: {detail}{made}. Pass the ModelConfig these params were made "
                     f"with, or params made for this config")


def empty_cache(cfg: ModelConfig, batch: int, cache_len: int) -> list[KVCache]:
    shape = (batch, cfg.n_heads, cache_len, cfg.d_model // cfg.n_heads)
    return [KVCache(jnp.zeros(shape), jnp.zeros(shape)) for _ in range(cfg.n_layers)]


class Forward(NamedTuple):
    """What `forward` returns; a tuple too, so `logits, hidden = forward(...)` reads both."""

    logits: Float[Array, "batch seq vocab"]  # position t predicts the token at t + 1
    hidden: Float[Array, "batch seq d_model"]  # after ln_f: what a scalar head (reward, value) reads


def forward(
    params: dict, tokens: Int[Array, "batch seq"], valid: Bool[Array, "batch seq"], cfg: ModelConfig
) -> Forward:
    """Logits and final hidden states (after ln_f) at every position."""
    check_shapes(tokens, valid, cfg)
    if not isinstance(tokens, jax.core.Tracer):  # concrete ids (called outside jit): cheap to check
        check_tokens(tokens, cfg)
    if not isinstance(jax.tree_util.tree_leaves(params)[0], jax.core.Tracer):
        check_params(params, cfg, "forward's params")
    logits, hidden, _ = transformer(params, tokens, valid, empty_cache(cfg, *tokens.shape), 0, cfg)
    return Forward(logits, hidden)


def prefill(
    params: dict, tokens: Int[Array, "batch seq"], valid: Bool[Array, "batch seq"], cfg: ModelConfig, cache_len: int
):
    """Forward over a prompt, keeping its keys/values in a cache of `cache_len` slots for decoding.

    Returns (logits [B, T, V], hidden [B, T, D], cache: a KVCache per layer with [B, H, cache_len, Dh]).
    """
    check_shapes(tokens, valid, cfg)
    if not tokens.shape[1] <= cache_len <= cfg.max_len:
        raise ValueError(f"cache_len={cache_len} must lie between the prompt length {tokens.shape[1]} "
                         f"and max_len={cfg.max_len}")
    valid_keys = jnp.pad(valid, ((0, 0), (0, cache_len - tokens.shape[1])))  # [B, S]: later slots not yet valid
    return transformer(params, tokens, valid_keys, empty_cache(cfg, tokens.shape[0], cache_len), 0, cfg)


def decode_step(
    params: dict,
    cache: list[KVCache],
    token: Int[Array, " batch"],
    step_index,
    valid_so_far: Bool[Array, "batch cache_len"],
    cfg: ModelConfig,
) -> tuple[Float[Array, "batch vocab"], Float[Array, "batch d_model"], list[KVCache]]:
    """Feed one token per row, sitting at slot `step_index`, and return the logits that predict the next one.

    `valid_so_far` marks the valid slots up to and including `step_index` (later slots are ignored).
    Equals `forward` on the whole sequence at position `step_index`, at the cost of one position.
    """
    logits, hidden, cache = transformer(params, token[:, None], valid_so_far, cache, step_index, cfg)
    return logits[:, 0], hidden[:, 0], cache
