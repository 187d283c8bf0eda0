import jax
import jax.numpy as jnp

EXERCISE = "ai_preference"
HINT = "THEN apply the sigmoid"


def ai_preference(logp_good_a, logp_bad_a, logp_good_b, logp_bad_b):
    gap = (logp_good_a - logp_bad_a) - (logp_good_b - logp_bad_b)
    return jnp.mean(jax.nn.sigmoid(gap), axis=0)  # averages probabilities, not log-odds
