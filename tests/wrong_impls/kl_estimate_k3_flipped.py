"""k3 computed with the log-ratio the wrong way round."""
import jax.numpy as jnp

EXERCISE, HINT = "kl_estimate", "other way round"


def kl_estimate(log_ratio, estimator):
    if estimator == "k1":
        return log_ratio
    if estimator == "k2":
        return 0.5 * log_ratio**2
    if estimator == "k3":
        return jnp.exp(log_ratio) - 1 - log_ratio
    raise ValueError(estimator)
