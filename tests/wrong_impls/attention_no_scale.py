"""Attention that forgets to divide the scores by sqrt(d_head)."""
import jax
import jax.numpy as jnp

from minirlhf.ops import NEG_INF

EXERCISE, HINT = "attention", "forgot to scale"


def attention(q, k, v, mask):
    scores = jnp.einsum("bhtd,bhsd->bhts", q, k)
    scores = jnp.where(mask[:, None], scores, NEG_INF)
    return jax.nn.softmax(scores, axis=-1) @ v
