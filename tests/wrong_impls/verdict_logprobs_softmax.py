"""The judge's verdict read as probabilities instead of log-probabilities."""
import jax

from minirlhf import transformer
from minirlhf.cai import BAD_ID, GOOD_ID

EXERCISE, HINT = "verdict_logprobs", "those are probabilities"


def verdict_logprobs(params, tokens, valid, cfg):
    logits, _ = transformer.forward(params, tokens, valid, cfg)
    logp = jax.nn.softmax(logits[:, -1], axis=-1)  # probabilities, not log-probabilities
    return logp[:, GOOD_ID], logp[:, BAD_ID]
