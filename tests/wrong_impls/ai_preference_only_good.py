import jax
import jax.numpy as jnp

EXERCISE = "ai_preference"
HINT = "not log p(good) alone"


def ai_preference(logp_good_a, logp_bad_a, logp_good_b, logp_bad_b):
    return jax.nn.sigmoid(jnp.mean(logp_good_a - logp_good_b, axis=0))  # ignores the "bad" verdict
