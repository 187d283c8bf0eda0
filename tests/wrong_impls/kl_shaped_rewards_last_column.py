"""Shaped rewards with the score always in the last column (padding, for rows that ended early)."""
from minirlhf.ppo_losses import kl_estimate

import jax.numpy as jnp

EXERCISE, HINT = "kl_shaped_rewards", "LAST REAL token"


def kl_shaped_rewards(scores, logprobs, ref_logprobs, mask, beta, estimator="k1"):
    rewards = jnp.where(mask, -beta * kl_estimate(logprobs - ref_logprobs, estimator), 0.0)
    return rewards.at[:, -1].add(scores)
