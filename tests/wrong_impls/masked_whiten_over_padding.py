"""Whitening whose mean and std include the padding."""
import jax.numpy as jnp

EXERCISE, HINT = "masked_whiten", "real tokens only"


def masked_whiten(x, mask, shift_mean=True):
    mean, var = jnp.mean(x), jnp.var(x)
    white = (x - mean) / jnp.sqrt(var + 1e-8)
    if not shift_mean:
        white = white + mean
    return jnp.where(mask, white, 0.0)
