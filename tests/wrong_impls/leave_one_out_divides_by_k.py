import jax.numpy as jnp

EXERCISE = "leave_one_out_advantages"
HINT = "divide the others' sum by k - 1"


def leave_one_out_advantages(rewards):
    k = rewards.shape[1]
    return rewards - (jnp.sum(rewards, axis=1, keepdims=True) - rewards) / k
