"""Minibatches of whole groups, but a group's rows taken n_prompts apart instead of side by side."""
import jax
import jax.numpy as jnp

EXERCISE, HINT = "minibatch_rows", "a group's rows are consecutive"


def minibatch_rows(key, cfg):
    groups = jax.random.permutation(key, cfg.n_prompts).reshape(cfg.minibatches, -1)
    return (groups[:, :, None] + jnp.arange(cfg.group_size) * cfg.n_prompts).reshape(cfg.minibatches, -1)
