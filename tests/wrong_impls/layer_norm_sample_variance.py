"""Layer norm with the unbiased (ddof=1) variance."""
import jax.numpy as jnp

EXERCISE, HINT = "layer_norm", "sample variance"


def layer_norm(x, g, b):
    mean = x.mean(axis=-1, keepdims=True)
    var = jnp.var(x, axis=-1, keepdims=True, ddof=1)
    return g * (x - mean) / jnp.sqrt(var + 1e-5) + b
