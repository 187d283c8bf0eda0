"""Hostile: an endless loop, the wrong dtype, sys.exit, and os._exit (kills the process)."""
import os
import sys

import jax.numpy as jnp


def token_logprobs(logits, tokens, temperature=1.0):
    while True:
        pass


def masked_mean(x, mask, axis=None):
    return jnp.sum(jnp.where(mask, x, 0), axis=axis).astype(jnp.int32)


def lm_loss(params, batch, cfg):
    sys.exit(3)


def sample_token(logits, gumbel, sample_cfg):
    os._exit(7)
