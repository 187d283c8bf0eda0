"""GAE whose recurrence runs straight through the padding (mask only applied at the end)."""
import jax.numpy as jnp

EXERCISE, HINT = "gae", "runs through the prompt and padding"


def gae(rewards, values, mask, gamma, lam):
    T = rewards.shape[1]
    next_value = next_adv = jnp.zeros(rewards.shape[0])
    advantages = []
    for t in reversed(range(T)):
        delta = rewards[:, t] + gamma * next_value - values[:, t]
        next_adv = delta + gamma * lam * next_adv
        next_value = values[:, t]
        advantages.insert(0, next_adv)
    advantages = jnp.stack(advantages, axis=1)
    return jnp.where(mask, advantages, 0.0), jnp.where(mask, advantages + values, 0.0)
