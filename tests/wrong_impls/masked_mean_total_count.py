"""A masked mean that divides by the number of entries, padding included."""
import jax.numpy as jnp

EXERCISE, HINT = "masked_mean", "divided by the total number of entries"


def masked_mean(x, mask, axis=None):
    return jnp.mean(jnp.where(mask, x, 0.0), axis=axis)
