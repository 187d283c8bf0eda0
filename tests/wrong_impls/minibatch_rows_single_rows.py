"""Minibatches from a shuffle of single rows: with group_size > 1 a prompt's group is split across minibatches."""
import jax

EXERCISE, HINT = "minibatch_rows", "shuffle whole GROUPS"


def minibatch_rows(key, cfg):
    return jax.random.permutation(key, cfg.batch_size).reshape(cfg.minibatches, -1)
