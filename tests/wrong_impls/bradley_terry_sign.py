"""Bradley-Terry with chosen and rejected swapped."""
import jax
import jax.numpy as jnp

EXERCISE, HINT = "bradley_terry", "sign is flipped"


def bradley_terry(r_chosen, r_rejected, centering=0.0):
    return -jnp.mean(jax.nn.log_sigmoid(r_rejected - r_chosen)) + centering * jnp.mean((r_chosen + r_rejected) ** 2)
