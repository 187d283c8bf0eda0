"""The clipped value loss without the 1/2 in front."""
import jax.numpy as jnp

from minirlhf.ops import masked_mean

EXERCISE, HINT = "value_loss", "forgot the 1/2"


def value_loss(values, old_values, returns, mask, cliprange_value):
    clipped = jnp.clip(values, old_values - cliprange_value, old_values + cliprange_value)
    unclipped_error, clipped_error = (values - returns) ** 2, (clipped - returns) ** 2
    loss = masked_mean(jnp.maximum(unclipped_error, clipped_error), mask)
    return loss, {"val/clipfrac": masked_mean(clipped_error > unclipped_error, mask)}
