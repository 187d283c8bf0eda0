"""Sampling whose log-prob is read from the top-k distribution (renormalised over k tokens), not the full one."""
import jax
import jax.numpy as jnp

from minirlhf.ops import NEG_INF

EXERCISE, HINT = "sample_token", "before top-k removes tokens"


def sample_token(logits, gumbel, sample_cfg):
    scaled = logits / sample_cfg.temperature
    if sample_cfg.top_k is not None:
        kth_best = jax.lax.top_k(scaled, sample_cfg.top_k)[0][:, -1:]
        scaled = jnp.where(scaled >= kth_best, scaled, NEG_INF)
    logprobs = jax.nn.log_softmax(scaled, axis=-1)  # after the filter: the mistake
    token = jnp.argmax(scaled + gumbel, axis=-1)
    return token, jnp.take_along_axis(logprobs, token[:, None], axis=-1)[:, 0]
