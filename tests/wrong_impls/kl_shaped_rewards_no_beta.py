"""Shaped rewards where every token pays the full KL (beta forgotten)."""
import jax
import jax.numpy as jnp

from minirlhf.ppo_losses import kl_estimate

EXERCISE, HINT = "kl_shaped_rewards", "forgot beta"


def kl_shaped_rewards(scores, logprobs, ref_logprobs, mask, beta, estimator="k1"):
    rewards = jnp.where(mask, -kl_estimate(logprobs - ref_logprobs, estimator), 0.0)
    last = mask.shape[1] - 1 - jnp.argmax(mask[:, ::-1], axis=1)
    return rewards + scores[:, None] * jax.nn.one_hot(last, mask.shape[1])
