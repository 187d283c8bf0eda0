"""The LM loss averaged over every position, loss mask ignored."""
import jax.numpy as jnp

from minirlhf import transformer
from minirlhf.ops import token_logprobs

EXERCISE, HINT = "lm_loss", "forgot the loss mask"


def lm_loss(params, batch, cfg):
    logits, _ = transformer.forward(params, batch["tokens"], batch["valid"], cfg)
    nll = -jnp.mean(token_logprobs(logits, batch["tokens"]))
    return nll, {"perplexity": jnp.exp(nll)}
