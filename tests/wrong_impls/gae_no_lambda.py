"""GAE without lambda in the trace: A_t = delta_t + gamma A_{t+1}."""
import jax.numpy as jnp

EXERCISE, HINT = "gae", "forgot lambda"


def gae(rewards, values, mask, gamma, lam):
    T = rewards.shape[1]
    next_value = next_adv = jnp.zeros(rewards.shape[0])
    advantages = []
    for t in reversed(range(T)):
        m = mask[:, t]
        delta = rewards[:, t] + gamma * next_value - values[:, t]
        adv = jnp.where(m, delta + gamma * next_adv, 0.0)
        next_value, next_adv = jnp.where(m, values[:, t], 0.0), adv
        advantages.insert(0, adv)
    advantages = jnp.stack(advantages, axis=1)
    return advantages, jnp.where(mask, advantages + values, 0.0)
