"""Attention that masks with -inf: fine until a query may read no slot at all, then NaN."""
import math

import jax
import jax.numpy as jnp

EXERCISE, HINT = "attention", "NEG_INF"


def attention(q, k, v, mask):
    scores = jnp.einsum("bhtd,bhsd->bhts", q, k) / math.sqrt(q.shape[-1])
    scores = jnp.where(mask[:, None], scores, -jnp.inf)
    return jax.nn.softmax(scores, axis=-1) @ v
