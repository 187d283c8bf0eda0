"""Minibatches in batch order: every epoch sees the same minibatches in the same order."""
import jax.numpy as jnp

EXERCISE, HINT = "minibatch_rows", "the rows are not shuffled"


def minibatch_rows(key, cfg):
    return jnp.arange(cfg.batch_size).reshape(cfg.minibatches, -1)
