"""The causal mask without the padding: queries may read padded slots."""
import jax.numpy as jnp

EXERCISE, HINT = "causal_valid", "forgot the padding"


def causal_valid(valid_keys, n_queries, start):
    slots = jnp.arange(valid_keys.shape[1])
    causal = slots[None, :] <= start + jnp.arange(n_queries)[:, None]
    return jnp.broadcast_to(causal[None], (valid_keys.shape[0], n_queries, valid_keys.shape[1]))
