"""Shaped rewards that add the KL penalty instead of subtracting it: every nat away from the reference earns."""
import jax
import jax.numpy as jnp

from minirlhf.ppo_losses import kl_estimate

EXERCISE, HINT = "kl_shaped_rewards", "wrong sign"


def kl_shaped_rewards(scores, logprobs, ref_logprobs, mask, beta, estimator="k1"):
    bonus = beta * kl_estimate(logprobs - ref_logprobs, estimator)  # should be -beta * kl
    last = mask.shape[1] - 1 - jnp.argmax(mask[:, ::-1], axis=1)  # each row's last real token
    return jnp.where(mask, bonus, 0.0) + scores[:, None] * jax.nn.one_hot(last, mask.shape[1])
