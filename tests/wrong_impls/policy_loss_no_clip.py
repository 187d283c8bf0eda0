"""The policy loss without the clip: plain importance-weighted policy gradient."""
import jax.numpy as jnp

from minirlhf.ops import masked_mean

EXERCISE, HINT = "policy_loss", "forgot the clip"


def policy_loss(logprobs, old_logprobs, advantages, mask, cliprange):
    log_ratio = logprobs - old_logprobs
    ratio = jnp.exp(log_ratio)
    clipped = -advantages * jnp.clip(ratio, 1 - cliprange, 1 + cliprange)
    loss = masked_mean(-advantages * ratio, mask)
    return loss, {"policy/approxkl": 0.5 * masked_mean(log_ratio**2, mask),
                  "policy/clipfrac": masked_mean(clipped > -advantages * ratio, mask),
                  "val/ratio": masked_mean(ratio, mask)}
