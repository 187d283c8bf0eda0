"""The judge's verdict read at the first slot, which is padding on a left-padded row."""
import jax

from minirlhf import transformer
from minirlhf.cai import BAD_ID, GOOD_ID

EXERCISE, HINT = "verdict_logprobs", "LEFT-padded"


def verdict_logprobs(params, tokens, valid, cfg):
    logits, _ = transformer.forward(params, tokens, valid, cfg)
    logp = jax.nn.log_softmax(logits[:, 0], axis=-1)  # the first slot: padding on most rows
    return logp[:, GOOD_ID], logp[:, BAD_ID]
