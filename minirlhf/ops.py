"""Small shared operations: the logits/next-token shift, masked means, exact KL, a NumPy RNG from a key.

Every stage (pretraining, SFT, reward model, PPO, DPO) scores tokens the same way, so the
off-by-one between "logits at position t" and "the token at position t+1" lives here, once.

Layout used across minirlhf: a batch of sequences is `tokens: Int[B, T]` with a boolean
`valid: Bool[B, T]` that is False on padding. Per-token quantities (log-probs, KL, rewards,
values) are stored *aligned with the token they score*: `logprobs[b, t]` is
log p(tokens[b, t] | tokens[b, :t]). Position 0 has no context and gets 0.
"""
from __future__ import annotations

from typing import Callable

import jax
import jax.numpy as jnp
import numpy as np
from jaxtyping import Array, Bool, Float, Int

NEG_INF = -1e9  # a large finite negative: masked logits, without inf - inf = nan
SEED_RANGE = 2**31 - 1  # NumPy seeds are drawn from [0, SEED_RANGE)


def shift_to_next_token(read_out: Callable, *per_position: Array) -> Array:
    """The one shift: `read_out` applied to positions 0..T-2, each result moved to the token it predicts.

    A causal model at position t - 1 has read tokens[:t] and nothing more, so what it computes there
    (logits, a hidden state) belongs to the choice of tokens[t]. read_out maps [B, T-1, ...] arrays to a
    [B, T-1, ...] result; the result comes back as [B, T, ...], index 0 (no context) 0. Every per-token
    read-out (log-probs, exact KL, entropy, values) goes through here.
    """
    out = read_out(*(x[:, :-1] for x in per_position))  # [B, T-1, ...]
    return jnp.pad(out, [(0, 0), (1, 0)] + [(0, 0)] * (out.ndim - 2))  # [B, T, ...]


def token_logprobs(
    logits: Float[Array, "batch seq vocab"], tokens: Int[Array, "batch seq"], temperature: float = 1.0
) -> Float[Array, "batch seq"]:
    """log p(tokens[t] | tokens[:t]) aligned with `tokens`; position 0 gets 0.

    The logits at position t predict the token at t + 1, hence the shift by one.
    `temperature` divides the logits, as when sampling (PPO needs the same value in both places).
    """
    def pick(logits_before: Float[Array, "batch seq-1 vocab"]) -> Float[Array, "batch seq-1"]:
        logp = jax.nn.log_softmax(logits_before / temperature, axis=-1)
        return jnp.take_along_axis(logp, tokens[:, 1:, None], axis=-1)[..., 0]  # the token each one predicts

    return shift_to_next_token(pick, logits)  # [B, T]


def masked_sum(x: Float[Array, "..."], mask: Bool[Array, "..."], axis=None) -> Float[Array, "..."]:
    return jnp.sum(jnp.where(mask, x, 0.0), axis=axis)


def masked_mean(x: Float[Array, "..."], mask: Bool[Array, "..."], axis=None) -> Float[Array, "..."]:
    """Mean of x over the positions where mask is True (0 where nothing is masked in)."""
    count = jnp.sum(mask, axis=axis)
    return masked_sum(x, mask, axis) / jnp.maximum(count, 1)


def masked_whiten(x: Float[Array, "..."], mask: Bool[Array, "..."], shift_mean: bool = True) -> Float[Array, "..."]:
    """(x - mean) / sqrt(var + 1e-8), mean and var over the masked-in entries only; padding stays 0.

    shift_mean=False adds the mean back after scaling (only the spread is normalised).
    """
    mean = masked_mean(x, mask)
    var = masked_mean((x - mean) ** 2, mask)
    white = (x - mean) * jax.lax.rsqrt(var + 1e-8)
    if not shift_mean:
        white = white + mean
    return jnp.where(mask, white, 0.0)


def exact_kl(
    logits_p: Float[Array, "batch seq vocab"], logits_q: Float[Array, "batch seq vocab"], temperature: float = 1.0
) -> Float[Array, "batch seq"]:
    """KL(p || q) over the whole vocabulary at every position, aligned with the *next* token.

    KL_t = sum_v p(v) (log p(v) - log q(v)) for the distribution that produced token t,
    i.e. computed from the logits at t - 1 (position 0 gets 0), like `token_logprobs`.
    """
    def kl(p: Float[Array, "batch seq-1 vocab"], q: Float[Array, "batch seq-1 vocab"]) -> Float[Array, "batch seq-1"]:
        logp = jax.nn.log_softmax(p / temperature, axis=-1)
        logq = jax.nn.log_softmax(q / temperature, axis=-1)
        return jnp.sum(jnp.exp(logp) * (logp - logq), axis=-1)

    return shift_to_next_token(kl, logits_p, logits_q)  # [B, T]


def numpy_rng(key: jax.Array) -> np.random.Generator:
    """A NumPy generator seeded from a JAX key, for the draws a stage makes on the host (prompts, documents, labels).

    One key in, one seed out: the whole run still follows from its single JAX seed.
    """
    return np.random.default_rng(int(jax.random.randint(key, (), 0, SEED_RANGE)))
